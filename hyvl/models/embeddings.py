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
    #: (B*k,) int64: equal values = equal box texts (:func:`text_identity` of the box tokens);
    #: the box <-> box contrastive pair (``objective.box_pair_weight``) counts every box of the
    #: same text as a positive.
    box_text_ids: torch.Tensor | None = None

    @property
    def has_boxes(self) -> bool:
        return self.box_image is not None and self.box_text is not None

    @property
    def boxes_per_sample(self) -> int:
        """k: box rows per sample (0 without boxes)."""
        if not self.has_boxes:
            return 0
        return self.box_image.shape[0] // max(self.image.shape[0], 1)


# Fixed odd multipliers for text_identity (any fixed values work; these come from a seeded
# generator so every process and run agrees).
_ID_WEIGHTS = (
    torch.randint(
        1, 2**62, (1024,), generator=torch.Generator().manual_seed(20231), dtype=torch.int64
    )
    | 1
)


def text_identity(tokens: torch.Tensor) -> torch.Tensor:
    """(R, L) token ids -> (R,) int64, equal exactly for equal token rows.

    A fixed linear hash over int64 (wrapping), the same on every process, so identities of
    gathered rows compare across ranks. Two different texts share a value with probability
    about 2^-64 per pair.
    """
    tokens = tokens.long()
    if tokens.shape[-1] > _ID_WEIGHTS.numel():
        raise ValueError(
            f"text_identity: at most {_ID_WEIGHTS.numel()} tokens, got {tokens.shape[-1]}"
        )
    weights = _ID_WEIGHTS[: tokens.shape[-1]].to(tokens.device)
    return (tokens * weights).sum(dim=-1)
