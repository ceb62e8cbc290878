"""A real-image demo world: scanned handwritten digits and photographed textures in scenes.

The objects are real pixels that ship inside installed packages (nothing is downloaded):
the 1797 8x8 scans of handwritten digits of scikit-learn's ``load_digits`` (UCI optical
recognition of handwritten digits) and three texture photographs of scikit-image's
``skimage.data`` (brick, grass, gravel). Everything is grey: classes differ by shape (digits)
and texture (patches), never by colour, and every object is small (boxes of 22-30 px on a
96 px canvas, a few patches of a 64 px / 8 px-patch model), which is what the coloured-shapes
demo does not exercise.

Held-out pixels: digit scans are split by index (every fifth scan is held out) and each
texture photograph by rows (the bottom quarter is held out); train shards use only the
training part, while the val shards, the zero-shot folder and the retrieval images use only
the held-out part, so zero-shot accuracy is measured on scans and crops never trained on.

Concept hierarchy: ``object`` > ``handwritten digit`` / ``texture`` > ``handwritten three``,
``brick texture`` ... Same layout as the shapes demo (:mod:`hyvl.data.demo`): ``train/*.tar``,
``val/*.tar``, ``zeroshot/`` (ImageFolder + ``classnames.txt`` + ``templates.txt``),
``retrieval/captions.json`` + ``retrieval/images/``, ``hierarchy.tsv``. Deterministic for a
seed, a few seconds.
"""

from __future__ import annotations

import random
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from hyvl.data.demo import place, write_world
from hyvl.errors import DataError

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEXTURES = ["brick", "grass", "gravel"]
FAMILIES = {
    "handwritten digit": [f"handwritten {d}" for d in DIGITS],
    "texture": [f"{t} texture" for t in TEXTURES],
}
CLASSES = [c for members in FAMILIES.values() for c in members]  # 13 zero-shot classes
TEMPLATES = ["a photo of a {}.", "a scan of a {}.", "a {}.", "an image showing a {}."]
CANVAS = 96
BOX = (22, 30)  # object side in pixels on the canvas
HELD_OUT_EVERY = 5  # digit scans with index % 5 == 0 are held out
TEXTURE_SCALE = 4  # photographs are shrunk 4x so a 22-30 px patch shows several periods


def hierarchy_edges() -> list[tuple[str, str]]:
    return [("object", f) for f in FAMILIES] + [
        (family, c) for family, members in FAMILIES.items() for c in members
    ]


@lru_cache(maxsize=1)
def _sources() -> tuple[dict, dict]:
    """({split: (images (N,8,8) in [0,1], labels (N,))}, {split: {texture: (H,W) uint8}})."""
    try:
        import skimage.data
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DataError(
            f"the real-image demo needs scikit-learn and scikit-image ({e.name} is missing): "
            "pip install 'hyvl[real]'"
        ) from e
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    held = np.arange(len(images)) % HELD_OUT_EVERY == 0
    digit_splits = {
        "train": (images[~held], digits.target[~held]),
        "held_out": (images[held], digits.target[held]),
    }
    texture_splits: dict[str, dict] = {"train": {}, "held_out": {}}
    for name in TEXTURES:
        photo = Image.fromarray(getattr(skimage.data, name)()).convert("L")
        photo = photo.resize((photo.width // TEXTURE_SCALE, photo.height // TEXTURE_SCALE))
        pixels = np.asarray(photo)
        cut = pixels.shape[0] * 3 // 4
        texture_splits["train"][name] = pixels[:cut]
        texture_splits["held_out"][name] = pixels[cut:]
    return digit_splits, texture_splits


def _background(rng: random.Random) -> np.ndarray:
    """A plain light-grey canvas with faint sensor-like noise, (CANVAS, CANVAS) float32."""
    shade = rng.randint(190, 240)
    noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 3, (CANVAS, CANVAS))
    return (shade + noise).astype(np.float32)


def _render(rng: random.Random, split: str, cls: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(pixels, alpha), each (size, size) float32: one object of class ``cls``."""
    digit_splits, texture_splits = _sources()
    if cls < len(DIGITS):
        images, labels = digit_splits[split]
        pool = np.flatnonzero(labels == cls)
        scan = images[pool[rng.randrange(len(pool))]]
        # The 8x8 scan is ink intensity; bicubic upsampling keeps its strokes smooth.
        mask = Image.fromarray(scan).resize((size, size), Image.BICUBIC)
        alpha = np.clip(np.asarray(mask), 0.0, 1.0)
        ink = float(rng.randint(10, 70))
        return np.full((size, size), ink, np.float32), alpha
    photo = texture_splits[split][TEXTURES[cls - len(DIGITS)]]
    y, x = rng.randrange(photo.shape[0] - size), rng.randrange(photo.shape[1] - size)
    return photo[y : y + size, x : x + size].astype(np.float32), np.ones((size, size), np.float32)


def make_scene(rng: random.Random, split: str = "train", classes: list[int] | None = None):
    """(image, caption, boxes, labels): 1-3 non-overlapping objects on a plain background."""
    canvas = _background(rng)
    labels, boxes, taken = [], [], []
    for cls in classes or [rng.randrange(len(CLASSES)) for _ in range(rng.randint(1, 3))]:
        box = place(rng, taken, rng.randint(*BOX), CANVAS)
        if box is None:
            continue
        pixels, alpha = _render(rng, split, cls, box[2] - box[0])
        region = canvas[box[1] : box[3], box[0] : box[2]]
        region[:] = region * (1 - alpha) + pixels * alpha
        taken.append(box)
        labels.append(cls)
        boxes.append({"bbox": list(box), "text": CLASSES[cls]})
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).convert("RGB")
    return image, caption_of(boxes), boxes, labels


def caption_of(boxes: list[dict]) -> str:
    return " and ".join(f"a {b['text']}" for b in boxes)


def make_real_demo(
    out_dir: str | Path,
    seed: int = 0,
    *,
    train_samples: int = 4000,
    val_samples: int = 256,
    zeroshot_per_class: int = 20,
    retrieval_images: int = 200,
    samples_per_shard: int = 500,
    progress: bool = False,
) -> Path:
    """Write the real-image world to ``out_dir`` (see the module docstring); returns it."""
    rng = random.Random(seed)
    # Only the training shards see the training scans and photo regions; val, zero-shot and
    # retrieval are drawn from the held-out ones.
    return write_world(
        Path(out_dir),
        scene=lambda split: make_scene(rng, "train" if split == "train" else "held_out"),
        zeroshot_image=lambda label: make_scene(rng, "held_out", [label])[0],
        classes=CLASSES,
        templates=TEMPLATES,
        hierarchy=hierarchy_edges(),
        caption_of=caption_of,
        train_samples=train_samples,
        val_samples=val_samples,
        zeroshot_per_class=zeroshot_per_class,
        retrieval_images=retrieval_images,
        samples_per_shard=samples_per_shard,
        progress=progress,
    )
