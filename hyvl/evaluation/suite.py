"""The papers' evaluation in one call: zero-shot on the 20 datasets, retrieval, hierarchy.

:func:`run_suite` finds each dataset under a root (:mod:`hyvl.evaluation.discover`), embeds
every image once (a progress bar per dataset), builds the class prototypes from the dataset's
class names and prompts (cached per checkpoint and prompt set), scores mean per-class accuracy
as both papers do, and puts the published numbers of the same model size beside it. ImageNet's
predictions are also scored on its WordNet tree (HyCoCLIP's hierarchical metrics, from the same
embeddings); COCO / Flickr30k go through :func:`~hyvl.evaluation.evaluate_retrieval`.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import torch

from hyvl.errors import DataError
from hyvl.evaluation import catalog
from hyvl.evaluation.discover import (
    Found,
    find_classification,
    find_custom,
    find_retrieval,
    karpathy_to_coco,
    labels_of,
)
from hyvl.evaluation.embed import Shard, embed_images, similarity
from hyvl.evaluation.files import drop_skipped, gather_counts, merge_counts
from hyvl.evaluation.hierarchy import Hierarchy, hierarchy_metrics
from hyvl.evaluation.protocache import model_hash, prototypes
from hyvl.evaluation.templates import read_lines
from hyvl.evaluation.zeroshot import _accuracies

# timm names of the papers' towers -> the size their tables name
SIZES = {
    "vit_small_mocov3_patch16_224": "vit_s",
    "vit_base_patch16_224": "vit_b",
    "vit_large_patch16_224": "vit_l",
}
HIERARCHY_METRICS = ("TIE", "LCA", "jaccard", "hier_precision", "hier_recall")


def model_size(model) -> str | None:
    """vit_s / vit_b / vit_l for the papers' architectures, None for anything else."""
    vision = model.config.vision
    if vision.width is not None or vision.depth is not None:
        return None
    return SIZES.get(vision.timm_name)


class NoUsableSamples(DataError):
    """Every image of a dataset was skipped: the dataset is listed as not evaluated."""


def first_per_class(labels: list[int], n: int) -> list[int]:
    """Indices of the first ``n`` samples of every class, in dataset order."""
    seen: dict[int, int] = {}
    keep = []
    for i, y in enumerate(labels):
        if seen.get(y, 0) < n:
            seen[y] = seen.get(y, 0) + 1
            keep.append(i)
    return keep


def _capped_stream(batches, n: int):
    """Shard batches with at most ``n`` rows of each class kept, counted in this process's
    reading order (after the gather the first ``n`` overall are kept: a row among the first n
    of its class overall is among the first n of its class in its own process's share)."""
    seen: dict[int, int] = {}
    for index, (images, labels) in batches:
        keep = []
        for r, y in enumerate(labels.tolist()):
            if seen.get(y, 0) < n:
                seen[y] = seen.get(y, 0) + 1
                keep.append(r)
        if keep:
            yield index, (images[keep], labels[keep])


def embed_found(
    model,
    preprocess,
    tokenizer,
    found: Found,
    *,
    batch_size,
    shard,
    workers,
    precision,
    max_per_class,
):
    """((N, D) image embeddings, (N,) labels, {reason: count} of the images skipped) of a found
    dataset, each image embedded once. Unusable images (damaged, missing, too large) are
    skipped and counted, the same on every process; none usable raises :class:`DataError`."""
    stream = None
    if found.dataset is not None:
        dataset = found.dataset
        if max_per_class:
            labels = labels_of(dataset)
            if labels is None:  # this dataset keeps no label list: read them (decodes images)
                labels = [int(dataset[i][1]) for i in range(len(dataset))]
            dataset = torch.utils.data.Subset(dataset, first_per_class(labels, max_per_class))
        batches, total = shard.share(dataset, batch_size, workers)
    else:
        from hyvl.evaluation.zeroshot import load_classification_data

        (stream, total), _, _ = load_classification_data(
            found.shards,
            preprocess,
            found.classnames,
            batch_size,
            model.image_size,
            tokenizer,
            shard,
            workers,
        )
        batches = _capped_stream(stream, max_per_class) if max_per_class else stream
    feats, labels = embed_images(model, batches, total, found.name, shard, precision)
    # shards count what their loader skipped; ImageFiles rows of skipped images carry a
    # negative label (the same rows on every process after the gather)
    skipped = gather_counts(shard, stream.skipped()) if stream is not None else {}
    if labels is not None:
        feats, labels, _, dropped = drop_skipped(feats, labels)
        skipped = merge_counts(skipped, dropped)
    if labels is None or labels.numel() == 0:
        raise NoUsableSamples(f"{found.path}: no usable samples (skipped: {skipped or 'none'})")
    if max_per_class and found.dataset is None:
        keep = torch.tensor(first_per_class(labels.tolist(), max_per_class), dtype=torch.long)
        feats, labels = feats[keep], labels[keep]
    return feats, labels, skipped


