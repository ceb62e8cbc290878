"""SugarCrepe (Hsieh et al., NeurIPS 2023 Datasets and Benchmarks): pick the true caption of an
image over a hard negative that differs from it by one compositional edit.

The released benchmark (github.com/RAIVNLab/sugar-crepe, folder ``data/``) is seven JSON files,
one per kind of edit: ``replace_obj``, ``replace_att``, ``replace_rel``, ``swap_obj``,
``swap_att``, ``add_obj``, ``add_att``. Each maps an id to ``{"filename", "caption",
"negative_caption"}``; ``filename`` is an image of COCO val2017. A pair counts as right when the
model scores the image higher with ``caption`` than with ``negative_caption`` (a tie counts as
wrong, as in the authors' evaluation); a subset's accuracy is the share of its pairs that are
right. The overall ``mean`` is pooled over the pairs (correct pairs / all pairs), as PHyCLIP's
released SugarCrepe script computes its "overall" number.

The score is the model's own similarity: ``-distance`` for a Lorentz model (MERU, HyCoCLIP),
cosine for CLIP. ``score="cone"`` (Lorentz models only) ranks by entailment instead: how far
inside the caption's entailment cone the image lies, ``half_aperture(text) - oxy_angle(text,
image)`` (MERU's cone, Eq. 9-10); reported as its own result, never mixed with the distance one.

Nothing is downloaded: the JSON files and the images must be on disk.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from hyvl.errors import DataError
from hyvl.evaluation.embed import Shard, embed_images, embed_texts, similarity
from hyvl.evaluation.files import ImageFiles, drop_skipped

# In the order of the SugarCrepe paper's table (replace, swap, add).
SUBSETS = (
    "replace_obj",
    "replace_att",
    "replace_rel",
    "swap_obj",
    "swap_att",
    "add_obj",
    "add_att",
)
SCORES = ("similarity", "cone")
FIELDS = ("filename", "caption", "negative_caption")


def find_layout(root: str | Path, images: str | Path | None = None) -> tuple[Path, Path] | str:
    """``(folder of the subset JSONs, folder of the images)`` under ``root``, or why not.

    The JSON files are looked for in ``root`` and in ``root/data`` (a clone of the authors'
    repository); the images in ``images`` when given, else ``root/val2017``,
    ``root/images/val2017``, ``root/images``, then ``ROOT/coco/val2017`` beside ``root`` (where
    ``hyvl eval suite`` finds COCO's images).
    """
    root = Path(root)
    if not root.is_dir():
        return f"no folder {root}"
    data = next(
        (d for d in (root, root / "data") if any((d / f"{s}.json").is_file() for s in SUBSETS)),
        None,
    )
    if data is None:
        return f"{root}: none of {', '.join(f'{s}.json' for s in SUBSETS)} (nor under data/)"
    if images is not None:
        if not Path(images).is_dir():
            return f"no image folder {images}"
        return data, Path(images)
    tried = [
        root / "val2017",
        root / "images" / "val2017",
        root / "images",
        root.parent / "coco" / "val2017",
    ]
    found = next((p for p in tried if p.is_dir()), None)
    if found is None:
        return f"{root}: no image folder (looked for {', '.join(str(p) for p in tried)})"
    return data, found


def read_subset(path: Path) -> list[tuple[str, str, str]]:
    """``(filename, caption, negative_caption)`` of every pair of one subset file, in id order."""
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a SugarCrepe subset file ({err})") from err
    if not isinstance(entries, dict):
        raise DataError(f"{path}: expected an object of id -> pair, got {type(entries).__name__}")
    pairs = []
    for key, entry in entries.items():
        if not isinstance(entry, dict) or any(not isinstance(entry.get(f), str) for f in FIELDS):
            raise DataError(f"{path}: entry {key!r} lacks one of {', '.join(FIELDS)}")
        pairs.append(tuple(entry[f] for f in FIELDS))
    return pairs


def _pair_scores(model, images, texts, pos, neg, owner, score: str, min_radius: float):
    """(P,), (P,) scores of each pair's positive and negative caption with its image."""
    if score == "similarity":
        # grouped by image, through the same pairwise similarity the other evaluations rank by
        out_pos, out_neg = torch.empty(len(pos)), torch.empty(len(pos))
        order = torch.argsort(owner, stable=True)
        starts = torch.searchsorted(owner[order], torch.unique(owner))
        bounds = [*starts.tolist(), len(order)]
        for a, b in zip(bounds[:-1], bounds[1:], strict=True):
            rows = order[a:b]
            i = int(owner[rows[0]])
            s = similarity(model, images[i : i + 1], texts[torch.cat([pos[rows], neg[rows]])])[0]
            out_pos[rows], out_neg[rows] = s[: len(rows)], s[len(rows) :]
        return out_pos, out_neg
    curv = model.curv.detach().float()
    x = images[owner]

    def inside(t):  # how far inside the caption's cone the image lies (radians)
        # a product space: the margin averaged over its factors
        return model.space.cone_margin(texts[t], x, curv, min_radius)

    return inside(pos), inside(neg)


@torch.no_grad()
def evaluate_sugarcrepe(
    model,
    preprocess,
    tokenizer,
    root: str | Path,
    *,
    images: str | Path | None = None,
    subsets: list[str] | tuple[str, ...] | None = None,
    score: str = "similarity",
    min_radius: float = 0.1,
    batch_size: int = 64,
    shard: Shard | None = None,
    workers: int = 0,
    precision: str = "fp32",
) -> dict[str, Any]:
    """SugarCrepe accuracy -> ``{"subsets": {NAME: {"accuracy", "num_pairs"}}, "mean",
    "score", "skipped": {reason: count}, "missing": {NAME: why}}`` (percent).

    ``root``: the folder of the seven JSON files (or a clone of the authors' repository);
    ``images``: COCO val2017 (found beside them by default, see :func:`find_layout`).
    ``subsets``: the ones to run (all by default); a subset whose file is absent is listed in
    ``"missing"``, and none present is an error. Each image is embedded once (a progress bar),
    each distinct caption once. An image that is missing, damaged or too large is skipped and
    counted; its pairs are left out of ``num_pairs``. ``score``: ``"similarity"`` (the model's
    own) or ``"cone"`` (entailment; Lorentz models). ``min_radius``: the cone's K (MERU's 0.1).
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {', '.join(SCORES)}, got {score!r}")
    if score == "cone" and not model.space.hyperbolic:
        raise DataError(
            "score 'cone' needs a hyperbolic model (entailment cones); this one is CLIP"
        )
    wanted = list(subsets) if subsets else list(SUBSETS)
    unknown = [s for s in wanted if s not in SUBSETS]
    if unknown:
        raise DataError(
            f"unknown SugarCrepe subset(s) {', '.join(unknown)}; known: {', '.join(SUBSETS)}"
        )
    where = find_layout(root, images)
    if isinstance(where, str):
        raise DataError(where)
    data, image_dir = where
    pairs: dict[str, list[tuple[str, str, str]]] = {}
    missing = {}
    for name in wanted:
        path = data / f"{name}.json"
        if path.is_file():
            pairs[name] = read_subset(path)
        else:
            missing[name] = f"no file {path}"
    if not pairs:
        raise DataError(f"{data}: no SugarCrepe subset file ({', '.join(missing.values())})")

    files = sorted({f for ps in pairs.values() for f, _, _ in ps})
    texts = sorted({t for ps in pairs.values() for _, p, n in ps for t in (p, n)})
    shard = shard or Shard()
    was_training = model.training
    model.eval()
    try:
        dataset = ImageFiles([(image_dir / f, i) for i, f in enumerate(files)], preprocess)
        batches, total = shard.share(dataset, batch_size, workers)
        feats, labels = embed_images(model, batches, total, "sugarcrepe images", shard, precision)
        text_emb = embed_texts(model, tokenizer, texts, max(batch_size, 256), "sugarcrepe captions",
                               shard, precision)  # fmt: skip
    finally:
        model.train(was_training)
    feats, labels, _, skipped = drop_skipped(feats, labels)
    if labels.numel() == 0:
        raise DataError(f"{image_dir}: none of the {len(files)} SugarCrepe images is usable "
                        f"(skipped: {skipped})")  # fmt: skip
    row_of = {files[i]: r for r, i in enumerate(labels.tolist())}
    text_of = {t: i for i, t in enumerate(texts)}

    out: dict[str, Any] = {"subsets": {}, "score": score}
    correct_all = count_all = 0
    for name in SUBSETS:
        if name not in pairs:
            continue
        kept = [(row_of[f], text_of[p], text_of[n]) for f, p, n in pairs[name] if f in row_of]
        if not kept:
            why = f"no usable image among its {len(pairs[name])} pairs" if pairs[name] else None
            missing[name] = why or f"{data / f'{name}.json'}: no pairs"
            continue
        owner, pos, neg = (torch.tensor(c, dtype=torch.long) for c in zip(*kept, strict=True))
        s_pos, s_neg = _pair_scores(model, feats, text_emb, pos, neg, owner, score, min_radius)
        correct = int((s_pos > s_neg).sum())
        out["subsets"][name] = {"accuracy": 100.0 * correct / len(kept), "num_pairs": len(kept)}
        correct_all, count_all = correct_all + correct, count_all + len(kept)
    out["mean"] = 100.0 * correct_all / count_all if count_all else None
    out["skipped"] = skipped
    out["missing"] = {n: missing[n] for n in wanted if n in missing}
    return out


def table_rows(res: dict) -> list[dict[str, Any]]:
    """One row per subset and the pooled mean."""
    rows = [
        {"subset": n, "accuracy %": r["accuracy"], "pairs": r["num_pairs"]}
        for n, r in res["subsets"].items()
    ]
    total = sum(r["num_pairs"] for r in res["subsets"].values())
    return [*rows, {"subset": "mean (pooled)", "accuracy %": res["mean"], "pairs": total}]
