"""``hyvl explore``: a local page over an index (the Poincare disk, search, cones, walks)."""

from __future__ import annotations

from hyvl.cli.common import OutputDir, positive_int


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "explore",
        help="a local web page over an index: the Poincare disk, search, cones, walks",
        description="Serve a page over an index built by `hyvl index build`: its items on the "
        "Poincare disk (rings of constant distance to the origin), thumbnails and labels, a "
        "query box (a text, or an image) with the nearest items, the walk to the origin and the "
        "items inside the query's cone; click an item for its neighbours, ancestors and "
        "descendants by cone. With --export, write a self-contained DIR/index.html instead "
        "(no server, opens offline).",
    )
    p.add_argument("--index", required=True, help="an index directory (hyvl index build)")
    p.add_argument(
        "--checkpoint",
        help="the model that embeds typed texts and uploaded images (default: the index's)",
    )
    p.add_argument("--port", type=int, default=8765, help="the local port to serve on")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    p.add_argument(
        "--export",
        metavar="DIR",
        action=OutputDir,
        help="write DIR/index.html (the page with its answers inside) and exit",
    )
    p.add_argument(
        "--export-points",
        type=positive_int,
        default=2000,
        help="--export: how many items the page holds (texts first, then a random sample)",
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from hyvl.explore import open_explorer

    explorer = open_explorer(args.index, args.checkpoint)
    if args.export:
        path = explorer.export(args.export, max_points=args.export_points)
        print(f"explorer page: {path} ({min(args.export_points, len(explorer.items))} of "
              f"{len(explorer.items)} items; open it in a browser, no server needed)")  # fmt: skip
        return 0
    try:
        import uvicorn

        from hyvl.explore.server import make_app
    except ImportError as err:
        from hyvl.errors import HyvlError

        raise HyvlError(
            f"hyvl explore needs {err.name}: pip install 'hyvl[explore]' (starlette, uvicorn)"
        ) from err
    app = make_app(explorer)
    print(
        f"hyvl explore: http://{args.host}:{args.port}/ ({len(explorer.items)} items; Ctrl-C stops)"
    )
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