def _override(spec: dict[str, str] | None, name: str) -> list[str] | None:
    """A user's class names / prompts for ``name``: ``{name: file}`` or ``{"*": directory}``
    holding ``name.txt``."""
    if not spec:
        return None
    if name in spec:
        return read_lines(Path(spec[name]))
    folder = spec.get("*")
    if folder and (Path(folder) / f"{name}.txt").is_file():
        return read_lines(Path(folder) / f"{name}.txt")
    return None


def _classification(model, preprocess, tokenizer, found: Found, opts: dict, size, key):
    feats, labels, skipped = embed_found(model, preprocess, tokenizer, found, **opts["embed"])
    protos = prototypes(
        model,
        tokenizer,
        found.name,
        found.classnames,
        found.templates,
        key=key,
        cache_dir=opts["cache_dir"],
        shard=opts["embed"]["shard"],
        precision=opts["embed"]["precision"],
    )
    scores = similarity(model, feats, protos)
    acc = _accuracies(scores, labels)
    row: dict[str, Any] = {
        "metric": catalog.METRIC,
        "value": acc["mean_per_class"],
        "num_samples": int(labels.numel()),
        "skipped": skipped,
        "published": catalog.published_for("zeroshot", found.name, None, size)
        if found.name in catalog.NAMES
        else {},
        "top1": acc["top1"],
        "num_classes": len(found.classnames),
        "num_prompts": len(found.templates),
        "layout": found.layout,
        "path": str(found.path),
    }
    return row, scores.argmax(1), labels


def _hierarchy(
    found: Found, predicted: torch.Tensor, labels: torch.Tensor, size: str | None = None
) -> dict:
    """HyCoCLIP's hierarchical metrics of ImageNet's predictions on its WordNet tree (ancestor
    sets without the class itself, as HyCoCLIP publishes them), with the published numbers of
    model ``size`` per metric."""
    tree = Hierarchy.from_tsv(catalog.imagenet_hierarchy_path())
    ids = found.ids
    res = hierarchy_metrics(
        [ids[i] for i in predicted.tolist()], [ids[i] for i in labels.tolist()], tree, False
    )
    published = {
        m: catalog.published_for("hierarchy", "imagenet", m, size) for m in HIERARCHY_METRICS
    }
    return {**res, "published": {m: p for m, p in published.items() if p}}


def _retrieval(model, preprocess, tokenizer, root, name, opts, size) -> dict | str:
    from hyvl.evaluation.retrieval import evaluate_retrieval

    where = find_retrieval(root, name)
    if isinstance(where, str):
        return where
    captions, images, kind = where
    e = opts["embed"]
    with tempfile.TemporaryDirectory() as tmp:
        if kind == "karpathy test":
            captions = karpathy_to_coco(captions, Path(tmp) / "test.json")
        res = evaluate_retrieval(
            model,
            preprocess,
            tokenizer,
            captions,
            images,
            batch_size=e["batch_size"],
            shard=e["shard"],
            workers=e["workers"],
            precision=e["precision"],
        )
    published = {
        f"{d} R@{k}": catalog.published_for("retrieval", name, f"{d} R@{k}", size)
        for d in ("image_to_text", "text_to_image")
        for k in (1, 5, 10)
    }
    return {
        **res,
        "split": kind,
        "path": str(captions if kind != "karpathy test" else where[0]),
        "published": {k: v for k, v in published.items() if v},
    }


def _sugarcrepe(model, preprocess, tokenizer, root, opts) -> dict | str:
    """SugarCrepe under ``root/sugarcrepe`` (:func:`~hyvl.evaluation.sugarcrepe.find_layout`),
    scored by the model's own similarity, or why it is not evaluated."""
    from hyvl.evaluation.sugarcrepe import evaluate_sugarcrepe, find_layout

    folder = Path(root) / "sugarcrepe"
    where = find_layout(folder)
    if isinstance(where, str):
        return where
    e = opts["embed"]
    try:
        res = evaluate_sugarcrepe(
            model,
            preprocess,
            tokenizer,
            folder,
            batch_size=e["batch_size"],
            shard=e["shard"],
            workers=e["workers"],
            precision=e["precision"],
        )
    except DataError as err:  # e.g. no usable image: listed, not fatal (as the other rows)
        return str(err)
    return {**res, "path": str(where[0]), "images": str(where[1])}


