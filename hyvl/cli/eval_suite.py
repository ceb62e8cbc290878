"""``hyvl eval suite`` and ``hyvl eval linprobe``: the papers' evaluation over a dataset root."""

from __future__ import annotations

import os
from pathlib import Path

from hyvl.cli.common import (
    Processes,
    add_json_arg,
    add_sharing_args,
    print_table,
    skipped_line,
    write_json,
)
from hyvl.errors import DataError


class _Session(Processes):
    """The checkpoint loaded in this process's share of the work (see :class:`Processes`)."""

    def __init__(self, args):
        import hyvl

        super().__init__(args.device)
        self.model, self.preprocess, self.tokenizer = hyvl.load(args.checkpoint, device=self.device)


def _default_cache() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return str(Path(base) / "hyvl" / "prototypes")


def _root_args(p, what: str) -> None:
    p.add_argument(
        "--checkpoint",
        help="export dir, training output dir, RUN/checkpoints/step_N, or MERU / HyCoCLIP .pth",
    )
    p.add_argument("--root", help=f"folder holding one sub-folder per dataset ({what})")
    p.add_argument("--datasets", help="comma-separated names (default: every one found)")
    p.add_argument(
        "--max-per-class", type=int, default=None, help="only the first N images of each class"
    )
    p.add_argument("--batch-size", type=int, default=64, help="images or texts per forward pass")
    add_sharing_args(p)
    add_json_arg(p)


def add_parsers(sub) -> None:
    s = sub.add_parser(
        "suite",
        help="zero-shot on the 20 datasets of MERU / HyCoCLIP, retrieval, hierarchy",
        description="Finds each dataset under ROOT/NAME/ (torchvision on-disk layout, never "
        "downloaded; webdataset shards with 'cls'; or an ImageFolder whose sorted class folders "
        "are the label order), evaluates what it finds and lists what it did not. Extra "
        "ImageFolders under ROOT with a classnames.txt become extra rows.",
    )
    _root_args(s, "see --list")
    s.add_argument("--list", action="store_true", help="list the datasets and exit")
    s.add_argument("--markdown", metavar="FILE", help="also write the table as markdown")
    for opt, what in (("--classnames", "class names"), ("--prompts", "prompt templates")):
        s.add_argument(
            opt,
            action="append",
            metavar="NAME=FILE|DIR",
            help=f"{what} for a dataset (NAME=FILE, one per line) or a directory of NAME.txt "
            "files; repeatable",
        )
    s.add_argument(
        "--compare-size",
        choices=["vit_s", "vit_b", "vit_l"],
        help="published numbers of this model size (default: the checkpoint's)",
    )
    s.add_argument("--cache-dir", default=_default_cache(), help="class prototype cache")
    s.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    s.set_defaults(func=run_suite)

    lp = sub.add_parser(
        "linprobe",
        help="logistic regression on frozen image features (MERU's linear probe)",
        description="Same dataset discovery as 'suite', with the train split (ROOT/NAME/train/ "
        "for ImageFolders and shards) besides the test split. The cost C is searched on the "
        "validation split (or 20%% of train held out) as CLIP / MERU do, then the classifier "
        "is refit on train + val and scored on test (mean per-class accuracy).",
    )
    _root_args(lp, "as for 'suite'")
    lp.set_defaults(func=run_linprobe)

    sc = sub.add_parser(
        "sugarcrepe",
        help="SugarCrepe: the true caption over a hard negative, 7 subsets",
        description="ROOT: the folder of SugarCrepe's released JSON files (add_att, add_obj, "
        "replace_att, replace_obj, replace_rel, swap_att, swap_obj; or a clone of its "
        "repository, with them under data/). The COCO val2017 images are found in ROOT/val2017, "
        "ROOT/images/val2017, ROOT/images or ../coco/val2017 beside ROOT, or given with "
        "--images. Accuracy: the share of pairs where the image scores higher with the true "
        "caption; mean: pooled over all pairs. Never downloads.",
    )
    sc.add_argument("--checkpoint", required=True, help="as for 'suite'")
    sc.add_argument("--root", required=True, help="the SugarCrepe folder (see above)")
    sc.add_argument("--images", help="the COCO val2017 image folder (default: found under ROOT)")
    sc.add_argument("--subsets", help="comma-separated subset names (default: all 7)")
    sc.add_argument(
        "--score",
        choices=["similarity", "cone"],
        default="similarity",
        help="similarity: the model's own (-distance, or cosine for CLIP); cone: how far inside "
        "the caption's entailment cone the image lies (hyperbolic models)",
    )
    sc.add_argument("--batch-size", type=int, default=64, help="images or texts per forward pass")
    add_sharing_args(sc)
    add_json_arg(sc)
    sc.set_defaults(func=run_sugarcrepe)


