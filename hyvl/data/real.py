"""Real-image demo worlds: scanned handwritten digits, photographed textures and objects in scenes.

The objects are real pixels that ship inside installed packages (nothing is downloaded):

- ``digits``: the 1797 8x8 scans of handwritten digits of scikit-learn's ``load_digits`` (UCI
  optical recognition of handwritten digits), upsampled into the box as ink;
- ``textures``: three texture photographs of scikit-image's ``skimage.data`` (brick, grass,
  gravel), a patch of one per object;
- ``photos``: photographed objects of ``skimage.data``: the 100 face crops of ``lfw_subset``
  (Labeled Faces in the Wild) and the 24 coins of ``coins`` (each cut out along its outline).

Everything is grey: classes differ by shape and texture, never by colour. The default world,
``real`` (``hyvl data demo --kind real``), is digits and textures, 1-3 objects of 22-30 px on a
light 96 px canvas (a few patches of a 64 px / 8 px-patch model), which is what the
coloured-shapes demo does not exercise. Other worlds (:data:`WORLDS`, or a :class:`World` of
one's own) change the object sources, the background (``light``, ``dark``, ``noisy``: textured
mid-grey), the object size, the number of objects per scene and the caption wording.

Held-out pixels: digit scans are split by index (every fifth scan is held out), faces likewise,
coins every fourth one (in reading order), and each texture photograph by rows (the bottom
quarter is held out); train shards use only the training part, while the val shards, the
zero-shot folder and the retrieval images use only the held-out part, so zero-shot accuracy is
measured on scans, crops and objects never trained on.

Concept hierarchy: ``object`` > family (``handwritten digit``, ``texture``, ``photographed
object``) > class (``handwritten three``, ``brick texture``, ``human face`` ...); the families
are what per-family accuracy groups by. Same layout as the shapes demo (:mod:`hyvl.data.demo`):
``train/*.tar``, ``val/*.tar``, ``zeroshot/`` (ImageFolder + ``classnames.txt`` +
``templates.txt``), ``retrieval/captions.json`` + ``retrieval/images/``, ``hierarchy.tsv``.
Deterministic for a seed, a few seconds.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from hyvl.data.demo import place, write_world
from hyvl.errors import ConfigError, DataError

DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
TEXTURES = ["brick", "grass", "gravel"]
PHOTOS = {"human face": "lfw_subset", "coin": "coins"}
# source name -> (family, its classes)
SOURCES = {
    "digits": ("handwritten digit", [f"handwritten {d}" for d in DIGITS]),
    "textures": ("texture", [f"{t} texture" for t in TEXTURES]),
    "photos": ("photographed object", list(PHOTOS)),
}
FAMILIES = {
    family: members for family, members in SOURCES.values() if family != "photographed object"
}
CLASSES = [c for members in FAMILIES.values() for c in members]  # the default world's 13 classes
TEMPLATES = ["a photo of a {}.", "a scan of a {}.", "a {}.", "an image showing a {}."]
CANVAS = 96
BOX = (22, 30)  # object side in pixels on the canvas
HELD_OUT_EVERY = 5  # digit scans and faces with index % 5 == 0 are held out
COINS_HELD_OUT_EVERY = 4  # 6 of the 24 coins
TEXTURE_SCALE = 4  # photographs are shrunk 4x so a 22-30 px patch shows several periods
BACKGROUNDS = ("light", "dark", "noisy")
WORDINGS = {
    # name -> (prefix, article before each object, separator, last separator)
    "plain": ("", "a ", " and ", " and "),  # "a handwritten three and a gravel texture"
    "scene": ("a picture with ", "a ", ", ", " next to "),  # "a picture with a coin next to a ..."
    "terse": ("", "", ", ", ", "),  # "handwritten three, gravel texture"
}


@dataclass(frozen=True)
class World:
    """One real-image world: which objects, on what, how big, how many, how captioned.

    ``sources``: any of ``digits``, ``textures``, ``photos`` (:data:`SOURCES`); ``background``:
    ``light`` (plain light grey), ``dark`` (plain dark grey, light ink) or ``noisy`` (mid-grey
    with blotchy texture and strong pixel noise, ink dark or light); ``object_size``: the side
    of an object's box in pixels, (low, high); ``objects``: objects per scene, (low, high) (a
    scene holds fewer when they do not fit without overlap); ``wording``: the caption style
    (:data:`WORDINGS`).
    """

    sources: tuple[str, ...] = ("digits", "textures")
    background: str = "light"
    object_size: tuple[int, int] = BOX
    objects: tuple[int, int] = (1, 3)
    wording: str = "plain"

    def __post_init__(self) -> None:
        bad = [s for s in self.sources if s not in SOURCES]
        if bad or not self.sources:
            raise ConfigError(
                f"object sources {list(self.sources)}: choose one or more of {', '.join(SOURCES)}"
            )
        if self.background not in BACKGROUNDS:
            raise ConfigError(
                f"background {self.background!r}: choose one of {', '.join(BACKGROUNDS)}"
            )
        if self.wording not in WORDINGS:
            raise ConfigError(f"wording {self.wording!r}: choose one of {', '.join(WORDINGS)}")
        low, high = self.object_size
        if not 8 <= low <= high <= CANVAS // 2:
            raise ConfigError(
                f"object size {low}-{high} px: needs 8 <= low <= high <= {CANVAS // 2} "
                f"(the canvas is {CANVAS} px)"
            )
        low, high = self.objects
        if not 1 <= low <= high <= 8:
            raise ConfigError(f"objects per scene {low}-{high}: needs 1 <= low <= high <= 8")

    @property
    def families(self) -> dict[str, list[str]]:
        return dict(SOURCES[s] for s in self.sources)

    @property
    def classes(self) -> list[str]:
        return [c for members in self.families.values() for c in members]

    def hierarchy_edges(self) -> list[tuple[str, str]]:
        families = self.families
        return [("object", f) for f in families] + [
            (family, c) for family, members in families.items() for c in members
        ]

    def changes(self, base: World | None = None) -> str:
        """What differs from ``base`` (the default world), e.g. ``"background dark"``."""
        base = base or REAL
        shown = {"sources": "+".join, "object_size": "{0[0]}-{0[1]} px".format}
        shown["objects"] = "{0[0]}-{0[1]} per scene".format
        parts = []
        for f in dataclasses.fields(self):
            mine = getattr(self, f.name)
            if mine != getattr(base, f.name):
                value = shown.get(f.name, str)(mine)
                parts.append(value if f.name in ("object_size", "objects") else f"{f.name} {value}")
        return ", ".join(parts) or "the default"

    def describe(self) -> str:
        return (
            f"{'+'.join(self.sources)} on {self.background}, {self.object_size[0]}-"
            f"{self.object_size[1]} px, {self.objects[0]}-{self.objects[1]} per scene, "
            f"{self.wording} captions"
        )


REAL = World()
# Named worlds: the default one and one change of it each (``hyvl data demo --kind real --world``).
WORLDS = {
    "real": REAL,
    "digits": World(sources=("digits",)),
    "textures": World(sources=("textures",)),
    "mixed": World(sources=("digits", "textures", "photos")),
    "dark": World(background="dark"),
    "noisy": World(background="noisy"),
    "large": World(object_size=(36, 46)),
    "single": World(objects=(1, 1)),
    "crowded": World(objects=(3, 5)),
    "wording": World(wording="scene"),
}


def get_world(world: str | World = "real", **changes) -> World:
    """A named world (:data:`WORLDS`) or ``world`` itself, with ``changes`` (World fields) made."""
    if isinstance(world, str):
        if world not in WORLDS:
            raise ConfigError(f"world {world!r}: choose one of {', '.join(WORLDS)}")
        world = WORLDS[world]
    changes = {k: v for k, v in changes.items() if v is not None}
    return dataclasses.replace(world, **changes) if changes else world


def hierarchy_edges() -> list[tuple[str, str]]:
    """The default world's hierarchy."""
    return REAL.hierarchy_edges()


