"""UNCHA's loss as the authors' forward pass computes it, re-implemented for parity (tools only).

Read from jeeit17/UNCHA (``uncha/models.py``, class ``UNCHA``; the code here is ours): MERU's
fp32 formulas (``tools/hycoclip_reference.py``), three logit scales (whole <-> whole 1/0.07,
box <-> box 1/0.05, box -> whole 1/0.06), the uncertainty ``softplus(-|x|)``, the piecewise
entailment residual with factor 0.1 and the calibration with ``alpha = 10``. One process, every
box valid.

Their box -> whole logits take as columns the whole caption (image) of every box row, so with
``k > 1`` boxes per sample each whole embedding is a column ``k`` times and the ``k - 1`` copies
of a box's own caption count as negatives. hyvl uses the ``B`` whole embeddings as columns
(HyCoCLIP's layout); the two agree exactly for ``k = 1`` (tests/test_objectives_recent.py).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from hycoclip_reference import (
    meru_half_aperture,
    meru_oxy_angle,
    meru_pairwise_dist,
)


def _residual(angle, aperture, tau, factor=0.1):
    val = angle - tau * aperture
    return torch.where(val > 0, val + factor * angle, factor * angle)


def _calibrated(residual, log_u, alpha=10.0):
    mean_loss = 0.5 * residual
    u = torch.clamp(torch.exp(log_u), min=1e-6, max=1e6)
    term = 0.5 * (residual.detach() / (u + 1e-6)) + 0.5 * log_u
    prob = torch.softmax(log_u.flatten(), dim=0)
    entropy = -(prob * torch.log(prob + 1e-8)).sum()
    return mean_loss.mean(), (alpha * (term + entropy)).mean()


def uncha_reference_loss(
    img, txt, box_img, box_txt, curv, scales=(1 / 0.07, 1 / 0.05, 1 / 0.06), entail_weight=0.2
):
    """``(loss, parts)`` of UNCHA for lifted embeddings: ``img``/``txt`` (B, D), the boxes
    (B*k, D) sample-major; ``scales`` = (whole, box <-> box, box -> whole) logit scales."""
    global_scale, local_scale, global_local_scale = scales
    batch, k = img.shape[0], box_img.shape[0] // img.shape[0]
    sel_img = img.unsqueeze(1).expand(batch, k, -1).reshape(batch * k, -1)
    sel_txt = txt.unsqueeze(1).expand(batch, k, -1).reshape(batch * k, -1)
    image_logits = -meru_pairwise_dist(img, txt, curv)
    text_logits = -meru_pairwise_dist(txt, img, curv)
    u_box = F.softplus(-torch.norm(box_img, dim=-1)).detach()
    u_txt = F.softplus(-torch.norm(box_txt, dim=-1)).detach()
    t_box = torch.exp(-0.5 * u_box).clamp(min=0.1, max=10.0)
    t_txt = torch.exp(-0.5 * u_txt).clamp(min=0.1, max=10.0)
    gl_image_logits = t_box.unsqueeze(1) * -meru_pairwise_dist(box_img, sel_txt, curv)
    gl_text_logits = t_txt.unsqueeze(1) * -meru_pairwise_dist(box_txt, sel_img, curv)
    box_image_logits = -meru_pairwise_dist(box_img, box_txt, curv)
    box_text_logits = -meru_pairwise_dist(box_txt, box_img, curv)
    targets = torch.arange(batch * k)
    whole = torch.arange(batch)
    ce = F.cross_entropy
    contrastive = (
        0.5 * (ce(global_scale * image_logits, whole) + ce(global_scale * text_logits, whole))
        + 0.5
        * (ce(local_scale * box_image_logits, targets) + ce(local_scale * box_text_logits, targets))
        + 0.5
        * (
            ce(global_local_scale * gl_image_logits, targets)
            + ce(global_local_scale * gl_text_logits, targets)
        )
    )
    r_ti = _residual(meru_oxy_angle(txt, img, curv), meru_half_aperture(txt, curv), 0.7)
    r_bb = _residual(meru_oxy_angle(box_txt, box_img, curv), meru_half_aperture(box_txt, curv), 0.7)
    r_bi = _residual(meru_oxy_angle(box_img, sel_img, curv), meru_half_aperture(box_img, curv), 1.2)
    r_bt = _residual(meru_oxy_angle(box_txt, sel_txt, curv), meru_half_aperture(box_txt, curv), 1.2)
    e_bi, cal_bi = _calibrated(r_bi, F.softplus(-torch.norm(box_img, dim=-1)))
    e_bt, cal_bt = _calibrated(r_bt, F.softplus(-torch.norm(box_txt, dim=-1)))
    entail = 0.5 * r_ti.mean() + 0.5 * r_bb.mean() + 0.5 * (e_bi + e_bt) + cal_bi + cal_bt
    loss = contrastive + entail_weight * entail
    return loss, {"contrastive": contrastive, "entail": entail}
