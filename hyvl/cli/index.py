"""``hyvl index build``: embed images (folder or shards) and/or texts into an index directory."""

from __future__ import annotations

from hyvl.cli.common import OutputDir, add_json_arg, add_sharing_args


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "index",
        help="build an embedding index for retrieval",
        description="Build or extend an embedding index.",
    )
    sub = p.add_subparsers(dest="index_cmd", required=True)
    b = sub.add_parser("build", help="embed images and/or texts into INDEX")
    b.add_argument(
        "--checkpoint",
        required=True,
        help="export dir, training output dir, RUN/checkpoints/step_N, or MERU / HyCoCLIP .pth",
    )
    b.add_argument("--images", help="an image folder (searched recursively) or shards")
    b.add_argument("--texts", help="a text file, one text per line")
    b.add_argument("--out", required=True, action=OutputDir, help="index directory")
    b.add_argument("--append", action="store_true", help="add to an existing index at --out")
    b.add_argument("--overwrite", action="store_true", help="replace an existing index at --out")
    b.add_argument("--batch-size", type=int, default=64, help="images or texts per forward pass")
    b.add_argument(
        "--ann",
        choices=["hnsw", "ivf"],
        action="append",
        default=None,
        help="also build and save this approximate FAISS index (repeatable); `hyvl retrieve "
        "--backend hnsw|ivf` then loads it instead of rebuilding it",
    )
    add_json_arg(b)
    add_sharing_args(b)
    b.set_defaults(func=run_build)


def run_build(args) -> int:
    """Under torchrun the processes split the embedding; the first one writes the index."""
    from pathlib import Path

    from hyvl.cli.common import Processes, print_table, skipped_line, write_json
    from hyvl.errors import HyvlError
    from hyvl.io import check_out_dir
    from hyvl.search.index import EmbeddingIndex, build_index, is_index_dir

    # Checked before the (long) embedding: where the index goes, and the index appended to.
    if args.overwrite and args.append:
        raise HyvlError("--append and --overwrite: choose one")
    from hyvl.data.shards import check_source

    if args.images:
        check_source(args.images, "--images")  # a typo is not an empty index
    if args.texts and not Path(args.texts).is_file():
        raise HyvlError(f"--texts: no such file: {args.texts}")
    base = None
    if args.append and Path(args.out, "meta.json").is_file():
        base = EmbeddingIndex.load(args.out)
    else:
        check_out_dir(
            args.out, overwrite=args.overwrite, what="an index", ours=is_index_dir(args.out)
        )
    with Processes(args.device) as procs:
        new = build_index(
            args.checkpoint,
            args.images,
            args.texts,
            args.batch_size,
            device=procs.device,
            shard=procs.shard,
            workers=args.workers,
            precision=args.precision,
            append_to=base.meta if base is not None else None,
        )
    if not procs.shard.is_main:
        return 0
    skipped = new.skipped
    if base is not None:
        new = base.append(new)
    new.save(args.out)
    counts = {}
    for item in new.items:
        counts[item["kind"]] = counts.get(item["kind"], 0) + 1
    ann = [str(p) for backend in args.ann or [] for p in new.build_ann(backend)]
    rows = [{"kind": k, "items": v} for k, v in sorted(counts.items())]
    print_table(rows, title=f"index {args.out} ({new.geometry}, curv {new.curv})")
    print(skipped_line(skipped))
    for path in ann:
        print(f"ann: {path}")
    summary = {
        "index": str(args.out),
        "geometry": new.geometry,
        "curv": new.curv,
        "items": len(new),
        "counts": dict(sorted(counts.items())),
        "ann": ann,
        "skipped": skipped,
    }
    write_json(args.json, summary)
    return 0
