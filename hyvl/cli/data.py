"""``hyvl data demo | stats | make-shards``."""

from __future__ import annotations

import argparse

from hyvl.cli.common import OutputDir, add_json_arg, print_table, write_json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "data",
        help="make and inspect webdataset shards",
        description="Make and inspect webdataset shards.",
    )
    sub = p.add_subparsers(dest="data_cmd", required=True)

    d = sub.add_parser(
        "demo",
        help="write a built-in demo dataset (coloured shapes, or real scans and textures)",
    )
    d.add_argument("--out", required=True, action=OutputDir, help="output directory")
    d.add_argument(
        "--kind",
        default="shapes",
        choices=["shapes", "real"],
        help="shapes: generated coloured shapes; real: handwritten-digit scans and "
        "texture photographs shipped with scikit-learn / scikit-image (pip install 'hyvl[real]')",
    )
    d.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty directory that holds other things than demo data",
    )
    d.add_argument("--seed", type=int, default=0, help="seed of the scene generator")
    d.add_argument("--train-samples", type=int, default=4000, help="training scenes to write")
    _add_world_args(d)
    d.set_defaults(func=run_demo)

    s = sub.add_parser("stats", help="count samples, boxes and skipped samples in shards")
    s.add_argument("shards", nargs="+", help="shard specs: paths, globs, {000..009} braces, pipe:")
    s.add_argument(
        "--layout",
        default="auto",
        choices=["auto", "plain", "grit", "hycoclip", "grounded"],
        help="sample layout (auto: detected per sample)",
    )
    s.add_argument("--min-box-size", type=int, default=0, help="drop boxes smaller than N px")
    add_json_arg(s)
    s.set_defaults(func=run_stats)

    m = sub.add_parser(
        "make-shards",
        help="write shards from an image folder + captions, COCO captions or a grounded JSONL",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Sources (exactly one):\n"
            "  --images DIR --captions FILE.jsonl|FILE.csv   ({image, caption[, cls]})\n"
            "  --coco CAPTIONS.json --images DIR             (COCO captions format)\n"
            "  --grounded FILE.jsonl [--images DIR]          ({image, caption, boxes:[{bbox, text}]})"
        ),
    )
    m.add_argument("--images", help="image root directory")
    src = m.add_mutually_exclusive_group(required=True)
    src.add_argument("--captions", help="JSONL or CSV of {image, caption[, cls]} under --images")
    src.add_argument("--coco", help="a COCO captions JSON (images under --images)")
    src.add_argument("--grounded", help="JSONL of {image, caption, boxes: [{bbox, text}]}")
    m.add_argument("--out", required=True, action=OutputDir, help="output directory")
    m.add_argument("--prefix", default="shard", help="shard file names: PREFIX-000000.tar")
    m.add_argument("--samples-per-shard", type=int, default=1000, help="samples per tar")
    m.add_argument("--workers", type=int, default=1, help="processes writing shards in parallel")
    m.add_argument("--resize", type=int, default=None, help="shrink so the shorter side is <= N")
    add_json_arg(m)
    m.set_defaults(func=run_make_shards)


def _span(text: str) -> tuple[int, int]:
    """``"22-30"`` or ``"3"`` -> (low, high)."""
    low, _, high = text.partition("-")
    try:
        return int(low), int(high or low)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected N or LOW-HIGH") from None


WORLD_ARGS = ("objects_from", "background", "object_size", "objects", "wording")


