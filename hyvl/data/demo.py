"""The built-in demo world: coloured shapes, written through the same shard writer as real data.

Concepts form a hierarchy: ``shape`` > family (``round shape``, ``polygon``) > shape (``circle``,
``square``, ``triangle``) > coloured shape (``red circle`` ...). A scene holds 1-3 objects; its
caption names them all ("a large red circle and a small blue square"), and each object gets a
box and a box text ("large red circle"), as grounded web data (GRIT) does. Deterministic for a
seed, offline, a few seconds.

Layout (docs/contract.md): ``train/*.tar``, ``val/*.tar``, ``zeroshot/`` (ImageFolder +
``classnames.txt`` + ``templates.txt``), ``retrieval/captions.json`` + ``retrieval/images/``,
``hierarchy.tsv``.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from PIL import Image, ImageDraw

from hyvl.data.writer import write_shards

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (235, 200, 30),
}
FAMILIES = {"round shape": ["circle"], "polygon": ["square", "triangle"]}
SHAPES = [s for members in FAMILIES.values() for s in members]
CLASSES = [f"{c} {s}" for s in SHAPES for c in COLOURS]  # 12 zero-shot classes
TEMPLATES = ["a photo of a {}.", "a drawing of a {}.", "a {}.", "an image showing a {}."]
CANVAS = 128
SIZES = {"small": (34, 46), "large": (56, 72)}  # >= 32 px: HyCoCLIP's minimum box size


def hierarchy_edges() -> list[tuple[str, str]]:
    edges = []
    for family, members in FAMILIES.items():
        edges.append(("shape", family))
        for shape in members:
            edges.append((family, shape))
            for colour in COLOURS:
                edges.append((shape, f"{colour} {shape}"))
    return edges


def _draw(draw: ImageDraw.ImageDraw, shape: str, colour, box) -> None:
    x1, y1, x2, y2 = box
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    elif shape == "square":
        draw.rectangle(box, fill=colour)
    else:
        draw.polygon([((x1 + x2) / 2, y1), (x2, y2), (x1, y2)], fill=colour)


def _background(rng: random.Random) -> Image.Image:
    shade = rng.randint(200, 250)
    image = Image.new("RGB", (CANVAS, CANVAS), (shade, shade, shade - rng.randint(0, 20)))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.randint(0, 4)):  # faint clutter so the background is not constant
        x, y = rng.randrange(CANVAS), rng.randrange(CANVAS)
        tone = shade - rng.randint(10, 40)
        draw.line((x, y, x + rng.randint(-30, 30), y + rng.randint(-30, 30)), fill=(tone,) * 3)
    return image


def place(rng: random.Random, taken: list, size: int, canvas: int = CANVAS):
    """A random ``size`` x ``size`` box inside ``canvas`` that overlaps none of ``taken``
    (50 tries), or None."""
    for _ in range(50):
        x, y = rng.randint(0, canvas - size), rng.randint(0, canvas - size)
        box = (x, y, x + size, y + size)
        if all(box[2] <= t[0] or box[0] >= t[2] or box[3] <= t[1] or box[1] >= t[3] for t in taken):
            return box
    return None


def make_scene(rng: random.Random, n_objects: int | None = None):
    """(image, caption, boxes, objects) for a scene of 1-3 non-overlapping objects."""
    image = _background(rng)
    draw = ImageDraw.Draw(image)
    objects, boxes, taken = [], [], []
    for _ in range(n_objects or rng.randint(1, 3)):
        size_word = rng.choice(list(SIZES))
        box = place(rng, taken, rng.randint(*SIZES[size_word]))
        if box is None:
            continue
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        _draw(draw, shape, COLOURS[colour], box)
        taken.append(box)
        phrase = f"{size_word} {colour} {shape}"
        objects.append((colour, shape))
        boxes.append({"bbox": list(box), "text": phrase})
    return image, _caption_of(boxes), boxes, objects


def _caption_of(boxes: list[dict]) -> str:
    return " and ".join(f"a {b['text']}" for b in boxes)


def write_world(
    out: Path,
    *,
    scene: Callable[[str], tuple],
    zeroshot_image: Callable[[int], Image.Image],
    classes: list[str],
    templates: list[str],
    hierarchy: list[tuple[str, str]],
    caption_of: Callable[[list[dict]], str],
    train_samples: int,
    val_samples: int,
    zeroshot_per_class: int,
    retrieval_images: int,
    samples_per_shard: int,
    progress: bool,
) -> Path:
    """Write a grounded demo world in the layout of ``hyvl data demo`` (module docstring).

    ``scene(split)`` -> ``(image, caption, boxes, objects)`` for split "train", "val" or
    "retrieval"; ``zeroshot_image(label)`` -> one image of class ``label``. Both draw from the
    caller's seeded generator, in this order: train, val, zero-shot, retrieval, so a world is a
    pure function of its seed.
    """
    for split, n in (("train", train_samples), ("val", val_samples)):
        records = []
        for i in range(n):
            image, caption, boxes, _ = scene(split)
            records.append(
                {"key": f"{split}{i:06d}", "image": image, "caption": caption, "boxes": boxes}
            )
        write_shards(
            records,
            out / split,
            prefix=split,
            samples_per_shard=samples_per_shard,
            progress=progress,
        )

    # Zero-shot: one object per image, ImageFolder with one folder per class.
    zs = out / "zeroshot"
    for label, name in enumerate(classes):
        folder = zs / f"{label:02d}_{name.replace(' ', '_')}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(zeroshot_per_class):
            zeroshot_image(label).save(folder / f"{i:03d}.jpg", quality=90)
    (zs / "classnames.txt").write_text("\n".join(classes) + "\n")
    (zs / "templates.txt").write_text("\n".join(templates) + "\n")

    # Retrieval: COCO captions format, two captions per image (object order differs).
    rt = out / "retrieval"
    (rt / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i in range(retrieval_images):
        image, caption, boxes, _ = scene("retrieval")
        name = f"{i:06d}.jpg"
        image.save(rt / "images" / name, quality=90)
        images.append({"id": i, "file_name": name})
        second = caption_of(boxes[::-1]) if len(boxes) > 1 else f"there is a {boxes[0]['text']}"
        for text in (caption, second):
            annotations.append({"id": len(annotations), "image_id": i, "caption": text})
    (rt / "captions.json").write_text(json.dumps({"images": images, "annotations": annotations}))

    (out / "hierarchy.tsv").write_text("".join(f"{p}\t{c}\n" for p, c in hierarchy))
    return out


def make_demo(
    out_dir: str | Path,
    seed: int = 0,
    *,
    train_samples: int = 4000,
    val_samples: int = 256,
    zeroshot_per_class: int = 16,
    retrieval_images: int = 200,
    samples_per_shard: int = 500,
    progress: bool = False,
) -> Path:
    """Write the demo world to ``out_dir`` (see the module docstring); returns ``out_dir``."""
    rng = random.Random(seed)

    def zeroshot_image(label: int) -> Image.Image:
        colour, shape = CLASSES[label].split()
        image = _background(rng)
        size = rng.randint(SIZES["small"][0], SIZES["large"][1])
        box = place(rng, [], size)
        _draw(ImageDraw.Draw(image), shape, COLOURS[colour], box)
        return image

    return write_world(
        Path(out_dir),
        scene=lambda split: make_scene(rng),
        zeroshot_image=zeroshot_image,
        classes=CLASSES,
        templates=TEMPLATES,
        hierarchy=hierarchy_edges(),
        caption_of=_caption_of,
        train_samples=train_samples,
        val_samples=val_samples,
        zeroshot_per_class=zeroshot_per_class,
        retrieval_images=retrieval_images,
        samples_per_shard=samples_per_shard,
        progress=progress,
    )
