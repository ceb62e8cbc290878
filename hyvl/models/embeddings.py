"""The model's output: every embedding a batch produces, plus the geometry's learnable scalars.

Kept in its own light module so objectives, evaluation and tests can build one without
importing the towers (timm, open_clip).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Embeddings:
    """Embeddings of one (local) batch.

    Shapes: ``image`` (B, D), ``text`` (B, D); ``box_image`` and ``box_text`` (B*k, D) or None,
    ordered sample-major (rows ``i*k .. i*k+k-1`` belong to sample ``i``). For Lorentz models
    these are space components on the hyperboloid of curvature ``-curv``; for CLIP they are unit
    vectors and ``curv`` is None. ``logit_scale`` is the multiplier of the logits, ``model.logit_scale_exp`` (the model's
    ``logit_scale`` parameter is its log), as open_clip's forward returns ``logit_scale.exp()``.
    """

    image: torch.Tensor
    text: torch.Tensor
    box_image: torch.Tensor | None = None
    box_text: torch.Tensor | None = None
    curv: torch.Tensor | None = None
    logit_scale: torch.Tensor | None = None

    @property
    def has_boxes(self) -> bool:
        return self.box_image is not None and self.box_text is not None

    @property
    def boxes_per_sample(self) -> int:
        """k: box rows per sample (0 without boxes)."""
        if not self.has_boxes:
            return 0
        return self.box_image.shape[0] // max(self.image.shape[0], 1)
