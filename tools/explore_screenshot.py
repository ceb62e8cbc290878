"""A screenshot of `hyvl explore` in headless chromium: serve INDEX, type a query, open the
first result, save the page as a PNG (docs/img/explore.png is made this way).

    python tools/explore_screenshot.py --index runs/demo/demo-index --query "red circle" \
        --out docs/img/explore.png

Needs chromium (Debian: apt-get install chromium) and playwright (pip install playwright; the
browser itself is not downloaded: --chromium names the installed one).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--index", required=True)
    p.add_argument("--checkpoint")
    p.add_argument("--query", default="red circle")
    p.add_argument("--kind", default="auto", choices=["auto", "image", "text", "any"])
    p.add_argument("--colour", default="kind", choices=["kind", "class"])
    p.add_argument("--zoom", type=float, default=1.0, help="scale of the view (1: the whole disk)")
    p.add_argument("--out", required=True)
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--size", default="1280x800")
    args = p.parse_args(argv)
    from playwright.sync_api import sync_playwright

    from hyvl.explore import CHROMIUM_ARGS, open_explorer
    from hyvl.explore.server import Serving, make_app

    width, height = (int(v) for v in args.size.split("x"))
    explorer = open_explorer(args.index, args.checkpoint)
    with Serving(make_app(explorer)) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS
        )
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(url + "/")
        page.wait_for_selector("body[data-ready='1']")
        page.select_option("#colour", args.colour)
        page.select_option("#kind", args.kind)
        page.fill("#q", args.query)
        page.press("#q", "Enter")
        page.wait_for_selector("#results li")
        if args.zoom != 1.0:
            page.evaluate(f"window.hyvl.state.view.scale = {args.zoom}")
        first = page.evaluate("window.hyvl.state.query.results[0]")
        x, y = page.evaluate(f"window.hyvl.pagePoint({first['x']}, {first['y']})")
        page.mouse.click(x, y)  # the first result's panel: neighbours, cones, walk
        page.wait_for_selector("#item-title")
        page.mouse.move(width - 5, height - 5)
        page.wait_for_timeout(500)  # thumbnails
        page.screenshot(path=args.out)
        browser.close()
    print(f"screenshot: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
