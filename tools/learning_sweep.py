"""Do the tiny recipes learn every family of every real-pixel world? A learning sweep.

    python tools/learning_sweep.py                        # the default worlds, all six recipes
    python tools/learning_sweep.py --worlds digits,dark --models hycoclip --seeds 0,1
    python tools/learning_sweep.py --quick                # a smoke run of seconds
    python tools/learning_sweep.py --json sweep.json      # {"worlds": {W: {M: {...}}}}

For each world (``hyvl data demo --kind real --world NAME``: :data:`hyvl.data.real.WORLDS`)
and each packaged tiny recipe (``clip_tiny``, ``meru_tiny``, ``hycoclip_tiny``, ``uncha_tiny``,
``atmg_tiny``, ``phyclip_tiny``, ``clip_tiny_grounded``, ``meru_tiny_grounded``: :data:`RECIPES`,
or those ``--models`` names),
trains through ``hyvl train``'s own path (:func:`hyvl.train.loop.train`) at the recipe's own
budget (or ``--steps``), evaluates zero-shot on the world's held-out images and prints, per
world and model, the accuracy of each family of the world's hierarchy (the share of that
family's images classified as their class among all the world's classes) as a multiple of
chance (1 / number of classes), the classes it predicts at all, and the run's health report.
Families below ``--min-x`` (3x chance) are named after the table, and so are those that
``hyvl eval zeroshot`` finds at chance among their own classes.

Everything goes under ``--out`` (default ``runs/sweep``): ``data/WORLD`` (the world, made once),
``runs/WORLD/MODEL-sSEED-HASH`` (the run, its ``metrics.jsonl`` and export) with
``sweep.json`` (its result). HASH names the run's configuration (every key the recipe and the sweep set to other than
hyvl's default, and the world), so a rerun reuses the runs it has and trains only what changed:
a new recipe, world, step count or seed is a new run beside the old one.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hyvl.cli.common import print_table, write_json  # noqa: E402
from hyvl.data import real  # noqa: E402
from hyvl.errors import HyvlError  # noqa: E402
from hyvl.evaluation.zeroshot import few_classes  # noqa: E402
from hyvl.train.preempt import Interrupted  # noqa: E402

# sweep name -> packaged recipe; the grounded ones add the box crop <-> box text pair
RECIPES = {
    "clip": "clip_tiny",
    "meru": "meru_tiny",
    "hycoclip": "hycoclip_tiny",
    "uncha": "uncha_tiny",
    "atmg": "atmg_tiny",
    "phyclip": "phyclip_tiny",
    "clip_grounded": "clip_tiny_grounded",
    "meru_grounded": "meru_tiny_grounded",
}
MODELS = tuple(RECIPES)
# The default worlds: the real-image demo and one change of it each, in the order they run.
DEFAULT_WORLDS = ("real", "digits", "mixed", "dark", "noisy", "large", "single", "wording")
# The world's size: the real-image demo's for a sweep, a few images for --quick.
FULL = {
    "train_samples": 4000,
    "val_samples": 256,
    "zeroshot_per_class": 20,
    "retrieval_images": 200,
}
QUICK = {"train_samples": 16, "val_samples": 2, "zeroshot_per_class": 1, "retrieval_images": 2}
QUICK_STEPS, QUICK_BATCH = 2, 4


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument(
        "--worlds",
        default=",".join(DEFAULT_WORLDS),
        help=f"comma-separated world names, of: {', '.join(real.WORLDS)}",
    )
    p.add_argument("--models", default=",".join(MODELS), help="comma-separated tiny recipes")
    p.add_argument(
        "--steps", type=int, default=0, help="training steps per run (0: the recipe's own)"
    )
    p.add_argument("--batch-size", type=int, default=0, help="0: the recipe's own")
    p.add_argument("--seeds", default="0", help="comma-separated training seeds")
    p.add_argument("--data-seed", type=int, default=0, help="seed of the worlds' scenes")
    p.add_argument("--out", default="runs/sweep", help="data, runs and results go here")
    p.add_argument("--min-x", type=float, default=3.0, help="name families below this x chance")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"smoke run: {QUICK_STEPS} steps of batch {QUICK_BATCH} on worlds of "
        f"{QUICK['train_samples']} scenes (numbers mean nothing)",
    )
    p.add_argument(
        "--no-train",
        action="store_true",
        help="train nothing: the table of the runs finished under --out, the others 'not run'",
    )
    p.add_argument("--json", metavar="FILE", default=None, help="also write the results here")
    args = p.parse_args(argv)
    args.worlds = [w for w in args.worlds.split(",") if w]
    args.models = [m for m in args.models.split(",") if m]
    for name in args.worlds:
        real.get_world(name)  # an unknown name: ConfigError listing the worlds
    bad = [m for m in args.models if m not in MODELS]
    if bad or not args.models:
        p.error(f"--models {','.join(bad) or '(none)'}: choose from {', '.join(MODELS)}")
    try:
        args.seeds = [int(s) for s in args.seeds.split(",") if s]
    except ValueError:
        p.error(f"--seeds {args.seeds!r}: comma-separated integers")
    if args.quick:
        args.steps, args.batch_size = args.steps or QUICK_STEPS, args.batch_size or QUICK_BATCH
    return args


def world_data(out: Path, name: str, seed: int, sizes: dict) -> Path:
    """The world ``name`` under ``out/data``, written unless it is there with these settings."""
    from hyvl.data.writer import write_demo

    world = real.get_world(name)
    stamp = {"world": dataclasses.asdict(world), "seed": seed, **sizes}
    data = out / "data" / name
    marker = data / "world.json"
    if marker.is_file() and json.loads(marker.read_text()) == json.loads(json.dumps(stamp)):
        return data
    write_demo(real.make_real_demo, data, seed=seed, world=world, **sizes)
    marker.write_text(json.dumps(stamp, indent=2) + "\n")
    return data


def run_config(model: str, data: Path, *, steps: int, batch_size: int, seed: int):
    """The packaged recipe of ``model`` (:data:`RECIPES`) on ``data``: its own steps and batch unless given
    (warm-ups keep their share of the run), evaluated by the sweep after training."""
    from hyvl.config import RunConfig, from_dict, load_run_config, to_dict

    recipe = to_dict(load_run_config(RECIPES[model]))
    train = recipe["train"]
    own = train["max_steps"]
    steps = steps or own
    objective = recipe["objective"]
    if steps != own:
        train["warmup_steps"] = max(1, round(train["warmup_steps"] * steps / own))
        if "entail_warmup_steps" in objective:
            objective["entail_warmup_steps"] = round(objective["entail_warmup_steps"] * steps / own)
    recipe["data"]["train_shards"] = str(data / "train" / "*.tar")
    train.update(
        max_steps=steps,
        batch_size=batch_size or train["batch_size"],
        checkpoint_every=steps,
        keep_last=1,
        log_every=min(train["log_every"], max(1, steps // 10)),
        eval_every=0,
        seed=seed,
    )
    recipe["eval"].update(zeroshot="", retrieval="")
    return from_dict(RunConfig, recipe), recipe


def set_keys(recipe: dict) -> dict:
    """The run's configuration where it differs from hyvl's defaults (dotted keys): what names a
    run, so a hyvl that adds a key with a default does not make every run new."""
    from hyvl.config import RunConfig, to_dict
    from hyvl.train.rundir import flat

    default = flat(to_dict(RunConfig()))
    return {k: v for k, v in flat(recipe).items() if k not in default or default[k] != v}


def run_one(
    world_name: str, model: str, seed: int, data: Path, out: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Train and evaluate one (world, model, seed) or reuse its earlier result."""
    import hyvl
    from hyvl.evaluation.zeroshot import evaluate_zeroshot
    from hyvl.train.loop import train

    cfg, recipe = run_config(model, data, steps=args.steps, batch_size=args.batch_size, seed=seed)
    world = real.get_world(world_name)
    key = json.dumps(
        {"recipe": set_keys(recipe), "world": dataclasses.asdict(world)}, sort_keys=True
    )
    run_dir = (
        out
        / "runs"
        / world_name
        / f"{model}-s{seed}-{hashlib.sha256(key.encode()).hexdigest()[:8]}"
    )
    result_file = run_dir / "sweep.json"
    if result_file.is_file():
        return {**json.loads(result_file.read_text()), "reused": True}
    result: dict[str, Any] = {"seed": seed, "run": str(run_dir), "steps": cfg.train.max_steps}
    if args.no_train:
        return {**result, "health": "not run", "problems": ["not run"]}
    started = time.perf_counter()
    try:
        summary = train(cfg, run_dir)
    except (HyvlError, RuntimeError, FloatingPointError) as err:  # a failed run, not the sweep
        result.update(health=f"failed: {str(err).splitlines()[0]}", problems=["failed"])
        return result  # not saved: a rerun tries again
    last = summary["last"]
    model_, preprocess, tokenizer = hyvl.load(run_dir)
    # the world's hierarchy.tsv beside its zero-shot folder gives the families
    zs = evaluate_zeroshot(model_, preprocess, tokenizer, data / "zeroshot")
    chance = 100.0 / zs["num_classes"]
    result.update(
        top1=round(zs["top1"], 2),
        chance=round(chance, 4),
        num_predicted_classes=zs["num_predicted_classes"],
        per_class={c: round(v, 2) for c, v in zs["per_class"].items()},
        per_family={f: round(v, 2) for f, v in zs["per_family"].items()},
        families_at_chance=zs["families_at_chance"],
        health=summary["health"],
        problems=[] if last.get("health", "ok") == "ok" else last["health"].split(", "),
        loss_over_ln_b=last.get("loss_over_ln_b"),
        seconds=round(time.perf_counter() - started, 1),
    )
    write_json(result_file, result)
    return result


