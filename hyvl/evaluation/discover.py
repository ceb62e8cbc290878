"""Finding the suite's datasets under a root, in a layout the user already has.

A classification dataset NAME is looked for under ``ROOT/NAME/``, in this order:

1. torchvision's on-disk layout (``torchvision.datasets.X(root, download=False)`` with root
   ``ROOT/NAME`` or ``ROOT`` itself, so a shared torchvision root works as it is);
2. webdataset shards with a ``cls`` label: ``ROOT/NAME/{split}/*.tar`` or ``ROOT/NAME/*.tar``;
3. an ImageFolder: ``ROOT/NAME/{split}/CLASS/...`` (``test``, else ``val`` for the evaluation
   split) or ``ROOT/NAME/CLASS/...``, whose sorted class folders are the dataset's label order
   (their number must be the dataset's number of classes).

Nothing is ever downloaded. What is not found comes back as a reason, never an exception.
Image files (ImageFolders, and torchvision's datasets that read files) are decoded by hyvl
(:class:`~hyvl.evaluation.files.ImageFiles`): a damaged, missing or oversized image is skipped
and counted by reason, 16-bit images are scaled to 8 bits rather than clipped.
"""

from __future__ import annotations

import importlib
import inspect
import json
import numbers
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from hyvl.errors import DataError
from hyvl.evaluation.catalog import DatasetInfo
from hyvl.evaluation.files import ImageFiles
from hyvl.evaluation.templates import read_lines

SPLIT_FOLDERS = {
    "test": ("test", "val"),
    "val": ("val", "valid", "validation"),
    "train": ("train",),
}


@dataclass
class Found:
    """A dataset found on disk. Exactly one of ``dataset`` (map-style, yields (image, label))
    and ``shards`` (a glob of tars with ``cls``) is set."""

    name: str
    layout: str
    path: Path
    classnames: list[str]
    templates: list[str]
    dataset: torch.utils.data.Dataset | None = None
    shards: str | None = None
    ids: list[str] | None = None  # class ids (ImageNet WordNet ids) for the hierarchy


def labels_of(dataset) -> list[int] | None:
    """Every sample's label without decoding images, when the dataset keeps them."""
    if isinstance(dataset, torch.utils.data.Subset):
        inner = labels_of(dataset.dataset)
        return None if inner is None else [inner[i] for i in dataset.indices]
    if isinstance(dataset, ImageFiles):
        return [int(y) for _, y in dataset.samples]
    for attr in ("targets", "labels"):  # MNIST / CIFAR: targets; STL10: labels
        values = getattr(dataset, attr, None)
        if values is not None and len(values) == len(dataset):
            return [int(v) for v in (values.tolist() if hasattr(values, "tolist") else values)]
    return None


# torchvision datasets that hold their images as arrays (nothing to decode from files)
_ARRAYS = ("MNIST", "CIFAR10", "CIFAR100", "STL10", "PCAM")


def file_samples(dataset) -> list[tuple[str, int]] | None:
    """The ``(image file, label)`` list of a torchvision dataset that reads image files.

    torchvision decodes them with PIL's ``convert("RGB")`` (16-bit images clipped to white)
    and raises on a damaged one mid-run, so the suite reads the files itself through
    :class:`~hyvl.evaluation.files.ImageFiles`. The lists are private attributes whose names
    differ per class: ImageFolder-like (ImageNet, Country211) ``samples``; StanfordCars,
    RenderedSST2 ``_samples``; Food101, FGVCAircraft, DTD, Flowers102, CLEVR ``_image_files``
    with ``_labels``; OxfordIIITPet ``_images`` with ``_labels``."""
    pairs = None
    for attr in ("samples", "_samples"):
        if isinstance(getattr(dataset, attr, None), list):
            pairs = getattr(dataset, attr)
            break
    labels = getattr(dataset, "_labels", None)
    for attr in ("_image_files", "_images"):
        files = getattr(dataset, attr, None)
        if pairs is None and isinstance(files, list) and isinstance(labels, list):
            pairs = list(zip(files, labels, strict=True))
    # file paths and integer labels only (FER2013's _samples hold pixel tensors, video
    # datasets' samples clips)
    if pairs is None or not all(
        isinstance(f, (str, os.PathLike)) and isinstance(y, numbers.Integral) for f, y in pairs
    ):
        return None
    return [(str(f), int(y)) for f, y in pairs]  # (StanfordCars' labels are numpy ints)


