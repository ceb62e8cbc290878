"""Zero-shot classification: prompt-ensembled class embeddings, top-1 / top-5 / mean per class,
top-1 per class and, with a class hierarchy, per family (with a warning at chance)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from hyvl.errors import DataError
from hyvl.evaluation.discover import file_samples
from hyvl.evaluation.embed import Shard, embed_images, encoding, progress, similarity
from hyvl.evaluation.files import ImageFiles, drop_skipped, gather_counts, merge_counts
from hyvl.evaluation.taxonomy import class_families, find_hierarchy
from hyvl.evaluation.templates import read_lines, resolve_templates

# A family is "at chance" when its top-1 is not above 1 / (its number of classes) at this
# level of a one-sided exact binomial test (see :func:`family_breakdown`).
CHANCE_LEVEL = 0.05


@torch.no_grad()
def zeroshot_classifier(
    model,
    tokenizer,
    classnames: list[str],
    templates: list[str],
    shard: Shard | None = None,
    precision: str = "fp32",
):
    """(C, D) class embeddings, one per class, ensembled over ``templates``.

    euclidean (CLIP, open_clip): embed, normalise, average, normalise.
    lorentz (MERU): average the projected text features in the tangent space at the origin
    (before alpha and exp_map0), then lift the mean once.
    With a ``shard``, each process embeds the classes ``c % world == rank`` and all get all.
    """
    shard = shard or Shard()
    device = next(model.parameters()).device
    mine = [c for c in range(len(classnames)) if shard.mine(c)]
    parts = []
    for c in progress(mine, len(mine), f"embedding {len(templates)} prompts per class", shard):
        tokens = tokenizer([t.format(classnames[c]) for t in templates]).to(device)
        with encoding(model, precision):
            feats = model.text_features(tokens).float()
        parts.append((c, model.space.prototypes(feats[None], model.lift_text), None))
    return shard.gather(parts)[0]


def _accuracies(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    from torchmetrics.classification import MulticlassAccuracy

    c = scores.shape[1]
    top1 = MulticlassAccuracy(num_classes=c, top_k=1, average="micro")(scores, labels)
    top5 = MulticlassAccuracy(num_classes=c, top_k=min(5, c), average="micro")(scores, labels)
    # macro over the classes present (torchmetrics would count absent classes as 0 otherwise)
    per_class = MulticlassAccuracy(num_classes=c, top_k=1, average="none")(scores, labels)
    present = torch.bincount(labels, minlength=c) > 0
    return {
        "top1": 100.0 * float(top1),
        "top5": 100.0 * float(top5),
        "mean_per_class": 100.0 * float(per_class[present].mean()),
    }


def family_breakdown(
    predicted: torch.Tensor,
    labels: torch.Tensor,
    classnames: list[str],
    families: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Top-1 per class and per family, and the families where the model is at chance.

    predicted, labels: (N,) class indices. Returns ``{"per_class": {class: top1}}`` (percent,
    classes with at least one image, in label order) and, with ``families`` (``{class:
    family}``), ``"per_family": {family: top1}`` (over the family's images),
    ``"family_stats": {family: {"num_classes", "num_samples", "chance", "p_value",
    "at_chance"}}`` and ``"families_at_chance"`` (their names).

    At chance, honestly: a family of k classes is at chance when its top-1 is not above 1/k,
    what naming a random class OF THE FAMILY scores, at the 5% level of a one-sided exact
    binomial test (``p_value`` = P(at least that many correct | n images, 1/k)). The bar is
    deliberately the family's own chance, not 1/(all classes): a model that tells the families
    apart but no class inside one is at chance on it. Families of one class are never flagged.
    """
    from scipy.stats import binom

    c = len(classnames)
    counts = torch.bincount(labels, minlength=c)
    hits = torch.bincount(labels[predicted == labels], minlength=c)
    out: dict[str, Any] = {
        "per_class": {
            classnames[i]: 100.0 * hits[i].item() / counts[i].item()
            for i in range(c)
            if counts[i] > 0
        }
    }
    if families is None:
        return out
    members: dict[str, list[int]] = {}
    for i, name in enumerate(classnames):
        members.setdefault(families[name], []).append(i)
    per_family, stats = {}, {}
    for family, idx in members.items():
        n, k = int(counts[idx].sum()), int(hits[idx].sum())
        if n == 0:
            continue
        per_family[family] = 100.0 * k / n
        p_value = float(binom.sf(k - 1, n, 1.0 / len(idx)))
        stats[family] = {
            "num_classes": len(idx),
            "num_samples": n,
            "chance": 100.0 / len(idx),
            "p_value": p_value,
            "at_chance": len(idx) > 1 and p_value > CHANCE_LEVEL,
        }
    out.update(
        per_family=per_family,
        family_stats=stats,
        families_at_chance=[f for f, v in stats.items() if v["at_chance"]],
    )
    return out


