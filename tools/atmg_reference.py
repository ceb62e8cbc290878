"""ATMG's loss as the authors' forward pass computes it, re-implemented for parity (tools only).

Read from samgregoost/atmg (``atmg/models.py``, ``ATMG.forward``, and ``atmg/lorentz.py``,
``pairwise_oxy_angle``; the code here is ours): MERU's law-of-cosines exterior angle for all
pairs, text -> image logits ``-angle(text_i, image_j)``, image -> text logits
``+angle(image_i, text_j)``, the mean of the two cross-entropies, no entailment term (the config
sets ``entail_weight=0.2`` but the forward never adds one). Curvature fixed at 0.1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def atmg_pairwise_oxy_angle(x, y, curv, eps=1e-8):
    x_time = torch.sqrt(1 / curv + torch.sum(x**2, dim=-1))
    y_time = torch.sqrt(1 / curv + torch.sum(y**2, dim=-1))
    c_xyl = curv * (x @ y.T - x_time[:, None] * y_time[None, :])
    numer = y_time[None, :] + c_xyl * x_time[:, None]
    denom = torch.sqrt(torch.clamp(c_xyl**2 - 1, min=eps))
    ratio = numer / (torch.norm(x, dim=-1)[..., None] * denom + eps)
    return torch.acos(torch.clamp(ratio, min=-1 + eps, max=1 - eps))


def atmg_reference_loss(img, txt, curv, scale):
    """ATMG's contrastive loss for lifted embeddings ``img``, ``txt`` (B, D)."""
    text_logits = -atmg_pairwise_oxy_angle(txt, img, curv)
    image_logits = atmg_pairwise_oxy_angle(img, txt, curv)
    targets = torch.arange(img.shape[0])
    return 0.5 * (
        F.cross_entropy(scale * image_logits, targets)
        + F.cross_entropy(scale * text_logits, targets)
    )
