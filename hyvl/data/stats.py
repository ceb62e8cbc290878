"""``hyvl data stats``: read every sample of some shards and count what a training run would see."""

from __future__ import annotations

from collections import Counter
from typing import Any

from hyvl.data.layouts import Skip, parse_sample
from hyvl.data.shards import expand_shards, raw_samples


def shard_stats(
    shards: str | list[str], layout: str = "auto", min_box_size: int = 0, progress: bool = True
) -> dict[str, Any]:
    """``{"samples", "with_boxes", "boxes", "skipped": {reason: n}, "dropped_boxes": {...},
    "layouts": {...}, "shards"}``: samples counts usable samples only."""
    from hyvl.data.layouts import detect_layout
    from hyvl.progress import progress_bar

    urls = expand_shards(shards)
    skipped: Counter = Counter()
    dropped: Counter = Counter()
    layouts: Counter = Counter()
    samples = with_boxes = boxes = 0
    for raw in progress_bar(
        raw_samples(urls, skipped), desc="reading", unit=" samples", disable=not progress
    ):
        try:
            layouts[detect_layout(raw) if layout == "auto" else layout] += 1
            sample, drops = parse_sample(raw, layout, min_box_size)
        except Skip as skip:
            skipped[skip.reason] += 1
            continue
        dropped.update(drops)
        samples += 1
        boxes += sample.num_boxes
        with_boxes += sample.num_boxes > 0
    return {
        "samples": samples,
        "with_boxes": with_boxes,
        "boxes": boxes,
        "skipped": dict(skipped),
        "dropped_boxes": dict(dropped),
        "layouts": dict(layouts),
        "shards": len(urls),
    }