# A model whose zero-shot answers cover at most this share of the classes (1 of 2 to 4, 2 of
# 10, 3 of 13) answers (nearly) the same for every image: a collapsed run, a frozen text side,
# or one that learned a shortcut that is the same on every test image (issue 23: clip_tiny on
# the digits world names "handwritten one" for all 200 held-out digits, its loss and spreads
# healthy). Its top-1 is then the share of those classes, not recognition.
FEW_CLASSES_SHARE = 0.25


def few_classes(result: dict[str, Any]) -> bool:
    """Whether a zero-shot result predicts too few classes (:data:`FEW_CLASSES_SHARE`)."""
    n, k = result.get("num_classes") or 0, result.get("num_predicted_classes")
    return n > 1 and k is not None and k <= max(1, int(n * FEW_CLASSES_SHARE))


def few_classes_words(result: dict[str, Any]) -> str:
    """``zero-shot predicts 1 of 10 classes`` (the health report's words)."""
    return (
        f"zero-shot predicts {result['num_predicted_classes']} of {result['num_classes']} classes"
    )


def few_classes_warning(result: dict[str, Any]) -> str:
    """The warning line for a result where :func:`few_classes` holds."""
    k, n = result["num_predicted_classes"], result["num_classes"]
    which = "one class" if k == 1 else f"only {k} of its {n} classes"
    return (
        f"warning: the model predicts {which} for all {result['num_samples']} images (of {n} "
        f"classes): top-1 is {'that class' if k == 1 else 'those classes'}' share, not "
        "recognition; check the run's health in its metrics.jsonl (collapse, frozen text side) "
        "and what its captions let it learn instead"
    )


def chance_warnings(result: dict[str, Any]) -> list[str]:
    """One warning line when the result predicts too few classes (:func:`few_classes`), and one
    per family where it is at chance (family_breakdown)."""
    lines = [few_classes_warning(result)] if few_classes(result) else []
    for family in result.get("families_at_chance") or []:
        v = result["family_stats"][family]
        lines.append(
            f"warning: zero-shot at chance on the family {family!r}: top-1 {result['per_family'][family]:.1f}"
            f"% over {v['num_samples']} images of its {v['num_classes']} classes, not above its "
            f"chance of {v['chance']:.1f}% (one-sided binomial test, p = {v['p_value']:.2g} > "
            f"{CHANCE_LEVEL})"
        )
    return lines