def run_suite(
    model,
    preprocess,
    tokenizer,
    root: str | Path,
    *,
    datasets: list[str] | None = None,
    classnames: dict[str, str] | None = None,
    prompts: dict[str, str] | None = None,
    max_per_class: int | None = None,
    compare_size: str | None = None,
    cache_dir: str | Path | None = None,
    batch_size: int = 64,
    shard: Shard | None = None,
    workers: int = 0,
    precision: str = "fp32",
    log=print,
) -> dict[str, Any]:
    """Every suite dataset found under ``root`` -> ``{"datasets": {NAME: {"metric", "value",
    "num_samples", "published", ...}}, "mean", "mean_over", "retrieval": {...}, "hierarchy":
    {...}, "missing": {NAME: reason}}`` (percent; hierarchy metrics as
    :func:`~hyvl.evaluation.hierarchy.hierarchy_metrics`).

    ``datasets``: names to run (suite names, ``coco`` / ``flickr30k``, or extra folders under
    ``root``: ImageFolders with a ``classnames.txt``, or a COCO-format ``captions.json`` +
    ``images/`` for retrieval); all by default. ``classnames`` / ``prompts``:
    per-dataset overrides (``{name: file}``, or ``{"*": dir}`` with ``NAME.txt`` files).
    ``compare_size``: the model size whose published numbers are shown (default: the model's).
    """
    shard = shard or Shard()
    size = compare_size or model_size(model)
    known = catalog.NAMES + catalog.RETRIEVAL + catalog.COMPOSITIONAL
    custom, custom_skipped = find_custom(root, known, preprocess)
    # other folders with a COCO-format captions.json + images/ (hyvl data demo's retrieval/)
    extra_retrieval = (
        [
            p.name
            for p in sorted(Path(root).iterdir())
            if p.is_dir() and p.name not in known and (p / "captions.json").is_file()
        ]
        if Path(root).is_dir()
        else []
    )
    retrieval = (*catalog.RETRIEVAL, *extra_retrieval)
    wanted = (
        list(datasets)
        if datasets
        else [*catalog.NAMES, *custom, *retrieval, *catalog.COMPOSITIONAL]
    )
    unknown = [
        n
        for n in wanted
        if n not in known and n not in custom and n not in custom_skipped and n not in retrieval
    ]
    if unknown:
        raise DataError(
            f"unknown dataset(s) {', '.join(unknown)}: not a suite dataset "
            f"({', '.join(known)}) nor a folder with classnames.txt under {root}"
        )
    opts = {
        "cache_dir": cache_dir,
        "embed": dict(
            batch_size=batch_size,
            shard=shard,
            workers=workers,
            precision=precision,
            max_per_class=max_per_class,
        ),
    }
    out: dict[str, Any] = {
        "root": str(root),
        "compare_size": size,
        "datasets": {},
        "retrieval": {},
        "hierarchy": {},
        "compositional": {},
        "missing": {},
    }
    was_training = model.training
    model.eval()
    key = model_hash(model)
    try:
        for name in wanted:
            if name in custom_skipped:
                out["missing"][name] = custom_skipped[name]
                continue
            if name in catalog.COMPOSITIONAL:
                res = _sugarcrepe(model, preprocess, tokenizer, root, opts)
                if isinstance(res, str):
                    out["missing"][name] = res
                else:
                    log(f"{name}: {res['path']}")
                    out["compositional"][name] = res
                continue
            if name in retrieval:
                res = _retrieval(model, preprocess, tokenizer, root, name, opts, size)
                if isinstance(res, str):
                    out["missing"][name] = res
                else:
                    out["retrieval"][name] = res
                continue
            if name in custom:
                found = custom[name]
            else:
                found = find_classification(root, catalog.info(name), preprocess)
                if isinstance(found, str):
                    out["missing"][name] = found
                    continue
            names = _override(classnames, name) or found.classnames
            if len(names) != len(found.classnames):
                raise DataError(
                    f"{name}: {len(names)} class names given, the dataset has "
                    f"{len(found.classnames)} classes"
                )
            found.classnames = names
            found.templates = _override(prompts, name) or found.templates
            log(f"{name}: {found.layout} at {found.path}")
            try:
                row, predicted, labels = _classification(
                    model, preprocess, tokenizer, found, opts, size, key
                )
            except NoUsableSamples as err:  # raised by every process alike (after the gather)
                out["missing"][name] = str(err)
                continue
            out["datasets"][name] = row
            if name == "imagenet" and found.ids is not None:
                out["hierarchy"]["imagenet"] = _hierarchy(found, predicted, labels, size)
    finally:
        model.train(was_training)
    values = {n: r["value"] for n, r in out["datasets"].items()}
    out["mean"] = sum(values.values()) / len(values) if values else None
    out["mean_over"] = list(values)
    rows = [*out["datasets"].values(), *out["retrieval"].values(), *out["compositional"].values()]
    out["skipped"] = merge_counts(*(r["skipped"] for r in rows))
    return out


