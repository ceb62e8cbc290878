"""Do walks to the origin read more generic texts? Measured on demo-world checkpoints.

    python tools/traverse_generality.py --data runs/demo/data runs/demo/hycoclip runs/demo/meru
    python tools/traverse_generality.py ... --images 100 --steps 10 --json generality.json

For each of the first N retrieval images, MERU's traversal (``hyvl traverse``: interpolate to
the origin in the tangent space, keep the nearest text whose entailment cone holds the point)
over the hierarchy's node texts ("shape", "polygon", "triangle", "red triangle", ...). Depth is
the node's distance from the root (0 = "shape", 3 = "red circle"). Reports how many walks never
move to a deeper (more specific) text, and the mean depth of the first and last text met.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hyvl  # noqa: E402
from hyvl.cli.common import print_table, write_json  # noqa: E402
from hyvl.evaluation.retrieval import load_coco  # noqa: E402
from hyvl.search.traverse import tangent_path, traverse  # noqa: E402


def node_depths(hierarchy: Path) -> dict[str, int]:
    edges = [line.split("\t") for line in hierarchy.read_text().splitlines() if line.strip()]
    parent = {child: p for p, child in edges}

    def depth(n: str) -> int:
        return 0 if n not in parent else 1 + depth(parent[n])

    return {n: depth(n) for n in sorted({n for e in edges for n in e})}


@torch.no_grad()
def measure(checkpoint: str, data: Path, images: int, steps: int) -> dict:
    model, preprocess, tokenizer = hyvl.load(checkpoint)
    if model.geometry != "lorentz":
        raise SystemExit(f"{checkpoint}: traversals need a Lorentz model (MERU / HyCoCLIP)")
    depths = node_depths(data / "hierarchy.tsv")
    nodes = list(depths)
    texts = model.encode_text(tokenizer(nodes))
    paths, _, _ = load_coco(data / "retrieval" / "captions.json")
    walks, monotone, first, last = 0, 0, [], []
    for path in paths[:images]:
        with Image.open(path) as im:
            x = model.encode_image(preprocess(im.convert("RGB"))[None])[0]
        walk = traverse(tangent_path(x, None, steps, model.curv), texts, model.curv)
        chosen = [depths[nodes[s["text"]]] for s in walk if s["text"] is not None]
        walks += 1
        monotone += all(a >= b for a, b in zip(chosen, chosen[1:], strict=False))
        if chosen:
            first.append(chosen[0])
            last.append(chosen[-1])
    return {
        "checkpoint": checkpoint,
        "walks": walks,
        "met_a_text": len(first),
        "never_more_specific": monotone,
        "first_depth": sum(first) / max(1, len(first)),
        "last_depth": sum(last) / max(1, len(last)),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("checkpoints", nargs="+")
    p.add_argument("--data", type=Path, required=True, help="a demo world (hyvl data demo)")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--json")
    args = p.parse_args()
    rows = [measure(c, args.data, args.images, args.steps) for c in args.checkpoints]
    print_table(rows, title=f"walks to the origin, first {args.images} retrieval images")
    write_json(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
