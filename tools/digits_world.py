"""Write the digits-only grounded world of issue 23 (1-3 grey digit scans on a light canvas).

The real-image demo (``hyvl data demo --kind real``) without its textures: scenes of 1-3
handwritten-digit scans from scikit-learn (22-30 px on a plain light 96 px canvas), captions
"a handwritten three and a handwritten five", one box text per digit, zero-shot on held-out
scans (10 classes, chance 10%). Same layout as ``hyvl data demo``; a few seconds.

    python tools/digits_world.py --out runs/digits/data

``hyvl data demo --kind real --world digits`` writes a world of the same construction (another
draw of it); this script reproduces the one docs/learning.md (fix 4) was measured on.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from hyvl.data import real
from hyvl.data.demo import write_world

DIGIT_CLASSES = list(range(len(real.DIGITS)))


def _scene(rng: random.Random, split: str, classes: list[int] | None = None):
    picks = classes or [rng.choice(DIGIT_CLASSES) for _ in range(rng.randint(1, 3))]
    return real.make_scene(rng, split, picks)


def make_digits_world(out: Path, seed: int = 0, train_samples: int = 4000) -> Path:
    rng = random.Random(seed)
    names = [real.CLASSES[i] for i in DIGIT_CLASSES]
    return write_world(
        Path(out),
        scene=lambda split: _scene(rng, "train" if split == "train" else "held_out"),
        zeroshot_image=lambda label: _scene(rng, "held_out", [label])[0],
        classes=names,
        templates=real.TEMPLATES,
        hierarchy=[("object", "handwritten digit")] + [("handwritten digit", c) for c in names],
        caption_of=real.caption_of,
        train_samples=train_samples,
        val_samples=256,
        zeroshot_per_class=20,
        retrieval_images=200,
        samples_per_shard=500,
        progress=False,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-samples", type=int, default=4000)
    args = p.parse_args()
    print(make_digits_world(Path(args.out), args.seed, args.train_samples))


if __name__ == "__main__":
    main()