def combine(runs: list[dict]) -> dict[str, Any]:
    """One world x model entry from its seeds' runs: means over the seeds that trained."""
    done = [r for r in runs if "per_family" in r]
    entry: dict[str, Any] = {"seeds": [r["seed"] for r in runs], "runs": runs}
    health = sorted({r["health"] for r in runs})
    entry["health"] = health[0] if len(health) == 1 else " | ".join(health)
    entry["problems"] = sorted({p for r in runs for p in r["problems"]})
    # at chance within the family (hyvl eval zeroshot's binomial test) in any seed
    entry["families_at_chance"] = sorted({f for r in runs for f in r.get("families_at_chance", [])})
    if not done:
        entry["per_family"] = {}
        return entry
    chance = done[0]["chance"]
    families = list(done[0]["per_family"])
    entry["per_family"] = {
        f: round(sum(r["per_family"][f] for r in done) / len(done), 2) for f in families
    }
    entry["per_family_x_chance"] = {f: round(v / chance, 2) for f, v in entry["per_family"].items()}
    entry["per_class"] = {
        c: round(sum(r["per_class"][c] or 0 for r in done) / len(done), 2)
        for c in done[0]["per_class"]
    }
    entry["top1"] = round(sum(r["top1"] for r in done) / len(done), 2)
    entry["chance"] = chance
    entry["x_chance"] = round(entry["top1"] / chance, 2)
    # 1 = one answer for every image, whatever the health report says
    entry["num_predicted_classes"] = min(r["num_predicted_classes"] for r in done)
    entry["num_classes"] = len(entry["per_class"])
    # the health check of hyvl train's periodic evaluation, on the sweep's own evaluation
    if (
        any(few_classes({"num_classes": entry["num_classes"], **r}) for r in done)
        and "few_classes" not in entry["problems"]
    ):
        entry["problems"] = sorted([*entry["problems"], "few_classes"])
    return entry


