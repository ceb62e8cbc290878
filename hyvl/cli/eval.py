"""``hyvl eval zeroshot | retrieval | hierarchy | isa2tsv`` (``suite`` and ``linprobe``: eval_suite)."""

from __future__ import annotations

import sys

from hyvl.cli.common import (
    OutputFile,
    Processes,
    add_json_arg,
    add_sharing_args,
    print_table,
    skipped_line,
    write_json,
)


def _common(p) -> None:
    p.add_argument(
        "--checkpoint",
        required=True,
        help="export dir, training output dir, RUN/checkpoints/step_N, or MERU / HyCoCLIP .pth",
    )
    p.add_argument("--data", required=True, help="the evaluation data (D below)")
    p.add_argument("--batch-size", type=int, default=64, help="images or texts per forward pass")
    add_sharing_args(p)
    add_json_arg(p)


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="zero-shot, retrieval and hierarchy evaluation",
        description="Evaluate a checkpoint.",
    )
    sub = p.add_subparsers(dest="eval_cmd", required=True)

    z = sub.add_parser(
        "zeroshot",
        help="zero-shot classification (top-1, top-5, mean per class)",
        description="D: an ImageFolder dir (classnames.txt / templates.txt beside "
        "it are used), shards with 'cls', or torchvision:NAME:ROOT[:SPLIT] (already on disk; default: the test split).",
    )
    _common(z)
    z.add_argument("--classnames", help="file with one class name per line (label order)")
    z.add_argument("--templates", help="file with one template per line, or 'imagenet' / 'simple'")
    z.add_argument(
        "--hierarchy",
        metavar="FILE",
        help="parent<TAB>child edges over the class names (default: hierarchy.tsv in or beside "
        "an image folder, as the demo worlds ship it): adds top-1 per family, a class's "
        "ancestor directly below the root. A family is reported at chance when its top-1 is "
        "not above 1/(its classes) at the 5%% level of a one-sided binomial test",
    )
    z.set_defaults(func=run_zeroshot)

    r = sub.add_parser(
        "retrieval",
        help="image <-> text Recall@1/5/10",
        description="D: a COCO captions JSON (images under --image-root, default "
        "images/ beside it) or shards (one caption per image).",
    )
    _common(r)
    r.add_argument(
        "--image-root", help="folder of the COCO JSON's images (default: images/ beside it)"
    )
    r.set_defaults(func=run_retrieval)

    h = sub.add_parser("hierarchy", help="TIE, LCA, Jaccard, hierarchical precision / recall")
    _common(h)
    h.add_argument("--hierarchy", required=True, help="parent<TAB>child edges over class names")
    h.add_argument("--classnames", help="file with one class name per line (label order)")
    h.add_argument("--templates", help="file with one template per line, or 'imagenet' / 'simple'")
    h.add_argument(
        "--leaf-excluded",
        action="store_true",
        help="HyCoCLIP's published variant (ancestor sets without the class itself)",
    )
    h.set_defaults(func=run_hierarchy)

    c = sub.add_parser(
        "isa2tsv", help="convert a WordNet-style is-a list to parent<TAB>child names"
    )
    c.add_argument("isa", help="lines 'parent_id child_id'")
    c.add_argument("--words", help="lines 'id<TAB>name, synonyms' (ImageNet words.txt)")
    c.add_argument(
        "--out", required=True, action=OutputFile, help="the parent<TAB>child TSV to write"
    )
    c.set_defaults(func=run_isa2tsv)

    from hyvl.cli import eval_suite

    eval_suite.add_parsers(sub)


class _Session(Processes):
    """The model in this process's share of the work (see :class:`Processes`)."""

    def __init__(self, args):
        import hyvl

        super().__init__(args.device)
        self.model, self.preprocess, self.tokenizer = hyvl.load(args.checkpoint, device=self.device)


def _evaluate(args, evaluate, *data, **kwargs) -> tuple[dict, bool]:
    """``evaluate(model, preprocess, tokenizer, *data, **kwargs)`` in a _Session ->
    (results, whether this process reports them)."""
    from hyvl.data.shards import check_source

    check_source(args.data, "--data")  # before the model is loaded
    with _Session(args) as s:
        res = evaluate(
            s.model,
            s.preprocess,
            s.tokenizer,
            *data,
            batch_size=args.batch_size,
            shard=s.shard,
            workers=args.workers,
            precision=args.precision,
            **kwargs,
        )
        return res, s.shard.is_main


