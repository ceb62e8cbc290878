"""What does a model match grounded scenes by: how many objects a caption names, or which?

    python tools/count_probe.py RUN_OR_EXPORT runs/sweep/data/digits [--json probe.json]

For each scene of a real-pixel world's val shard (``hyvl data demo --kind real``: every scene
has a caption naming its objects and a box per object), the caption ranked first among the
shard's captions (image -> text retrieval, the model's own similarity) is compared with the
scene's own: ``same_count`` is the share of scenes whose retrieved caption names as many
objects as the scene holds, ``objects_named`` the mean share of the scene's objects that it
names. Each comes with its chance value (a caption drawn at random from the shard). A model
that learned the number of objects and not what they are scores ``same_count`` near 100%
and ``objects_named`` near its chance (docs/learning.md, "Small objects").
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import tarfile
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def read_val(data: Path) -> tuple[list, list[str], list[tuple[str, ...]]]:
    """(PIL images, captions, sorted box texts) of the world's val shards."""
    from PIL import Image

    images, captions, objects = [], [], []
    for shard in sorted((data / "val").glob("*.tar")):
        with tarfile.open(shard) as tar:
            members = {m.name: m for m in tar.getmembers()}
            for name in sorted(n for n in members if n.endswith(".json")):
                meta = json.loads(tar.extractfile(members[name]).read())
                jpg = tar.extractfile(members[name[: -len(".json")] + ".jpg"]).read()
                images.append(Image.open(io.BytesIO(jpg)).convert("RGB"))
                captions.append(meta["caption"])
                objects.append(tuple(sorted(b["text"] for b in meta["boxes"])))
    if not images:
        raise SystemExit(f"count_probe: error: {data / 'val'}: no val shards with scenes")
    return images, captions, objects


def named_share(scene: tuple[str, ...], caption: tuple[str, ...]) -> float:
    return sum(o in caption for o in scene) / len(scene)


def probe(model, preprocess, tokenizer, data: Path) -> dict:
    import torch

    from hyvl.evaluation.embed import embed_texts, similarity

    images, captions, objects = read_val(data)
    model.eval()
    with torch.no_grad():
        feats = torch.cat(
            [
                model.encode_image(torch.stack([preprocess(im) for im in images[i : i + 64]]))
                for i in range(0, len(images), 64)
            ]
        ).float()
    top = similarity(model, feats, embed_texts(model, tokenizer, captions)).argmax(1).tolist()
    n = len(top)
    counts = Counter(len(o) for o in objects)
    return {
        "scenes": n,
        "same_count": 100.0
        * sum(len(objects[i]) == len(objects[j]) for i, j in enumerate(top))
        / n,
        "same_count_chance": 100.0 * sum((v / n) ** 2 for v in counts.values()),
        "objects_named": 100.0
        * sum(named_share(objects[i], objects[j]) for i, j in enumerate(top))
        / n,
        "objects_named_chance": 100.0
        * sum(named_share(a, b) for a in objects for b in objects)
        / (n * n),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run", help="a run folder or export (hyvl.load)")
    p.add_argument("data", type=Path, help="a real-pixel world (hyvl data demo --kind real)")
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)
    import hyvl
    from hyvl.cli.common import print_table, write_json

    result = probe(*hyvl.load(args.run), args.data)
    print_table(
        [
            {
                "measure": "retrieved caption names as many objects %",
                "value": result["same_count"],
                "chance %": result["same_count_chance"],
            },
            {
                "measure": "share of the scene's objects it names %",
                "value": result["objects_named"],
                "chance %": result["objects_named_chance"],
            },
        ],
        title=f"{args.run} on {args.data / 'val'} ({result['scenes']} scenes)",
    )
    write_json(args.json, {"run": args.run, "data": str(args.data), **result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
