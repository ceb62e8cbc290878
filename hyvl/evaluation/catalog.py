"""The 20 zero-shot classification datasets MERU and HyCoCLIP report, as package data.

Each dataset has a JSON file under ``suite_data/datasets/`` with its class names (in the
dataset's label order) and its prompt set (the papers' evaluation prompts), and, for ImageNet,
the WordNet ids of its classes. ``suite_data/published.json`` holds the published numbers with
their source. Both papers score every dataset by mean per-class accuracy (torchmetrics'
``MulticlassAccuracy`` with its default ``average="macro"`` in their evaluation code), so the
suite does too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path

from hyvl.errors import DataError

# In the order of the papers' tables.
NAMES = (
    "imagenet",
    "food101",
    "cifar10",
    "cifar100",
    "cub2011",
    "sun397",
    "cars",
    "aircraft",
    "dtd",
    "pets",
    "caltech101",
    "flowers102",
    "stl10",
    "eurosat",
    "resisc45",
    "country211",
    "mnist",
    "clevr",
    "pcam",
    "sst2",
)
RETRIEVAL = ("coco", "flickr30k")
COMPOSITIONAL = ("sugarcrepe",)  # hyvl.evaluation.sugarcrepe: ROOT/sugarcrepe/
METRIC = "mean_per_class"


@dataclass(frozen=True)
class TorchvisionSpec:
    """How to build a dataset with ``torchvision.datasets`` (never downloading).

    ``splits`` maps hyvl's split (test / train / val) to constructor keyword arguments;
    ``relabel="count"``: the target is a count whose class is ``classnames.index(str(count))``
    (CLEVR, whose class names are the counts in the papers' order). ``needs``: a module
    torchvision needs for it that hyvl does not install by default (``hyvl[eval]`` does).
    """

    cls: str
    splits: dict[str, dict] = field(default_factory=dict)
    relabel: str | None = None
    needs: str | None = None


def _split(test: dict, train: dict, val: dict | None = None) -> dict[str, dict]:
    out = {"test": test, "train": train}
    if val is not None:
        out["val"] = val
    return out


_TEST, _TRAIN = {"split": "test"}, {"split": "train"}
# Datasets torchvision has WITH an evaluation split. Not here: cub2011 and resisc45 (not in
# torchvision), sun397, caltech101 and eurosat (torchvision has no split for them: the whole
# set would be evaluated), so those come as an ImageFolder or shards of the split you evaluate.
TORCHVISION: dict[str, TorchvisionSpec] = {
    "imagenet": TorchvisionSpec("ImageNet", {"test": {"split": "val"}, "train": _TRAIN}),
    "food101": TorchvisionSpec("Food101", _split(_TEST, _TRAIN)),
    "cifar10": TorchvisionSpec("CIFAR10", _split({"train": False}, {"train": True})),
    "cifar100": TorchvisionSpec("CIFAR100", _split({"train": False}, {"train": True})),
    "cars": TorchvisionSpec("StanfordCars", _split(_TEST, _TRAIN)),
    "aircraft": TorchvisionSpec("FGVCAircraft", _split(_TEST, _TRAIN, {"split": "val"})),
    "dtd": TorchvisionSpec("DTD", _split(_TEST, _TRAIN, {"split": "val"})),
    "pets": TorchvisionSpec("OxfordIIITPet", _split(_TEST, {"split": "trainval"})),
    "flowers102": TorchvisionSpec("Flowers102", _split(_TEST, _TRAIN, {"split": "val"})),
    "stl10": TorchvisionSpec("STL10", _split(_TEST, _TRAIN)),
    "country211": TorchvisionSpec("Country211", _split(_TEST, _TRAIN, {"split": "valid"})),
    "mnist": TorchvisionSpec("MNIST", _split({"train": False}, {"train": True})),
    # CLEVR's test split has no labels: the papers evaluate on its validation split.
    "clevr": TorchvisionSpec("CLEVRClassification", _split({"split": "val"}, _TRAIN), "count"),
    "pcam": TorchvisionSpec("PCAM", _split(_TEST, _TRAIN, {"split": "val"}), needs="h5py"),
    "sst2": TorchvisionSpec("RenderedSST2", _split(_TEST, _TRAIN, {"split": "val"})),
}


@dataclass(frozen=True)
class DatasetInfo:
    """A suite dataset: class names in label order, prompt templates, how torchvision has it."""

    name: str
    classnames: tuple[str, ...]
    templates: tuple[str, ...]
    wnids: tuple[str, ...] | None = None
    metric: str = METRIC

    @property
    def num_classes(self) -> int:
        return len(self.classnames)

    @property
    def torchvision(self) -> TorchvisionSpec | None:
        return TORCHVISION.get(self.name)

    def layouts(self) -> list[str]:
        tv = self.torchvision
        out = [f"torchvision {tv.cls}"] if tv else []
        return out + ["imagefolder", "webdataset"]


def _data(*parts: str):
    return resources.files("hyvl.evaluation").joinpath("suite_data", *parts)


@cache
def info(name: str) -> DatasetInfo:
    """The packaged class names and prompts of a suite dataset (one of :data:`NAMES`)."""
    if name not in NAMES:
        raise DataError(f"unknown suite dataset {name!r}; known: {', '.join(NAMES)}")
    d = json.loads(_data("datasets", f"{name}.json").read_text())
    wnids = tuple(d["wnids"]) if "wnids" in d else None
    return DatasetInfo(name, tuple(d["classnames"]), tuple(d["templates"]), wnids)


@cache
def published() -> dict:
    """``suite_data/published.json``: {"sources", "note", "zeroshot", "retrieval", "hierarchy"}.

    Each kind maps a dataset to its numbers per model size (and, for retrieval and hierarchy,
    per metric first); a dataset may name the ``split`` its numbers were measured on."""
    return json.loads(_data("published.json").read_text())


def imagenet_hierarchy_path() -> Path:
    """parent<TAB>child WordNet ids over the 1000 ImageNet classes (HyCoCLIP's is-a tree)."""
    return Path(str(_data("imagenet_wordnet.tsv")))


def published_for(kind: str, name: str, metric: str | None, size: str | None) -> dict:
    """Published numbers at model ``size`` (vit_s / vit_b / vit_l): {"clip", "meru",
    "hycoclip", "uncha", ..., "size", "source"} (and "source_<method>" for a method from another
    source) with only the values a source gives (and "split" when the
    source names the split it measured on), or {} when none does."""
    table = published().get(kind, {}).get(name, {})
    split = table.get("split")
    if metric is not None:
        table = table.get(metric, {})
    row = table.get(size or "", {})
    if not row:
        return {}
    # a method whose number comes from another source than the row's names it as source_<m>
    sources = published()["sources"]
    out = {k: sources[v] if k.startswith("source") else v for k, v in row.items()}
    out["size"] = size
    return {**out, "split": split} if split else out


def listing() -> list[dict]:
    """``hyvl eval suite --list``: every dataset with its classes, prompts, metric, layouts."""
    return [
        {
            "name": name,
            "num_classes": info(name).num_classes,
            "num_prompts": len(info(name).templates),
            "metric": info(name).metric,
            "layouts": info(name).layouts(),
            "folder": f"ROOT/{name}/",
        }
        for name in NAMES
    ]


def retrieval_listing() -> list[dict]:
    """The retrieval datasets of the suite and the files they are found by."""
    return [
        {
            "name": "coco",
            "metric": "R@1/5/10 both ways",
            "layouts": [
                "karpathy: dataset_coco.json (split test) + the images under ROOT/coco",
                "coco: annotations/captions_val2017.json + val2017/",
                "hyvl: captions.json + images/",
            ],
            "folder": "ROOT/coco/",
        },
        {
            "name": "flickr30k",
            "metric": "R@1/5/10 both ways",
            "layouts": [
                "karpathy: dataset_flickr30k.json (split test) + flickr30k_images/",
                "hyvl: captions.json + images/",
            ],
            "folder": "ROOT/flickr30k/",
        },
    ]


def compositional_listing() -> list[dict]:
    """The compositional benchmarks of the suite and the files they are found by."""
    return [
        {
            "name": "sugarcrepe",
            "metric": "accuracy per subset (true caption over hard negative), pooled mean",
            "layouts": [
                "the released data/*.json (7 subsets) in ROOT/sugarcrepe or ROOT/sugarcrepe/data, "
                "COCO val2017 images in ROOT/sugarcrepe/val2017 (or images/val2017, images/) "
                "or ROOT/coco/val2017"
            ],
            "folder": "ROOT/sugarcrepe/",
        }
    ]
