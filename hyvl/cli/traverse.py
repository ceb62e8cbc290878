"""``hyvl traverse``: walk from an image toward the origin (or another image) and read texts."""

from __future__ import annotations

from hyvl.cli.common import add_json_arg, print_table, write_json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "traverse",
        help="image -> origin traversal retrieving ever more generic texts",
        description="MERU's traversal: interpolate from the image's embedding to the origin in "
        "the tangent space at the origin and, at each step, keep the nearest text whose "
        "entailment cone contains the point. With --to-image, interpolate between two images "
        "(both ends log-mapped).",
    )
    p.add_argument("--image", required=True, help="the image to start from")
    p.add_argument("--to-image", help="interpolate toward this image instead of the origin")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--texts", help="a text file, one candidate text per line")
    src.add_argument("--index", help="an index whose texts are the candidates")
    p.add_argument("--checkpoint", help="required with --texts; defaults to the index's model")
    p.add_argument("--steps", type=int, default=20, help="interpolation points, both ends included")
    p.add_argument("--no-entailment", action="store_true", help="plain nearest text per step")
    add_json_arg(p)
    p.set_defaults(func=run)


def run(args) -> int:
    import torch

    import hyvl
    from hyvl.errors import DataError, HyvlError
    from hyvl.evaluation.embed import embed_texts
    from hyvl.geometry import require_distance_score, require_single_space
    from hyvl.images import BadImage, open_rgb
    from hyvl.search.index import read_texts
    from hyvl.search.traverse import tangent_path, traverse

    WHAT = "hyvl traverse (geodesics of one hyperboloid)"  # noqa: N806

    if args.index:
        from hyvl.search.index import EmbeddingIndex, load_index_model

        index = EmbeddingIndex.load(args.index)
        model, preprocess, tokenizer = load_index_model(index, args.checkpoint)
        require_single_space(model, WHAT)
        require_distance_score(model, WHAT)
        rows = index.rows("text")
        texts = [index.items[i]["item"] for i in rows.tolist()]
        text_emb = index.embeddings[rows]
    else:
        if not args.checkpoint:
            raise HyvlError("--texts needs --checkpoint")
        model, preprocess, tokenizer = hyvl.load(args.checkpoint)
        require_single_space(model, WHAT)
        require_distance_score(model, WHAT)
        texts = read_texts(args.texts)
        text_emb = embed_texts(model, tokenizer, texts)
    if not model.space.hyperbolic:
        raise HyvlError("traversals need a Lorentz model (MERU / HyCoCLIP)")

    if not texts:
        raise DataError("no candidate texts")

    def embed(path):
        try:
            image = open_rgb(path)
        except BadImage as err:
            raise DataError(f"{err} ({err.reason})") from err
        return model.encode_image(preprocess(image).unsqueeze(0))[0]

    with torch.no_grad():
        start = embed(args.image)
        end = embed(args.to_image) if args.to_image else None
        curv = model.curv.float()
        points = tangent_path(start, end, args.steps, curv)
        steps = traverse(points, text_emb, curv, require_entailment=not args.no_entailment)
    rows = []
    last = None
    for s in steps:
        text = None if s["text"] is None else texts[s["text"]]
        rows.append(
            {
                "step": s["step"],
                "dist0": s["dist0"],
                "text": text or "-",
                "distance": s["distance"] if s["distance"] is not None else "-",
                "new": "*" if text and text != last else "",
            }
        )
        last = text or last
    print_table(rows, title=f"traversal from {args.image} to {args.to_image or 'the origin'}")
    if args.json:
        write_json(
            args.json,
            {
                "steps": [
                    {**s, "text": None if s["text"] is None else texts[s["text"]]} for s in steps
                ]
            },
        )
    return 0
