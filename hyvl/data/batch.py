"""The typed batch every loader yields."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class Batch:
    """One (per-process) batch.

    images (B,3,H,W) float in [0,1]; tokens (B,L) long; box_images (B*k,3,H,W) and box_tokens
    (B*k,L) or None, sample-major (rows i*k..i*k+k-1 belong to sample i); labels (B,) or None
    (from ``cls``). ``skipped`` counts the samples dropped (by reason) while this batch was
    assembled, so the main process can total them across loader workers; ``notes`` holds
    one example message per reason (for the log). A training stream yields an EMPTY batch
    (no rows) for a raw batch whose samples were all unusable, so its skips are counted and
    its place in the stream is kept (exact resume); ``error`` set: the stream gave up.
    """

    images: torch.Tensor
    tokens: torch.Tensor
    box_images: torch.Tensor | None = None
    box_tokens: torch.Tensor | None = None
    keys: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)
    box_texts: list[str] = field(default_factory=list)
    labels: torch.Tensor | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    dropped_boxes: dict[str, int] = field(default_factory=dict)
    index: int = -1  # position in an eval stream (counted before decoding); -1 in training
    notes: dict[str, str] = field(default_factory=dict)
    error: str = ""

    @classmethod
    def empty(cls, skipped=None, dropped_boxes=None, notes=None, error: str = "") -> Batch:
        """A batch without rows that only carries counts (or a stream's fatal error)."""
        return cls(
            images=torch.empty(0, 3, 0, 0),
            tokens=torch.empty(0, 0, dtype=torch.long),
            skipped=dict(skipped or {}),
            dropped_boxes=dict(dropped_boxes or {}),
            notes=dict(notes or {}),
            error=error,
        )

    def __len__(self) -> int:
        return self.images.shape[0]

    def to(self, device, non_blocking: bool = False) -> Batch:
        def move(t):
            return None if t is None else t.to(device, non_blocking=non_blocking)

        return Batch(
            images=move(self.images),
            tokens=move(self.tokens),
            box_images=move(self.box_images),
            box_tokens=move(self.box_tokens),
            keys=self.keys,
            captions=self.captions,
            box_texts=self.box_texts,
            labels=move(self.labels),
            skipped=self.skipped,
            dropped_boxes=self.dropped_boxes,
            index=self.index,
            notes=self.notes,
            error=self.error,
        )