def _needs(spec) -> str | None:
    """Why torchvision's ``spec.cls`` cannot be read here (a module it needs is missing)."""
    if spec.needs is None:
        return None
    try:
        importlib.import_module(spec.needs)
    except ImportError:
        return (
            f"{spec.cls} needs {spec.needs}, which is not installed: "
            f"pip install 'hyvl[eval]' (or pip install {spec.needs})"
        )
    return None


def _torchvision(info: DatasetInfo, root: Path, split: str, preprocess):
    """(dataset, torchvision root) or a reason."""
    import torchvision

    spec = info.torchvision
    if spec is None or split not in spec.splits:
        return None
    cls = getattr(torchvision.datasets, spec.cls)
    reasons = []
    for base in (root / info.name, root):
        if not base.is_dir():
            continue
        missing = _needs(spec)
        if missing:
            return missing
        kwargs = {"transform": preprocess, **spec.splits[split]}
        if "download" in inspect.signature(cls.__init__).parameters:
            kwargs["download"] = False
        try:
            dataset = cls(str(base), **kwargs)
        except (RuntimeError, ValueError, OSError, KeyError, IndexError) as err:
            msg = str(err).splitlines()[0].split(". ")[0]  # its first sentence
            # torchvision's "Dataset not found ... use download=True": say what was looked for
            not_found = "dataset not found" in msg.lower()
            reasons.append(
                f"no {spec.cls} files under {base}" if not_found else f"{spec.cls}({base}): {msg}"
            )
            continue
        classes = getattr(dataset, "classes", None)  # (CLEVR and PCAM have no list)
        if classes is not None and len(classes) != info.num_classes:
            reasons.append(f"{spec.cls}({base}): {len(classes)} classes, not {info.num_classes}")
            continue
        if spec.cls in _ARRAYS:
            return dataset, base
        samples = file_samples(dataset)
        if samples is None:  # a torchvision version that keeps its file list elsewhere
            reasons.append(f"{spec.cls}({base}): cannot find its list of image files")
            continue
        if spec.relabel == "count":  # the target is a count: its class is the count's name
            index = {int(c): i for i, c in enumerate(info.classnames)}
            odd = sorted({int(y) for _, y in samples} - set(index))
            if odd:
                reasons.append(f"{spec.cls}({base}): object counts {odd} are not classes")
                continue
            samples = [(f, index[int(y)]) for f, y in samples]
        return ImageFiles(samples, preprocess), base
    return "; ".join(reasons) or f"no {spec.cls} under {root / info.name} or {root}"


def _split_dir(folder: Path, split: str) -> Path | None:
    for name in SPLIT_FOLDERS[split]:
        if (folder / name).is_dir():
            return folder / name
    return None


def _class_dirs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def find_classification(
    root: str | Path, info: DatasetInfo, preprocess, split: str = "test"
) -> Found | str:
    """The dataset ``info.name`` under ``root`` (its ``split``: test / val / train) or why not."""
    root = Path(root)
    folder = root / info.name
    names, templates = list(info.classnames), list(info.templates)
    ids = list(info.wnids) if info.wnids else None
    tv = _torchvision(info, root, split, preprocess)
    if isinstance(tv, tuple):
        return Found(info.name, "torchvision", tv[1], names, templates, dataset=tv[0], ids=ids)
    reasons = [tv] if tv else []
    if not folder.is_dir():
        return "; ".join(reasons + [f"no folder {folder}"])
    sub = _split_dir(folder, split)
    if sub is None and split != "test":
        return "; ".join(reasons + [f"no {'/'.join(SPLIT_FOLDERS[split])} folder in {folder}"])
    where = sub or folder
    if sorted(where.glob("*.tar")):
        return Found(
            info.name, "webdataset", where, names, templates, shards=str(where / "*.tar"), ids=ids
        )
    classes = _class_dirs(where)
    if not classes:
        return "; ".join(reasons + [f"{where}: no *.tar and no class folders"])
    if len(classes) != info.num_classes:
        return "; ".join(
            reasons + [f"{where}: {len(classes)} class folders, {info.name} has {info.num_classes}"]
        )
    from torchvision.datasets import ImageFolder

    try:  # only its class folders and file list: ImageFiles reads the images (skips bad ones)
        dataset = ImageFiles(ImageFolder(str(where)).samples, preprocess)
    except (FileNotFoundError, OSError) as err:
        return f"{where}: {err}"
    if ids is not None:
        ids = [c.name for c in classes] if set(c.name for c in classes) == set(ids) else ids
    return Found(info.name, "imagefolder", where, names, templates, dataset=dataset, ids=ids)


