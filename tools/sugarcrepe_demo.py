"""A SugarCrepe-layout folder from the demo world, to run ``hyvl eval sugarcrepe`` on a demo model.

    python tools/sugarcrepe_demo.py --out runs/sugarcrepe_demo --images 200 --seed 1000
    hyvl eval sugarcrepe --checkpoint runs/demo/hycoclip --root runs/sugarcrepe_demo

SugarCrepe's released layout (github.com/RAIVNLab/sugar-crepe, ``data/``): one JSON file per
subset, ``{id: {"filename", "caption", "negative_caption"}}``, over a folder of images (COCO
val2017 there, ``val2017/`` here). Each demo scene (hyvl.data.demo.make_scene: 1 or 2 coloured
shapes, its true caption as the demo world writes it) gets one hand-made hard negative per
subset: replace_obj / replace_att change the first object's shape / colour, replace_rel turns
"and" into "inside", swap_obj / swap_att exchange the two objects' shapes / colours, add_obj
adds an object that is not there, add_att adds the word "striped". Every other scene has two
objects of different shapes and colours, so each swap is a real change. The seed picks the
scenes (``hyvl demo`` draws its world from seed 0: another seed gives scenes it never saw).
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

from PIL import Image

from hyvl.data.demo import COLOURS, SHAPES, make_scene
from hyvl.evaluation.sugarcrepe import SUBSETS


def _other(options, current: str) -> str:
    return next(o for o in options if o != current)


def negatives(boxes: list[dict]) -> dict[str, str]:
    """Hand-made hard negatives of a demo scene's caption, one per SugarCrepe edit (swaps and
    the relation need two objects)."""
    objs = [b["text"].split() for b in boxes]  # [size, colour, shape]
    say = lambda objs, joint=" and ": joint.join(f"a {z} {c} {s}" for z, c, s in objs)  # noqa: E731
    (z0, c0, s0), rest = objs[0], objs[1:]
    neg = {
        "replace_obj": say([[z0, c0, _other(SHAPES, s0)], *rest]),
        "replace_att": say([[z0, _other(COLOURS, c0), s0], *rest]),
        "add_obj": say([*objs, ["large", _other(COLOURS, c0), _other(SHAPES, s0)]]),
        "add_att": say([[z0, f"striped {c0}", s0], *rest]),
    }
    if rest:
        (z1, c1, s1), *more = rest
        neg["replace_rel"] = say(objs, " inside ")
        neg["swap_obj"] = say([[z0, c0, s1], [z1, c1, s0], *more])
        neg["swap_att"] = say([[z0, c1, s0], [z1, c0, s1], *more])
    return neg


def write_sugarcrepe(folder: Path, n_images: int = 10, seed: int = 3) -> dict:
    """SugarCrepe's released layout under ``folder`` (SUBSET.json for the 7 subsets +
    val2017/NNNNNNNNNNNN.jpg) from ``n_images`` demo scenes; returns the pairs written,
    ``{subset: [(image as read back, caption, negative caption)]}``."""
    rng = random.Random(seed)
    (folder / "val2017").mkdir(parents=True, exist_ok=True)
    truth = {s: [] for s in SUBSETS}
    files = {s: {} for s in SUBSETS}
    for i in range(n_images):
        while True:  # every other scene: two objects of different shapes and colours
            image, caption, boxes, objects = make_scene(rng, n_objects=1 + i % 2)
            (c0, s0), *rest = objects  # (colour, shape)
            if not i % 2 or (len(rest) == 1 and rest[0][0] != c0 and rest[0][1] != s0):
                break
        name = f"{i + 1:012d}.jpg"
        image.save(folder / "val2017" / name, quality=90)
        with Image.open(folder / "val2017" / name) as im:  # what the evaluation reads
            image = im.convert("RGB")
        assert caption == " and ".join(f"a {b['text']}" for b in boxes)  # as negatives() says
        for subset, negative in negatives(boxes).items():
            files[subset][str(len(files[subset]))] = {
                "filename": name, "caption": caption, "negative_caption": negative
            }  # fmt: skip
            truth[subset].append((image, caption, negative))
    for subset, entries in files.items():
        (folder / f"{subset}.json").write_text(json.dumps(entries, indent=4))
    return truth


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="the folder to write (SUBSET.json + val2017/)")
    p.add_argument("--images", type=int, default=200, help="demo scenes (default: 200)")
    p.add_argument("--seed", type=int, default=1000, help="scene seed (default: 1000)")
    args = p.parse_args(argv)
    truth = write_sugarcrepe(Path(args.out), args.images, args.seed)
    counts = ", ".join(f"{s} {len(v)}" for s, v in truth.items())
    print(f"{args.out}: {args.images} images; pairs: {counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
