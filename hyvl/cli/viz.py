"""``hyvl viz norms | disk``: pictures of a Lorentz model's embeddings (PNG + JSON numbers)."""

from __future__ import annotations

from hyvl.cli.common import OutputFile, add_json_arg, print_table, write_json


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "viz",
        help="distance-to-origin histograms and Poincare-disk pictures",
        description="Embed a sample of (grounded) shards and draw them.",
    )
    sub = p.add_subparsers(dest="viz_cmd", required=True)
    for name, helptext in (
        ("norms", "histograms of distance to the origin per kind"),
        ("disk", "a 2-D Poincare-disk picture coloured by kind or class"),
    ):
        s = sub.add_parser(name, help=helptext)
        s.add_argument(
            "--checkpoint", required=True, help="export dir, training output dir, or .pth"
        )
        s.add_argument(
            "--data", required=True, help="shards (e.g. DEMO/val/*.tar), or a class folder"
        )
        s.add_argument("--out", required=True, action=OutputFile, help="PNG file")
        s.add_argument("--max-samples", type=int, default=512, help="samples read from --data")
        if name == "disk":
            s.add_argument(
                "--color-by",
                choices=["kind", "class"],
                default="kind",
                help="kind: images, texts, boxes from shards; class: --data is an image folder "
                "with one sub-folder per class (e.g. DEMO/zeroshot), class names drawn as stars",
            )
        add_json_arg(s)
        s.set_defaults(func=run, viz=name)


def run(args) -> int:
    import torch

    import hyvl
    from hyvl.geometry import require_single_space
    from hyvl.viz import embed_kinds, picture_title, plot_disk, plot_norms

    model, preprocess, tokenizer = hyvl.load(args.checkpoint)
    require_single_space(model, "hyvl viz (pictures of one hyperbolic plane)")
    title = picture_title(model, args.checkpoint)  # the model and curvature on every picture
    if getattr(args, "color_by", "kind") == "class":
        from hyvl.viz import embed_image_folder, plot_disk_classes

        images, labels, texts, names = embed_image_folder(
            model, preprocess, tokenizer, args.data, args.max_samples
        )
        stats = plot_disk_classes(images, labels, texts, names, model.curv.item(), args.out, title)
        rows = [
            {"class": name, **{k: x for k, x in v.items() if k not in ("colour", "marker")}}
            for name, v in stats["classes"].items()
        ]
        print_table(rows, title=f"disk by class: {args.out}")
        if args.json:
            write_json(args.json, stats)
        return 0
    with torch.no_grad():
        embs = embed_kinds(model, tokenizer, args.data, args.max_samples)
        curv = model.curv.float()
        stats = (plot_norms if args.viz == "norms" else plot_disk)(embs, curv, args.out, title)
    rows = [
        {"kind": k, **{m: v for m, v in stats[k].items() if not isinstance(v, list)}}
        for k in ("box_text", "text", "box_image", "image")
        if k in stats
    ]
    print_table(rows, title=f"{args.viz}: {args.out}")
    if args.json:
        write_json(args.json, stats)
    return 0