def _import():
    try:
        import skimage.data
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise DataError(
            f"the real-image demo needs scikit-learn and scikit-image ({e.name} is missing): "
            "pip install 'hyvl[real]'"
        ) from e
    return skimage.data, load_digits


@lru_cache(maxsize=1)
def _sources() -> tuple[dict, dict]:
    """({split: (images (N,8,8) in [0,1], labels (N,))}, {split: {texture: (H,W) uint8}})."""
    skdata, load_digits = _import()
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    held = np.arange(len(images)) % HELD_OUT_EVERY == 0
    digit_splits = {
        "train": (images[~held], digits.target[~held]),
        "held_out": (images[held], digits.target[held]),
    }
    texture_splits: dict[str, dict] = {"train": {}, "held_out": {}}
    for name in TEXTURES:
        photo = Image.fromarray(getattr(skdata, name)()).convert("L")
        photo = photo.resize((photo.width // TEXTURE_SCALE, photo.height // TEXTURE_SCALE))
        pixels = np.asarray(photo)
        cut = pixels.shape[0] * 3 // 4
        texture_splits["train"][name] = pixels[:cut]
        texture_splits["held_out"][name] = pixels[cut:]
    return digit_splits, texture_splits


@lru_cache(maxsize=1)
def _photo_sources() -> dict[str, dict[str, list[tuple[np.ndarray, np.ndarray]]]]:
    """{split: {class: [(pixels 0-255, alpha 0-1), ...]}} for the photographed objects."""
    skdata, _ = _import()
    from scipy import ndimage
    from skimage import filters, measure, segmentation

    # lfw_subset: 100 face crops then 100 non-faces, 25x25 in [0, 1]; the faces only.
    faces = [f.astype(np.float32) * 255 for f in skdata.lfw_subset()[:100]]
    # coins: 24 coins on a dark tray. Their outlines: watershed of the Sobel edges from sure
    # background / sure coin markers (scikit-image's own coins segmentation), holes filled.
    photo = skdata.coins()
    markers = np.zeros_like(photo)
    markers[photo < 30], markers[photo > 150] = 1, 2
    mask = ndimage.binary_fill_holes(segmentation.watershed(filters.sobel(photo), markers) - 1)
    regions = [r for r in measure.regionprops(ndimage.label(mask)[0]) if r.area > 300]
    regions.sort(key=lambda r: (r.bbox[0] // 60, r.bbox[1]))  # reading order, row by row
    coins = []
    for r in regions:
        y0, x0, y1, x1 = r.bbox
        coins.append((photo[y0:y1, x0:x1].astype(np.float32), r.image.astype(np.float32)))
    splits: dict[str, dict] = {"train": {}, "held_out": {}}
    for name, items, every in (
        ("human face", [(f, np.ones_like(f)) for f in faces], HELD_OUT_EVERY),
        ("coin", coins, COINS_HELD_OUT_EVERY),
    ):
        splits["train"][name] = [x for i, x in enumerate(items) if i % every]
        splits["held_out"][name] = [x for i, x in enumerate(items) if i % every == 0]
    return splits


def _background(rng: random.Random, kind: str = "light") -> np.ndarray:
    """A canvas of ``kind`` (:class:`World`), (CANVAS, CANVAS) float32."""
    if kind == "light":  # plain light grey with faint sensor-like noise
        shade = rng.randint(190, 240)
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 3, (CANVAS, CANVAS))
        return (shade + noise).astype(np.float32)
    if kind == "dark":
        shade = rng.randint(15, 60)
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0, 3, (CANVAS, CANVAS))
        return (shade + noise).astype(np.float32)
    from scipy import ndimage

    shade = rng.randint(100, 160)
    gen = np.random.default_rng(rng.getrandbits(32))
    blotches = ndimage.gaussian_filter(gen.normal(0, 1, (CANVAS, CANVAS)), 3)
    blotches *= 30 / max(float(blotches.std()), 1e-6)
    return (shade + blotches + gen.normal(0, 12, (CANVAS, CANVAS))).astype(np.float32)


def _ink(rng: random.Random, background: str) -> float:
    """A digit's ink shade that stands out from ``background``."""
    if background == "light":
        return float(rng.randint(10, 70))
    if background == "dark":
        return float(rng.randint(185, 245))
    return float(rng.choice((rng.randint(5, 40), rng.randint(215, 250))))


def _render(
    rng: random.Random, split: str, name: str, size: int, background: str = "light"
) -> tuple[np.ndarray, np.ndarray]:
    """(pixels, alpha), each (size, size) float32: one object of class ``name``."""
    digit_splits, texture_splits = _sources()
    family = next(f for f, members in SOURCES.values() if name in members)
    if family == "handwritten digit":
        images, labels = digit_splits[split]
        pool = np.flatnonzero(labels == DIGITS.index(name.split()[-1]))
        scan = images[pool[rng.randrange(len(pool))]]
        # The 8x8 scan is ink intensity; bicubic upsampling keeps its strokes smooth.
        mask = Image.fromarray(scan).resize((size, size), Image.BICUBIC)
        alpha = np.clip(np.asarray(mask), 0.0, 1.0)
        return np.full((size, size), _ink(rng, background), np.float32), alpha
    if family == "texture":
        photo = texture_splits[split][name.split()[0]]
        # A window larger than the held-out strip is cut at the strip's height and scaled up,
        # on both splits alike (the default sizes fit: 30 < 32 rows).
        side = min(size, photo.shape[0] - 1)
        y, x = rng.randrange(photo.shape[0] - side), rng.randrange(photo.shape[1] - side)
        patch = photo[y : y + side, x : x + side].astype(np.float32)
        if side != size:
            patch = np.asarray(Image.fromarray(patch).resize((size, size), Image.BICUBIC))
        return patch, np.ones((size, size), np.float32)
    items = _photo_sources()[split][name]
    pixels, alpha = items[rng.randrange(len(items))]
    if rng.random() < 0.5:  # a mirror image is the same kind of object
        pixels, alpha = pixels[:, ::-1], alpha[:, ::-1]

    def fit(a: np.ndarray) -> np.ndarray:
        return np.asarray(
            Image.fromarray(np.ascontiguousarray(a)).resize((size, size), Image.BICUBIC)
        )

    return fit(pixels), np.clip(fit(alpha), 0.0, 1.0)


def make_scene(
    rng: random.Random,
    split: str = "train",
    classes: list[int] | None = None,
    world: World = REAL,
):
    """(image, caption, boxes, labels): non-overlapping objects of ``world`` on its background;
    ``labels`` index ``world.classes``."""
    names = world.classes
    canvas = _background(rng, world.background)
    labels, boxes, taken = [], [], []
    if not classes:
        classes = [rng.randrange(len(names)) for _ in range(rng.randint(*world.objects))]
    for cls in classes:
        box = place(rng, taken, rng.randint(*world.object_size), CANVAS)
        if box is None:
            continue
        pixels, alpha = _render(rng, split, names[cls], box[2] - box[0], world.background)
        region = canvas[box[1] : box[3], box[0] : box[2]]
        region[:] = region * (1 - alpha) + pixels * alpha
        taken.append(box)
        labels.append(cls)
        boxes.append({"bbox": list(box), "text": names[cls]})
    image = Image.fromarray(np.clip(canvas, 0, 255).astype(np.uint8)).convert("RGB")
    return image, caption_of(boxes, world.wording), boxes, labels


def caption_of(boxes: list[dict], wording: str = "plain") -> str:
    """The caption naming every box, in the style ``wording`` (:data:`WORDINGS`)."""
    prefix, article, sep, last = WORDINGS[wording]
    names = [f"{article}{b['text']}" for b in boxes]
    if len(names) < 2:
        return prefix + "".join(names)
    return prefix + sep.join(names[:-1]) + last + names[-1]


def make_real_demo(
    out_dir: str | Path,
    seed: int = 0,
    *,
    world: str | World = "real",
    train_samples: int = 4000,
    val_samples: int = 256,
    zeroshot_per_class: int = 20,
    retrieval_images: int = 200,
    samples_per_shard: int = 500,
    progress: bool = False,
) -> Path:
    """Write a real-image world (a name of :data:`WORLDS` or a :class:`World`; the module
    docstring) to ``out_dir``; returns it."""
    world = get_world(world)
    rng = random.Random(seed)
    # Only the training shards see the training scans and photo regions; val, zero-shot and
    # retrieval are drawn from the held-out ones.
    return write_world(
        Path(out_dir),
        scene=lambda split: make_scene(
            rng, "train" if split == "train" else "held_out", world=world
        ),
        zeroshot_image=lambda label: make_scene(rng, "held_out", [label], world)[0],
        classes=world.classes,
        templates=TEMPLATES,
        hierarchy=world.hierarchy_edges(),
        caption_of=lambda boxes: caption_of(boxes, world.wording),
        train_samples=train_samples,
        val_samples=val_samples,
        zeroshot_per_class=zeroshot_per_class,
        retrieval_images=retrieval_images,
        samples_per_shard=samples_per_shard,
        progress=progress,
    )