def find_custom(root: str | Path, known: tuple[str, ...], preprocess):
    """ImageFolders under ``root`` that are not suite datasets but carry a ``classnames.txt``
    (as ``hyvl data demo`` writes, with ``templates.txt`` beside it): extra rows of the table.
    Returns ({name: Found}, {name: why it was skipped})."""
    from torchvision.datasets import ImageFolder

    from hyvl.evaluation.templates import resolve_templates

    found, skipped = {}, {}
    root = Path(root)
    for folder in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        if folder.name in known or not (folder / "classnames.txt").is_file():
            continue
        names = read_lines(folder / "classnames.txt")
        try:
            files = ImageFolder(str(folder))
        except (FileNotFoundError, OSError) as err:
            skipped[folder.name] = f"{folder}: {err}"
            continue
        if len(files.classes) != len(names):
            skipped[folder.name] = (
                f"{folder}: {len(files.classes)} class folders but {len(names)} class names"
            )
            continue
        templates = resolve_templates(None, folder)
        dataset = ImageFiles(files.samples, preprocess)
        found[folder.name] = Found(folder.name, "imagefolder", folder, names, templates, dataset)
    return found, skipped


def find_retrieval(root: str | Path, name: str) -> tuple[Path, Path, str] | str:
    """(COCO-format captions JSON, image root, what it is) for ``coco`` / ``flickr30k``.

    A Karpathy split file (``dataset_coco.json`` / ``dataset_flickr30k.json``) is converted to
    its test split; COCO 2017 ``annotations/captions_val2017.json`` and hyvl's ``captions.json``
    are used as they are."""
    folder = Path(root) / name
    if not folder.is_dir():
        return f"no folder {folder}"
    karpathy = folder / f"dataset_{name}.json"
    if karpathy.is_file():
        images = folder / "flickr30k_images" if name == "flickr30k" else folder
        if name == "flickr30k" and not images.is_dir():
            images = folder / "images"
        return karpathy, images, "karpathy test"
    coco2017 = folder / "annotations" / "captions_val2017.json"
    if name == "coco" and coco2017.is_file():
        return coco2017, folder / "val2017", "val2017"
    if (folder / "captions.json").is_file():
        return folder / "captions.json", folder / "images", "captions.json"
    return f"{folder}: no dataset_{name}.json, annotations/captions_val2017.json or captions.json"


def karpathy_to_coco(path: Path, out: Path, split: str = "test") -> Path:
    """Karpathy's split JSON -> a COCO captions JSON of ``split`` (file names relative to the
    image root: ``filepath/filename`` for COCO, ``filename`` for Flickr30k)."""
    try:
        data = json.loads(path.read_text())
        images, anns = [], []
        for im in data["images"]:
            if im.get("split") != split:
                continue
            i = len(images)
            rel = f"{im['filepath']}/{im['filename']}" if im.get("filepath") else im["filename"]
            images.append({"id": i, "file_name": rel})
            for s in im["sentences"]:
                anns.append({"id": len(anns), "image_id": i, "caption": s["raw"]})
    except (OSError, json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"{path}: not a Karpathy split file ({type(err).__name__}: {err})") from err
    if not images:
        raise DataError(f"{path}: no images in split {split!r}")
    out.write_text(json.dumps({"images": images, "annotations": anns}))
    return out
