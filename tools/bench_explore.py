"""How `hyvl explore` copes with a large index: the server's time per request on N synthetic
Lorentz items (no model; the page itself draws at most 4000 points per view whatever N is).

    python tools/bench_explore.py --items 100000 --dim 512
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=100000)
    p.add_argument("--dim", type=int, default=512)
    p.add_argument("--texts", type=int, default=1000, help="how many of the items are texts")
    args = p.parse_args(argv)
    import torch

    from hyvl import lorentz
    from hyvl.explore import Explorer
    from hyvl.search.index import EmbeddingIndex

    g = torch.Generator().manual_seed(0)
    n, c = args.items, 0.9
    scale = torch.rand(n, 1, generator=g) * 1.5 + 0.2
    emb = lorentz.exp_map0(torch.randn(n, args.dim, generator=g) / args.dim**0.5 * scale, c)
    items = [{"kind": "text", "item": f"text {i}"} for i in range(args.texts)]
    items += [{"kind": "image", "item": f"img/{i}.jpg"} for i in range(n - args.texts)]
    index = EmbeddingIndex(emb, items, {"geometry": "lorentz", "curv": c, "embed_dim": args.dim})

    def timed(what, fn, repeat=3):
        fn()
        t = time.perf_counter()
        for _ in range(repeat):
            out = fn()
        ms = (time.perf_counter() - t) / repeat * 1000
        print(f"{what:<44} {ms:9.1f} ms")
        return out

    t = time.perf_counter()
    ex = Explorer(index, title="bench")
    print(
        f"{'open: layout of ' + str(n) + ' items':<44} {(time.perf_counter() - t) * 1000:9.1f} ms"
    )
    pts = timed("points, whole disk (4000 drawn)", lambda: ex.points((-1, -1, 1, 1), 4000))
    print(f"{'  its JSON':<44} {len(json.dumps(pts)) / 1e6:9.2f} MB")
    timed("points, zoomed box (4000 drawn)", lambda: ex.points((0.1, 0.1, 0.3, 0.3), 4000))
    timed("item: neighbours, cones both ways, walk", lambda: ex.item(12345 % n))
    x = emb[777 % n]
    timed(
        "query (embedding given): nearest, cone, walk",
        lambda: (ex._nearest(x, 10, "image"), ex._cone(x), ex._walk(x)),
    )
    t = time.perf_counter()
    ex.items_detail(list(range(256)), 6, 8)
    ms = (time.perf_counter() - t) * 1000
    print(f"{'export: the answers of 256 items':<44} {ms:9.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