def _torchvision_dataset(spec: str, preprocess):
    """``torchvision:NAME:ROOT[:SPLIT]`` -> the dataset's evaluation split, never downloaded.

    torchvision's datasets name their split in two ways: ``train=`` (CIFAR, MNIST, ...) or
    ``split=`` (Food101, DTD, STL10, ImageNet, ...). Without SPLIT we take ``train=False`` or
    ``split="test"`` (``"val"`` for ImageNet), so a dataset whose default is its training split is
    never evaluated on it by accident.
    """
    import inspect

    import torchvision

    parts = spec.split(":")
    if len(parts) not in (3, 4) or not parts[1] or not parts[2]:
        raise DataError(f"{spec}: expected torchvision:NAME:ROOT[:SPLIT]")
    name, root = parts[1], parts[2]
    split = parts[3] if len(parts) == 4 else None
    cls = getattr(torchvision.datasets, name, None)
    if not isinstance(cls, type):
        raise DataError(f"{spec}: torchvision has no dataset {name!r}")
    params = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {"transform": preprocess}
    if "download" in params:
        kwargs["download"] = False
    if "split" in params:
        kwargs["split"] = split or ("val" if name == "ImageNet" else "test")
    elif "train" in params:
        if split not in (None, "train", "test"):
            raise DataError(f"{spec}: {name} has only the splits 'train' and 'test'")
        kwargs["train"] = split == "train"
    elif split is not None:
        raise DataError(f"{spec}: {name} has no split argument; drop ':{split}'")
    try:
        dataset = cls(root, **kwargs)
    except (RuntimeError, ValueError, FileNotFoundError) as err:  # "Dataset not found", bad split
        raise DataError(f"{spec}: {err} (hyvl never downloads datasets)") from err
    samples = file_samples(dataset)
    if samples is None:  # images held as arrays (MNIST, CIFAR, ...): nothing to decode
        return dataset
    # a dataset that reads image files: hyvl decodes them (bad ones skipped and counted,
    # 16-bit scaled), not torchvision's default loader
    files = ImageFiles(samples, preprocess)
    if hasattr(dataset, "classes"):
        files.classes = dataset.classes
    return files


def load_classification_data(
    data: str | Path,
    preprocess,
    classnames=None,
    batch_size: int = 64,
    image_size: int | None = None,
    tokenizer=None,
    shard: Shard | None = None,
    workers: int = 0,
):
    """((batches, total), classnames, folder) for an ImageFolder dir, ``torchvision:NAME:ROOT``,
    or shards with ``cls``. ``batches`` yields ``(batch_index, (images, labels))`` of this
    process's share (``shard``; all of them by default); ``total`` counts them when known.
    Nothing is ever downloaded."""
    shard = shard or Shard()
    spec = str(data)
    if spec.startswith("torchvision:"):
        dataset = _torchvision_dataset(spec, preprocess)
        names = classnames or list(dataset.classes)
        return shard.share(dataset, batch_size, workers), names, None
    path = Path(spec)
    if path.is_dir():
        from torchvision.datasets import ImageFolder

        from hyvl.evaluation.files import ImageFiles

        folder = ImageFolder(str(path))  # only its class folders and file list
        dataset = ImageFiles(folder.samples, preprocess)  # skips unusable images, counted
        dataset.classes = folder.classes
        if classnames is None:
            from hyvl.evaluation.classnames import folder_classnames

            classnames = folder_classnames(path, dataset.classes)
        if len(classnames) != len(dataset.classes):
            raise DataError(
                f"{path}: {len(dataset.classes)} class folders but {len(classnames)} class names"
            )
        return shard.share(dataset, batch_size, workers), classnames, path
    # shards with cls
    from hyvl.data.shards import check_source

    check_source(spec)  # a mistyped folder is "no such directory", not a shard question
    if classnames is None:
        raise DataError(f"{spec}: shards need --classnames (one name per line, label order)")
    from hyvl.data.pipeline import build_eval_loader

    loader = build_eval_loader(
        spec,
        batch_size=batch_size,
        image_size=image_size,
        tokenizer=tokenizer,
        rank=shard.rank,
        world=shard.world,
        workers=workers if shard.world == 1 else 0,
    )

    return (_LabelledBatches(loader, spec), None), classnames, None


class _LabelledBatches:
    """``(batch_index, (images, labels))`` of a shard loader; ``skipped()`` counts by reason."""

    def __init__(self, loader, spec: str):
        self.loader, self.spec = loader, spec

    def __iter__(self):
        for b in self.loader:
            if b.labels is None:
                raise DataError(f"{self.spec}: samples without a 'cls' label (e.g. {b.keys[0]})")
            yield b.index, (b.images, b.labels)

    def skipped(self) -> dict[str, int]:
        return self.loader.skipped()