#: the methods whose published numbers the table shows: the first three always, the newer
#: ones where a source gives a number for any row of the run
METHODS = ("clip", "meru", "hycoclip")
NEWER_METHODS = ("uncha", "phyclip", "atmg")


def _published_rows(res: dict):
    yield from (r["published"] for r in res["datasets"].values())
    for kind in ("retrieval", "hierarchy"):
        for r in res.get(kind, {}).values():
            yield from r["published"].values()


def methods(res: dict) -> tuple[str, ...]:
    """The published columns of ``res``'s table (see :data:`METHODS`)."""
    given = {m for p in _published_rows(res) for m in p if m in NEWER_METHODS}
    return METHODS + tuple(m for m in NEWER_METHODS if m in given)


def table_rows(res: dict) -> list[dict[str, Any]]:
    """One row per (dataset, metric) with the published CLIP / MERU / HyCoCLIP beside it (and
    UNCHA / PHyCLIP / ATMG where a source gives them)."""
    shown = methods(res)

    def pub(p: dict) -> dict:
        return {m: p.get(m, "-") for m in shown}

    rows = []
    for name, r in res["datasets"].items():
        rows.append(
            {
                "dataset": name,
                "metric": r["metric"],
                "value": r["value"],
                "n": r["num_samples"],
                **pub(r["published"]),
            }
        )
    if res["datasets"]:
        rows.append(
            {
                "dataset": "mean",
                "metric": catalog.METRIC,
                "value": res["mean"],
                "n": len(res["mean_over"]),
                **pub({}),
            }
        )
    for name, r in res["retrieval"].items():
        for d, short in (("image_to_text", "I->T"), ("text_to_image", "T->I")):
            for k in (1, 5, 10):
                p = r["published"].get(f"{d} R@{k}", {})
                other_split = p.get("split", r["split"]) != r["split"]  # see footnotes()
                rows.append(
                    {
                        "dataset": name,
                        "metric": f"{short} R@{k}" + (" *" if other_split else ""),
                        "value": r[d][f"R@{k}"],
                        "n": r["num_images"],
                        **pub(p),
                    }
                )
    for name, r in res.get("compositional", {}).items():
        for subset, v in r["subsets"].items():
            rows.append(
                {
                    "dataset": name,
                    "metric": f"{subset} acc",
                    "value": v["accuracy"],
                    "n": v["num_pairs"],
                    **pub({}),
                }
            )
        rows.append(
            {
                "dataset": name,
                "metric": "mean (pooled)",
                "value": r["mean"],
                "n": sum(v["num_pairs"] for v in r["subsets"].values()),
                **pub({}),
            }
        )
    for name, r in res["hierarchy"].items():
        for m in HIERARCHY_METRICS:
            rows.append(
                {
                    "dataset": f"{name} (WordNet)",
                    "metric": m,
                    "value": r[m],
                    "n": r["num_samples"],
                    **pub(r["published"].get(m, {})),
                }
            )
    return rows


def footnotes(res: dict) -> list[str]:
    """Why a row's published numbers are not on the same images as the user's: the rows whose
    metric ends in " *" (a retrieval split other than the one the source measured on)."""
    notes = []
    for name, r in res["retrieval"].items():
        splits = {p["split"] for p in r["published"].values() if p.get("split")}
        for split in sorted(splits - {r["split"]}):
            notes.append(
                f"* {name}: the published numbers are on {split}, this run on {r['split']} "
                "(different images)"
            )
    return notes


def markdown(res: dict) -> str:
    """The table as GitHub markdown, with the missing datasets and the sources below it."""
    rows = table_rows(res)
    head = ["dataset", "metric", "value", "n", *methods(res)]
    fmt = lambda v: f"{v:.2f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(fmt(r[h]) for h in head) + " |" for r in rows]
    size = res.get("compare_size") or "none (not a ViT-S/B/L of the papers)"
    lines += ["", f"Published numbers at model size: {size}."]
    sources = sorted(
        {v for p in _published_rows(res) for k, v in p.items() if k.startswith("source")}
    )
    lines += footnotes(res)
    lines += [f"Source: {s}" for s in sources]
    if res.get("skipped"):
        detail = ", ".join(f"{k} {v}" for k, v in res["skipped"].items())
        lines += ["", f"Skipped images: {sum(res['skipped'].values())} ({detail})."]
    if res["missing"]:
        lines += ["", "Not evaluated:", ""]
        lines += [f"- {n}: {why}" for n, why in res["missing"].items()]
    return "\n".join(lines) + "\n"
