"""Image folders for evaluation and indexing: unusable files are skipped and counted.

A damaged, missing or oversized image (:class:`hyvl.images.BadImage`) must not stop an
evaluation, and must not shift the rows either: several processes split the batches by
position (:class:`~hyvl.evaluation.embed.Shard`). So an unusable file yields a blank image and
a negative label that names the reason; the rows are embedded with their batch (a few wasted
forward rows) and :func:`drop_skipped` removes them after the gather, on every process alike.
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import torch
from PIL import Image

from hyvl.images import BadImage, open_rgb

log = logging.getLogger(__name__)

SKIP_REASONS = ("missing_image", "corrupt_image", "image_too_large")
LOG_FIRST = 5  # per dataset (and loader worker): the counts carry the rest


class ImageFiles(torch.utils.data.Dataset):
    """``(path, label)`` pairs (label >= 0) -> ``(image (3, H, W), label)``; an unusable image
    -> ``(blank image, -1 - SKIP_REASONS.index(reason))``."""

    def __init__(self, samples: list[tuple[str | Path, int]], preprocess):
        self.samples, self.preprocess = samples, preprocess
        self._blank = None
        self._logged = 0

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        path, label = self.samples[i]
        try:
            return self.preprocess(open_rgb(path)), label
        except BadImage as err:
            self._logged += 1
            if self._logged <= LOG_FIRST:
                more = (
                    " (further skips are counted, not logged)" if self._logged == LOG_FIRST else ""
                )
                log.warning("skipping %s%s", err, more)
            if self._blank is None:  # the transform's output size, whatever the transform
                self._blank = torch.zeros_like(self.preprocess(Image.new("RGB", (8, 8))))
            return self._blank, -1 - SKIP_REASONS.index(err.reason)


def drop_skipped(rows: torch.Tensor, labels: torch.Tensor):
    """Rows of an :class:`ImageFiles` embedding -> ``(kept rows, their labels, kept mask (N,),
    {reason: count})``."""
    keep = labels >= 0
    codes = Counter((-labels[~keep] - 1).tolist())
    skipped = {SKIP_REASONS[c]: n for c, n in sorted(codes.items())}
    return rows[keep], labels[keep], keep, skipped


def merge_counts(*counts: dict[str, int]) -> dict[str, int]:
    total: Counter = Counter()
    for c in counts:
        total.update(c)
    return dict(sorted(total.items()))


def gather_counts(shard, counts: dict[str, int]) -> dict[str, int]:
    """Per-process skip counts (each process read its own batches) -> their sum."""
    if shard is None or shard.world == 1:
        return dict(counts)
    return merge_counts(*shard.gather_json([(shard.rank, dict(counts))]))
