"""Hierarchy metrics of zero-shot predictions over a class hierarchy (HyCoCLIP Sec. 5).

For a prediction p of true class t, with A(x) the ancestor set of x in the hierarchy:

* TIE (tree-induced error): length of the shortest path between p and t in the undirected graph.
* LCA: |A(p) \\ A(t)|, the steps from p up to the lowest common ancestor.
* Jaccard |A(p) & A(t)| / |A(p) | A(t)|, hierarchical precision |A(p) & A(t)| / |A(p)| and
  recall |A(p) & A(t)| / |A(t)|.

By default A(x) includes x itself, so a correct prediction scores TIE 0, LCA 0 and 1 on the
rest, and two different classes with the same ancestors are not a perfect match.
``leaf_included=False`` reproduces HyCoCLIP's published variant (ancestors without the leaf;
its LCA adds 1 for the leaf, so even a correct prediction has LCA 1) for comparison.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hyvl.errors import DataError
from hyvl.evaluation.taxonomy import Hierarchy

__all__ = ["Hierarchy", "convert_isa", "evaluate_hierarchy", "hierarchy_metrics"]


def hierarchy_metrics(
    predicted: list[str], true: list[str], hierarchy: Hierarchy, leaf_included: bool = True
) -> dict[str, Any]:
    """Mean TIE, LCA, Jaccard, hierarchical precision and recall over the predictions."""
    missing = sorted({c for c in set(predicted) | set(true) if c not in hierarchy})
    if missing:
        raise DataError(f"hierarchy: classes not in the hierarchy: {missing[:5]}")
    totals = dict.fromkeys(("TIE", "LCA", "jaccard", "hier_precision", "hier_recall"), 0.0)
    for p, t in zip(predicted, true, strict=True):
        ap, at = set(hierarchy.ancestors(p)), set(hierarchy.ancestors(t))
        if leaf_included:
            ap.add(p)
            at.add(t)
        inter = len(ap & at)
        totals["TIE"] += hierarchy.path_length(p, t)
        totals["LCA"] += len(ap) - inter + (0 if leaf_included else 1)
        totals["jaccard"] += inter / len(ap | at) if ap | at else 1.0
        totals["hier_precision"] += inter / len(ap) if ap else 1.0
        totals["hier_recall"] += inter / len(at) if at else 1.0
    n = max(1, len(predicted))
    out: dict[str, Any] = {k: v / n for k, v in totals.items()}
    out.update(num_samples=len(predicted), leaf_included=leaf_included)
    return out


def convert_isa(
    isa_path: str | Path, words_path: str | Path | None = None
) -> list[tuple[str, str]]:
    """WordNet-style is-a list (``parent child`` ids per line, e.g. ImageNet's
    ``wordnet.is_a.txt``) -> named edges, using ``words.txt`` (``id<TAB>name, synonyms``)."""
    names: dict[str, str] = {}
    if words_path:
        for line in Path(words_path).read_text().splitlines():
            if "\t" in line:
                wnid, words = line.split("\t", 1)
                names[wnid.strip()] = words.split(",")[0].strip()
    edges = []
    for n, line in enumerate(Path(isa_path).read_text().splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2:
            raise DataError(f"{isa_path}:{n}: expected 'parent child', got {line!r}")
        edges.append((names.get(parts[0], parts[0]), names.get(parts[1], parts[1])))
    return edges


def _class_folder_names(data) -> list[str] | None:
    path = Path(str(data))
    if not path.is_dir():
        return None
    return sorted(p.name for p in path.iterdir() if p.is_dir())


def evaluate_hierarchy(
    model,
    preprocess,
    tokenizer,
    data,
    hierarchy: str | Path | Hierarchy,
    *,
    leaf_included: bool = True,
    **zeroshot_kwargs,
) -> dict[str, Any]:
    """Zero-shot predictions on ``data`` scored against ``hierarchy`` (class names as nodes)."""
    from hyvl.evaluation.zeroshot import evaluate_zeroshot

    tree = hierarchy if isinstance(hierarchy, Hierarchy) else Hierarchy.from_tsv(hierarchy)
    zs = evaluate_zeroshot(
        model, preprocess, tokenizer, data, return_predictions=True, **zeroshot_kwargs
    )
    names = zs["_classnames"]
    folders = _class_folder_names(data)
    if (
        folders is not None
        and len(folders) == len(names)
        and not all(n in tree for n in names)
        and all(f in tree for f in folders)
    ):  # a tree over the folder ids (WordNet ids), whose prompts used the shipped names
        names = folders
    predicted = [names[i] for i in zs["_predictions"].tolist()]
    true = [names[i] for i in zs["_labels"].tolist()]
    return {**hierarchy_metrics(predicted, true, tree, leaf_included), "skipped": zs["skipped"]}