@torch.no_grad()
def evaluate_zeroshot(
    model,
    preprocess,
    tokenizer,
    data: str | Path,
    *,
    classnames: list[str] | str | None = None,
    templates: str | list[str] | None = None,
    batch_size: int = 64,
    return_predictions: bool = False,
    shard: Shard | None = None,
    workers: int = 0,
    precision: str = "fp32",
    hierarchy=None,
) -> dict[str, Any]:
    """Zero-shot accuracy on ``data`` -> ``{"top1", "top5", "mean_per_class", "num_samples",
    "num_classes", "num_predicted_classes", "per_class"}`` in percent (docs/contract.md); the
    last count is of the classes predicted at least once (1 = the model answers one class for
    every image); ``per_class`` is ``{class: top1}``.

    ``hierarchy`` (a ``parent<TAB>child`` file or a
    :class:`~hyvl.evaluation.taxonomy.Hierarchy`; by default ``hierarchy.tsv`` in or beside an
    image folder, as the demo worlds ship it) adds ``per_family: {family: top1}``,
    ``families_at_chance`` and ``hierarchy`` (where it came from); see
    :func:`family_breakdown` for families and for what "at chance" means.

    ``shard`` (e.g. ``Shard.from_accelerate()`` under torchrun): the processes split the
    class texts and the image batches and every process returns the one-process result.
    ``workers``: DataLoader processes decoding images; ``precision``: ``fp32``, ``bf16`` or
    ``fp16`` autocast for the towers (embeddings and scores stay fp32)."""
    if isinstance(classnames, (str, Path)):
        classnames = read_lines(Path(classnames))
    shard = shard or Shard()
    (batches, total), names, folder = load_classification_data(
        data, preprocess, classnames, batch_size, model.image_size, tokenizer, shard, workers
    )
    if templates is None and folder is not None and classnames is None:
        from hyvl.evaluation.classnames import folder_templates

        templates = folder_templates(folder, sorted(p.name for p in folder.iterdir() if p.is_dir()))
    templates = resolve_templates(templates, folder)
    tree, tree_source = find_hierarchy(hierarchy, folder)
    families = None
    if tree is not None:
        try:
            families = class_families(tree, names, tree_source)
        except DataError as err:
            if hierarchy is not None:  # asked for: an error; found beside the data: a warning
                raise
            print(f"hyvl: warning: {err}; no per-family figures", file=sys.stderr)
            tree = None
    was_training = model.training
    model.eval()
    try:
        classifier = zeroshot_classifier(model, tokenizer, names, templates, shard, precision)
        feats, labels = embed_images(model, batches, total, shard=shard, precision=precision)
    finally:
        model.train(was_training)
    skipped = gather_counts(shard, batches.skipped()) if hasattr(batches, "skipped") else {}
    if labels is not None:
        feats, labels, _, dropped = drop_skipped(feats, labels)
        skipped = merge_counts(skipped, dropped)
    if labels is None or labels.numel() == 0:
        raise DataError(f"{data}: no usable samples to classify (skipped: {skipped or 'none'})")
    scores = similarity(model, feats, classifier)
    result: dict[str, Any] = _accuracies(scores, labels)
    predicted = scores.argmax(1)
    # A degenerate model (collapsed, or a frozen text side) predicts one class for everything:
    # its top-1 is then the share of that class, which can look like a result.
    result.update(
        num_samples=int(labels.numel()),
        num_classes=len(names),
        num_predicted_classes=int(predicted.unique().numel()),
        skipped=skipped,
    )
    result.update(family_breakdown(predicted, labels, names, families))
    if tree is not None:
        result["hierarchy"] = tree_source
    if return_predictions:
        result["_predictions"] = predicted
        result["_labels"] = labels
        result["_classnames"] = names
    return result
