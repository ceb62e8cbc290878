"""Linear probe: logistic regression on frozen image features (CLIP's protocol, as MERU runs it).

Features are the image tower's output before the projection (``model.image_features``), the
same Euclidean features for CLIP, MERU and HyCoCLIP (MERU evaluates its linear probe there too).
The classifier is scikit-learn's ``LogisticRegression`` (L-BFGS, ``max_iter=1000``,
``random_state=0``): a kept library rather than a hand-written torch solver, and the one MERU's
evaluation uses. Its cost C is searched as CLIP / MERU do: the grid 1e-6 .. 1e6 (x100 steps)
on the validation split, then four bisection steps in log space around the best; the classifier
is refit on train + val with the best C and scored on the test split by mean per-class accuracy.
Without a validation split (torchvision has none for most datasets) a seeded random 20% of the
train split is held out (MERU holds out 10-20% of each train split).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hyvl.evaluation import catalog
from hyvl.evaluation.discover import Found, find_classification
from hyvl.evaluation.embed import Shard
from hyvl.evaluation.files import merge_counts
from hyvl.evaluation.suite import NoUsableSamples, embed_found

COSTS = (1e-6, 1e-4, 1e-2, 1.0, 1e2, 1e4, 1e6)
VAL_FRACTION = 0.2


class _Backbone(torch.nn.Module):
    """The model with ``encode_image`` = the tower's features before the projection."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.image_size = model.image_size

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.image_features(images)


def mean_per_class(pred, labels, num_classes: int) -> float:
    """Mean per-class accuracy in percent over the classes present in ``labels``."""
    pred, labels = torch.as_tensor(pred), torch.as_tensor(labels)
    accs = [
        (pred[labels == c] == c).float().mean() for c in range(num_classes) if (labels == c).any()
    ]
    return 100.0 * float(torch.stack(accs).mean())


def fit_logistic(
    train_x, train_y, val_x, val_y, num_classes: int, costs=COSTS, steps: int = 4
) -> tuple[float, float]:
    """(best C, its validation mean per-class accuracy) by CLIP's two-pass search: the
    ``costs`` grid, then ``steps`` bisection steps in log space around the best."""
    from sklearn.linear_model import LogisticRegression

    def score(c: float) -> float:
        clf = LogisticRegression(C=c, max_iter=1000, random_state=0).fit(train_x, train_y)
        return mean_per_class(clf.predict(val_x), val_y, num_classes)

    best_c, best = max(((c, score(c)) for c in costs), key=lambda t: t[1])
    delta = 10.0
    for _ in range(steps):
        for c in (best_c / delta, best_c * delta):
            s = score(c)
            if s > best:
                best_c, best = c, s
        delta **= 0.5
    return best_c, best


def probe(train, val, test, num_classes: int, costs=COSTS, steps: int = 4) -> dict[str, Any]:
    """``train`` / ``val`` / ``test``: (features (N, D), labels (N,)); ``val`` None -> 20% of
    train held out (seeded). Returns the test accuracy, C and split sizes."""
    from sklearn.linear_model import LogisticRegression

    tx, ty = train[0].numpy(), train[1].numpy()
    if val is None:
        order = torch.randperm(len(ty), generator=torch.Generator().manual_seed(0)).numpy()
        cut = max(1, int(round(len(ty) * VAL_FRACTION)))
        vx, vy, tx, ty = tx[order[:cut]], ty[order[:cut]], tx[order[cut:]], ty[order[cut:]]
    else:
        vx, vy = val[0].numpy(), val[1].numpy()
    c, val_acc = fit_logistic(tx, ty, vx, vy, num_classes, costs, steps)
    import numpy as np

    final = LogisticRegression(C=c, max_iter=1000, random_state=0)
    final.fit(np.concatenate([tx, vx]), np.concatenate([ty, vy]))
    value = mean_per_class(final.predict(test[0].numpy()), test[1].numpy(), num_classes)
    return {
        "metric": catalog.METRIC,
        "value": value,
        "C": c,
        "val_accuracy": val_acc,
        "num_train": int(len(ty)),
        "num_val": int(len(vy)),
        "num_test": int(len(test[1])),
    }


def run_linprobe(
    model,
    preprocess,
    tokenizer,
    root: str | Path,
    *,
    datasets: list[str] | None = None,
    max_per_class: int | None = None,
    batch_size: int = 64,
    shard: Shard | None = None,
    workers: int = 0,
    precision: str = "fp32",
    costs=COSTS,
    steps: int = 4,
) -> dict[str, Any]:
    """Linear probe on every suite dataset under ``root`` with a train and a test split ->
    ``{"datasets": {NAME: {"metric", "value", "C", "skipped", ...}}, "mean", "skipped",
    "missing": {NAME: reason}}`` (``skipped``: unusable images by reason, over all splits).
    ``costs`` / ``steps``: the C grid and the bisection steps of :func:`fit_logistic`."""
    from hyvl.errors import DataError

    shard = shard or Shard()
    names = datasets or list(catalog.NAMES)
    unknown = [n for n in names if n not in catalog.NAMES]
    if unknown:
        raise DataError(
            f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(catalog.NAMES)}"
        )
    backbone = _Backbone(model)
    opts = dict(
        batch_size=batch_size,
        shard=shard,
        workers=workers,
        precision=precision,
        max_per_class=max_per_class,
    )
    out: dict[str, Any] = {"datasets": {}, "missing": {}}
    was_training = model.training
    model.eval()
    try:
        for name in names:
            info = catalog.info(name)
            splits: dict[str, Found | str] = {
                s: find_classification(root, info, preprocess, s) for s in ("train", "test")
            }
            bad = {s: f for s, f in splits.items() if isinstance(f, str)}
            if bad:
                out["missing"][name] = "; ".join(f"{s}: {why}" for s, why in bad.items())
                continue
            val = find_classification(root, info, preprocess, "val")
            if isinstance(val, str) or (
                val.layout != "torchvision" and val.path == splits["test"].path
            ):
                val = None  # no validation split of its own: held out from train
            feats, skipped = {}, {}
            try:
                for s, found in (*splits.items(), *([("val", val)] if val else [])):
                    found.name = f"{name} {s}"
                    x, y, skipped[s] = embed_found(backbone, preprocess, tokenizer, found, **opts)
                    feats[s] = (x, y)
            except NoUsableSamples as err:  # raised by every process alike
                out["missing"][name] = str(err)
                continue
            out["datasets"][name] = {
                **probe(
                    feats["train"], feats.get("val"), feats["test"], info.num_classes, costs, steps
                ),
                "layout": splits["test"].layout,
                "skipped": merge_counts(*skipped.values()),
                "skipped_by_split": {s: c for s, c in skipped.items() if c},
            }
    finally:
        model.train(was_training)
    values = [r["value"] for r in out["datasets"].values()]
    out["mean"] = sum(values) / len(values) if values else None
    out["skipped"] = merge_counts(*(r["skipped"] for r in out["datasets"].values()))
    return out
