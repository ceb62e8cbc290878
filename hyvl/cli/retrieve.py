"""``hyvl retrieve``: text -> image, image -> text and image -> image search in an index."""

from __future__ import annotations

from hyvl.cli.common import add_json_arg, positive_int, print_table, write_json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "retrieve",
        help="search an index with a text or an image",
        description="Nearest items by Lorentz distance (cosine distance for CLIP). Backends: "
        "torch (exact), faiss (exact IndexFlatIP through the Lorentz inner-product reduction), "
        "hnsw / ivf (approximate, for large indexes).",
    )
    p.add_argument("--index", required=True, help="an index directory (hyvl index build)")
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--text", help="a query text")
    q.add_argument("--image", help="a query image file")
    p.add_argument(
        "--kind",
        choices=["image", "text"],
        help="what to return (default: images for --text, texts for --image)",
    )
    p.add_argument("-k", type=positive_int, default=5, help="how many results")
    p.add_argument(
        "--backend",
        default="torch",
        choices=["torch", "faiss", "hnsw", "ivf"],
        help="torch / faiss: exact; hnsw / ivf: approximate (FAISS), recall printed",
    )
    p.add_argument("--checkpoint", help="override the model recorded in the index")
    p.add_argument("--nprobe", type=int, help="ivf: lists searched (default max(8, nlist/3))")
    p.add_argument("--ef-search", type=int, help="hnsw: search breadth (default 64)")
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    from hyvl.errors import DataError
    from hyvl.images import BadImage, open_rgb
    from hyvl.search.index import EmbeddingIndex, load_index_model

    if args.text is not None and not args.text.strip():
        raise DataError("--text is empty: give the words to search for")
    index = EmbeddingIndex.load(args.index)
    model, preprocess, tokenizer = load_index_model(index, args.checkpoint)
    with torch.no_grad():
        if args.text is not None:
            query = model.encode_text(tokenizer([args.text]))
            kind = args.kind or "image"
        else:
            try:
                image = open_rgb(args.image)
            except BadImage as err:  # one query image: nothing to skip to
                raise DataError(f"{err} ({err.reason})") from err
            query = model.encode_image(preprocess(image).unsqueeze(0))
            kind = args.kind or "text"
    options = {}
    if args.backend == "ivf":
        options["nprobe"] = args.nprobe
    if args.backend == "hnsw":
        options["ef_search"] = args.ef_search
    hits = index.search(query, args.k, kind=kind, backend=args.backend, **options)[0]
    results = [{"rank": h["rank"], "item": h["item"], "distance": h["distance"]} for h in hits]
    # shard items are keys: show their captions too (the JSON keeps its three fields: rank,
    # item, distance); 4 significant digits: neighbours often differ only in the third
    shown = [
        {
            **r,
            "distance": f"{r['distance']:.4g}",
            **({"caption": h["caption"]} if "caption" in h else {}),
        }
        for r, h in zip(results, hits, strict=True)
    ]
    print_table(shown, title=f"{kind}s nearest to {args.text or args.image!r} ({args.backend})")
    out = {"results": results}
    if args.backend in ("hnsw", "ivf"):
        recall, n = index.approximate_recall(args.k, kind=kind, backend=args.backend, **options)
        print(f"{args.backend}: recall@{args.k} vs exact on {n} sampled queries: {recall:.3f}")
        out["recall_vs_exact"] = {"k": args.k, "recall": recall, "queries": n}
    if args.json:
        write_json(args.json, out)
    return 0