def _add_world_args(d) -> None:
    from hyvl.data import real

    g = d.add_argument_group(
        "real-image worlds (--kind real)",
        "A named world, optionally changed by the options after it (each defaults to the "
        "world's own value; the default world 'real' is "
        f"{real.REAL.describe()}). Worlds: "
        + "; ".join(f"{name}: {w.changes()}" for name, w in real.WORLDS.items() if name != "real")
        + ".",
    )
    g.add_argument(
        "--world", default="real", choices=list(real.WORLDS), help="the world to start from"
    )
    g.add_argument(
        "--objects-from",
        metavar="SOURCES",
        type=lambda text: tuple(s for s in text.split(",") if s),
        help=f"comma-separated object sources: {', '.join(real.SOURCES)} (digits: scikit-learn's "
        "digit scans; textures: brick/grass/gravel photographs; photos: LFW faces and coins of "
        "skimage.data) (default: the world's)",
    )
    own = "(default: the world's)"
    g.add_argument("--background", choices=real.BACKGROUNDS, help=f"the canvas {own}")
    g.add_argument(
        "--object-size", metavar="LOW-HIGH", type=_span, help=f"box side in pixels {own}"
    )
    g.add_argument("--objects", metavar="LOW-HIGH", type=_span, help=f"objects per scene {own}")
    g.add_argument("--wording", choices=list(real.WORDINGS), help=f"caption style {own}")


def run_demo(args) -> int:
    from hyvl.data.demo import make_demo
    from hyvl.data.real import get_world, make_real_demo
    from hyvl.data.writer import write_demo
    from hyvl.errors import ConfigError

    kwargs = {}
    changed = [a for a in WORLD_ARGS if getattr(args, a) is not None]
    if args.kind == "real":
        world = get_world(
            args.world,
            sources=args.objects_from,
            background=args.background,
            object_size=args.object_size,
            objects=args.objects,
            wording=args.wording,
        )
        kwargs["world"] = world
        print(f"world: {world.describe()}")
    elif changed or args.world != "real":
        names = ["--" + a.replace("_", "-") for a in changed] or ["--world"]
        raise ConfigError(f"{', '.join(names)}: only for --kind real")
    make = make_real_demo if args.kind == "real" else make_demo
    out = write_demo(
        make,
        args.out,
        overwrite=args.overwrite,
        seed=args.seed,
        train_samples=args.train_samples,
        progress=True,
        **kwargs,
    )
    print(f"demo data written to {out}")
    return 0


def run_stats(args) -> int:
    from hyvl.data.stats import shard_stats

    stats = shard_stats(args.shards, layout=args.layout, min_box_size=args.min_box_size)
    rows = [{"what": k, "count": stats[k]} for k in ("shards", "samples", "with_boxes", "boxes")]
    rows += [{"what": f"skipped: {k}", "count": v} for k, v in sorted(stats["skipped"].items())]
    rows += [
        {"what": f"dropped box: {k}", "count": v} for k, v in sorted(stats["dropped_boxes"].items())
    ]
    print_table(rows, title="shard statistics")
    if args.json:
        write_json(args.json, stats)
    return 0


def run_make_shards(args) -> int:
    from hyvl.data import writer
    from hyvl.errors import DataError

    if args.captions:
        if not args.images:
            raise DataError("--captions needs --images DIR (the image root)")
        records = writer.records_from_captions(args.images, args.captions)
    elif args.coco:
        if not args.images:
            raise DataError("--coco needs --images DIR (the image root)")
        records = writer.records_from_coco(args.coco, args.images)
    else:
        records = writer.records_from_grounded(args.grounded, args.images)
    manifest = writer.write_shards(
        records,
        args.out,
        prefix=args.prefix,
        samples_per_shard=args.samples_per_shard,
        workers=args.workers,
        resize=args.resize,
    )
    rows = [
        {"shard": s["shard"], "samples": s["samples"], "MB": s["bytes"] / 1e6}
        for s in manifest["shards"]
    ]
    print_table(rows, title=f"{manifest['samples']} samples written to {args.out}")
    for reason, n in sorted(manifest["skipped"].items()):
        print(f"skipped {n} record(s): {reason}")
    for reason, n in sorted(manifest["dropped_boxes"].items()):
        print(f"dropped {n} box(es): {reason}")
    if args.json:
        write_json(args.json, manifest)
    return 0