def _report(args, main: bool, rows, title: str, res: dict) -> int:
    if main:
        print_table(rows, title=title)
        print(skipped_line(res.get("skipped")))
        if args.json:
            write_json(args.json, res)
    return 0


def _metric_rows(res: dict) -> list[dict]:
    return [{"metric": k, "value": v} for k, v in res.items() if not isinstance(v, (dict, list))]


def run_zeroshot(args) -> int:
    from pathlib import Path

    from hyvl.errors import DataError
    from hyvl.evaluation.zeroshot import chance_warnings, evaluate_zeroshot

    if args.hierarchy and not Path(args.hierarchy).is_file():  # before the model is loaded
        raise DataError(f"--hierarchy {args.hierarchy}: no such file")
    res, main = _evaluate(
        args,
        evaluate_zeroshot,
        args.data,
        classnames=args.classnames,
        templates=args.templates,
        hierarchy=args.hierarchy,
    )
    if main:
        for line in chance_warnings(res):
            print(line, file=sys.stderr)
    rows = [r for r in _metric_rows(res) if r["metric"] != "hierarchy"]
    if main:
        print_table(rows, title=f"zero-shot: {args.data}")
        for table, title in breakdown_tables(res):
            print()
            print_table(table, title=title)
        print(skipped_line(res.get("skipped")))
        if args.json:
            write_json(args.json, res)
    return 0


# More classes than this: the per-class table shows the lowest ones (all are in --json).
MAX_CLASS_ROWS = 50


def breakdown_tables(res: dict) -> list[tuple[list[dict], str]]:
    """(rows, title) of the per-family table (with a hierarchy) and the per-class one."""
    tables = []
    if res.get("per_family"):
        stats = res["family_stats"]
        rows = [
            {
                "family": family,
                "top1 %": top1,
                "chance %": stats[family]["chance"],
                "classes": stats[family]["num_classes"],
                "images": stats[family]["num_samples"],
                "at chance": "yes" if stats[family]["at_chance"] else "",
            }
            for family, top1 in res["per_family"].items()
        ]
        tables.append((rows, f"zero-shot per family (hierarchy: {res.get('hierarchy')})"))
    per_class = list(res.get("per_class", {}).items())
    title = "zero-shot per class"
    if len(per_class) > MAX_CLASS_ROWS:
        per_class = sorted(per_class, key=lambda kv: kv[1])[:MAX_CLASS_ROWS]
        title += f": the {MAX_CLASS_ROWS} lowest of {len(res['per_class'])} (all in --json)"
    if per_class:
        tables.append(([{"class": c, "top1 %": v} for c, v in per_class], title))
    return tables


def run_retrieval(args) -> int:
    from hyvl.evaluation.retrieval import evaluate_retrieval

    res, main = _evaluate(args, evaluate_retrieval, args.data, args.image_root)
    rows = [
        {"direction": d.replace("_", " "), **res[d]} for d in ("image_to_text", "text_to_image")
    ]
    title = f"retrieval: {res['num_images']} images, {res['num_texts']} texts"
    dup = res.get("duplicate_captions")
    if main and dup and dup["queries"]:
        title += (
            f"; {dup['queries']} captions also belong to another image, so text->image R@1 "
            f"cannot exceed {dup['text_to_image_R@1_ceiling']:.1f}%"
        )
    return _report(args, main, rows, title, res)


def run_hierarchy(args) -> int:
    from hyvl.evaluation.hierarchy import evaluate_hierarchy

    res, main = _evaluate(
        args,
        evaluate_hierarchy,
        args.data,
        args.hierarchy,
        leaf_included=not args.leaf_excluded,
        classnames=args.classnames,
        templates=args.templates,
    )
    return _report(args, main, _metric_rows(res), "hierarchy metrics", res)


def run_isa2tsv(args) -> int:
    from pathlib import Path

    from hyvl.evaluation.hierarchy import convert_isa

    edges = convert_isa(args.isa, args.words)
    Path(args.out).write_text("".join(f"{p}\t{c}\n" for p, c in edges))
    print(f"{len(edges)} edges written to {args.out}")
    return 0
