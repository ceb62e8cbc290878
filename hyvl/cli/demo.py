"""`hyvl demo --out DIR [--model hycoclip|meru|clip|all] [--overwrite | --allow-config-change]
[--json F]`."""

from __future__ import annotations

import argparse
import sys

from hyvl.cli.common import OutputDir, add_json_arg, print_table, write_json

# Budget on 2 CPU cores (measured, see README): each model trains in well under 5 minutes,
# and `--model all` (three models, same budget) fits in about 10 minutes with evaluation.
DEFAULT_STEPS = 300
DEFAULT_BATCH = 64


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "demo",
        help="train tiny models on generated demo data and compare them (2 CPU cores, minutes)",
        description="Generate the demo data (if missing), train a tiny model on CPU, evaluate zero-shot "
        "classification and retrieval, and report the mean distance to the origin of box texts, texts, "
        "box images and images. DIR receives data/, one training output dir per model (loadable with "
        "hyvl.load), and demo.png.",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        action=OutputDir,
        help="output directory (demo data go to DIR/data)",
    )
    p.add_argument(
        "--model",
        default="hycoclip",
        choices=["hycoclip", "meru", "clip", "all"],
        help="which model",
    )
    p.add_argument(
        "--all",
        dest="model",
        action="store_const",
        const="all",
        help="train all three side by side with the same budget (same as --model all)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_STEPS,
        help="training steps per model",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH,
        help="batch size",
    )
    p.add_argument(
        "--data",
        default="shapes",
        choices=["shapes", "real"],
        help="shapes: generated coloured shapes; real: scanned handwritten digits and "
        "texture photographs shipped with scikit-learn / scikit-image (pip install 'hyvl[real]')",
    )
    p.add_argument("--seed", type=int, default=0, help="seed for data generation and training")
    # The trainer's two escape hatches (hyvl train --overwrite, train.allow_config_change=true)
    # for DIR/MODEL holding an earlier demo run with other --steps / --batch-size / --seed.
    again = p.add_mutually_exclusive_group()
    again.add_argument(
        "--overwrite",
        action="store_true",
        help="train every model from scratch: an earlier run in DIR/MODEL is kept as "
        "DIR/MODEL.replaced-N (nothing is deleted)",
    )
    again.add_argument(
        "--allow-config-change",
        action="store_true",
        help="continue earlier runs in DIR/MODEL with the new settings (recorded in their "
        "metrics.jsonl) instead of refusing them",
    )
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hyvl.errors import ConfigError
    from hyvl.train.demo import KINDS, family_rows, plot, public_json, run_demo, table_rows

    if args.steps <= 0 or args.batch_size <= 0:
        raise ConfigError("--steps and --batch-size must be positive")
    models = list(KINDS) if args.model == "all" else [args.model]
    out = Path(args.out)
    results = run_demo(
        out,
        models,
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        data=args.data,
        overwrite=args.overwrite,
        allow_config_change=args.allow_config_change,
    )
    print_table(
        table_rows(results),
        title=f"hyvl demo ({args.data}): {args.steps} steps x batch {args.batch_size} per model "
        "(d0 = mean distance to the origin; retrieval R@1 in %)",
    )
    families = family_rows(results)
    if families:
        print()
        print_table(families, title="zero-shot top-1 % per family (chance: 100 / its classes)")
    figure = plot(results, out / "demo.png")
    from hyvl.evaluation.zeroshot import chance_warnings

    for kind in models:
        for line in chance_warnings(results[kind]["zeroshot"]):
            print(f"{kind}: {line}", file=sys.stderr)
        print(
            f"{kind}: checkpoint {out / kind} (hyvl.load('{out / kind}')); {results[kind]['health']}"
        )
    if figure is not None:
        print(f"plot: {figure}")
    write_json(args.json, public_json(results))
    if args.json:
        print(f"results: {args.json}", file=sys.stderr)
    return 0