def _overrides(values: list[str] | None) -> dict[str, str]:
    out = {}
    for v in values or []:
        name, sep, path = v.partition("=")
        if sep:
            if not Path(path).is_file():
                raise DataError(f"{path}: no such file (given for {name})")
            out[name] = path
        elif Path(v).is_dir():
            out["*"] = v
        else:
            raise DataError(f"{v}: expected NAME=FILE or a directory of NAME.txt files")
    return out


def _need(args) -> None:
    for opt in ("checkpoint", "root"):
        if not getattr(args, opt):
            raise DataError(f"--{opt} is required (unless --list)")
    if not Path(args.root).is_dir():
        raise DataError(f"{args.root}: no such directory")


def _names(args) -> list[str] | None:
    return [n.strip() for n in args.datasets.split(",") if n.strip()] if args.datasets else None


def _report_skipped(res: dict) -> None:
    """``skipped: 3 (corrupt_image 3)`` and, when any, which datasets they came from."""
    print(skipped_line(res["skipped"]))
    for kind in ("datasets", "retrieval"):
        for name, r in res.get(kind, {}).items():
            if r.get("skipped"):
                print(f"  {name}: {skipped_line(r['skipped']).removeprefix('skipped: ')}")


def _report_missing(missing: dict) -> None:
    if missing:
        width = max(map(len, missing))
        print("not evaluated:")
        for name, why in missing.items():
            print(f"  {name.ljust(width)}  {why}")


def run_suite(args) -> int:
    from hyvl.evaluation import catalog

    if args.list:
        rows = catalog.listing()
        print_table([{**r, "layouts": ", ".join(r["layouts"])} for r in rows], title="suite")
        listing = {"datasets": rows, "retrieval": catalog.retrieval_listing()}
        write_json(args.json, {**listing, "compositional": catalog.compositional_listing()})
        return 0
    _need(args)
    from hyvl.evaluation.suite import footnotes, markdown, run_suite, table_rows

    with _Session(args) as s:
        res = run_suite(
            s.model,
            s.preprocess,
            s.tokenizer,
            args.root,
            datasets=_names(args),
            classnames=_overrides(args.classnames),
            prompts=_overrides(args.prompts),
            max_per_class=args.max_per_class,
            compare_size=args.compare_size,
            cache_dir=None if args.no_cache else args.cache_dir,
            batch_size=args.batch_size,
            shard=s.shard,
            workers=args.workers,
            precision=args.precision,
            log=print if s.shard.is_main else (lambda *a: None),
        )
        if not s.shard.is_main:
            return 0
    res["checkpoint"] = str(args.checkpoint)
    size = res["compare_size"]
    pub = f"published: ViT size {size}" if size else "published: none (--compare-size to pick)"
    print_table(table_rows(res), title=f"suite: {args.root} ({pub})")
    for line in footnotes(res):
        print(line)
    _report_skipped(res)
    _report_missing(res["missing"])
    write_json(args.json, res)
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(markdown(res))
    return 0


def run_linprobe(args) -> int:
    _need(args)
    from hyvl.evaluation.linprobe import run_linprobe

    with _Session(args) as s:
        res = run_linprobe(
            s.model,
            s.preprocess,
            s.tokenizer,
            args.root,
            datasets=_names(args),
            max_per_class=args.max_per_class,
            batch_size=args.batch_size,
            shard=s.shard,
            workers=args.workers,
            precision=args.precision,
        )
        if not s.shard.is_main:
            return 0
    rows = [
        {
            "dataset": n,
            "metric": r["metric"],
            "value": r["value"],
            "C": r["C"],
            "train": r["num_train"],
            "test": r["num_test"],
        }
        for n, r in res["datasets"].items()
    ]
    print_table(rows, title=f"linear probe: {args.root}")
    _report_skipped(res)
    _report_missing(res["missing"])
    write_json(args.json, res)
    return 0


def run_sugarcrepe(args) -> int:
    from hyvl.evaluation.sugarcrepe import evaluate_sugarcrepe, find_layout, table_rows

    where = find_layout(args.root, args.images)  # before the model is loaded
    if isinstance(where, str):
        raise DataError(where)
    subsets = [n.strip() for n in args.subsets.split(",") if n.strip()] if args.subsets else None
    with _Session(args) as s:
        res = evaluate_sugarcrepe(
            s.model,
            s.preprocess,
            s.tokenizer,
            args.root,
            images=args.images,
            subsets=subsets,
            score=args.score,
            batch_size=args.batch_size,
            shard=s.shard,
            workers=args.workers,
            precision=args.precision,
        )
        if not s.shard.is_main:
            return 0
    print_table(table_rows(res), title=f"SugarCrepe: {args.root} (score: {res['score']})")
    print(skipped_line(res["skipped"]))
    _report_missing(res["missing"])
    write_json(args.json, res)
    return 0