def table(results: dict[str, dict]) -> list[dict[str, Any]]:
    families = list(
        dict.fromkeys(f for w in results.values() for m in w.values() for f in m["per_family"])
    )
    rows = []
    for world, models in results.items():
        for model, entry in models.items():
            row: dict[str, Any] = {"world": world, "model": model}
            if "top1" in entry:
                row["top1 % (x chance)"] = f"{entry['top1']:.1f} ({entry['x_chance']:.1f}x)"
            else:
                row["top1 % (x chance)"] = "-"
            for f in families:
                value = entry["per_family"].get(f)
                row[f] = (
                    "-"
                    if value is None
                    else f"{value:.1f} ({entry['per_family_x_chance'][f]:.1f}x)"
                )
            row["classes predicted"] = (
                f"{entry['num_predicted_classes']}/{entry['num_classes']}"
                if "top1" in entry
                else "-"
            )
            row["health"] = ", ".join(entry["problems"]) or "ok"
            rows.append(row)
    return rows


def below(results: dict[str, dict], min_x: float) -> list[str]:
    return [
        f"{world} / {model} / {family}: {entry['per_family'][family]:.1f}% = {x:.2f}x chance"
        for world, models in results.items()
        for model, entry in models.items()
        for family, x in entry.get("per_family_x_chance", {}).items()
        if x < min_x
    ]


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except HyvlError as err:
        print(f"learning_sweep: error: {err}", file=sys.stderr)
        return 2
    from hyvl.progress import progress_bar

    out = Path(args.out)
    sizes = QUICK if args.quick else FULL
    jobs = [(w, m, s) for w in args.worlds for m in args.models for s in args.seeds]
    runs: dict[tuple[str, str], list[dict]] = {}
    failed = []
    with progress_bar(total=len(jobs), desc="sweep runs", unit="run") as bar:
        for world, model, seed in jobs:
            bar.set_postfix_str(f"{world} / {model} / seed {seed}")
            try:
                data = (
                    out / "data" / world
                    if args.no_train
                    else world_data(out, world, args.data_seed, sizes)
                )
            except HyvlError as err:
                print(f"learning_sweep: error: {err}", file=sys.stderr)
                return 2
            try:
                result = run_one(world, model, seed, data, out, args)
            except Interrupted as stop:  # SIGTERM / SIGUSR1 / Ctrl-C: hyvl train checkpointed
                print(f"learning_sweep: {stop}", file=sys.stderr)
                print(
                    "learning_sweep: the same command continues: finished runs are reused, the "
                    "interrupted one resumes from its checkpoint",
                    file=sys.stderr,
                )
                return stop.exit_code
            runs.setdefault((world, model), []).append(result)
            if result["problems"] and result["health"] != "not run":
                failed.append(f"{world} / {model} / seed {seed}: {result['health']}")
            bar.update(1)
    results: dict[str, dict] = {}
    for (world, model), group in runs.items():
        results.setdefault(world, {})[model] = combine(group)

    steps = args.steps or "the recipe's own"
    print_table(
        table(results),
        title=f"learning sweep: zero-shot top-1 on held-out images per family, % (x chance); "
        f"steps: {steps}; seeds: {','.join(map(str, args.seeds))}",
        align="left",
    )
    for line in failed:
        print(f"unhealthy or failed: {line}")
    missing = sum(r["health"] == "not run" for group in runs.values() for r in group)
    if missing:
        print(
            f"not run: {missing} of {len(jobs)} runs (the same command without --no-train trains them)"
        )
    within = [
        f"{world} / {model} / {family}"
        for world, models in results.items()
        for model, entry in models.items()
        for family in entry["families_at_chance"]
    ]
    if within:
        print(
            "at chance inside the family (hyvl eval zeroshot's binomial test): " + ", ".join(within)
        )
    low = below(results, args.min_x)
    if low:
        print(f"below {args.min_x:g}x chance:")
        for line in low:
            print(f"  {line}")
    elif missing < len(jobs):
        print(f"every family of the runs above is at {args.min_x:g}x chance or more")
    if args.json:
        write_json(
            args.json,
            {
                "worlds": results,
                "steps": args.steps or None,
                "seeds": args.seeds,
                "min_x_chance": args.min_x,
                "below": low,
            },
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
