"""PHyCLIP's loss as the authors' forward pass computes it, re-implemented for parity (tools only).

Read from tksmatsubara/PHyCLIP (``phyclip/models.py``, class ``PHyCLIP``, and the ``*_batch``
functions of ``phyclip/lorentz.py``; the code here is ours): embeddings of ``F`` factors of
dimension ``d`` (``(B, F*d)`` viewed as ``(B, F, d)``), one curvature per factor; MERU's fp32
formulas per factor with ``lorentz_eps = 1e-6`` in every clamp (``acosh(max(-c<x,y>_L,
1 + eps))``, ``acos`` and ``asin`` clamped to ``1 - eps``); the l1 product distance as the MEAN of
the factor distances (``product_metric="l1"``); contrastive ``0.5 * (0.5 (CE_it + CE_ti) + 0.5
(CE_bi + CE_bt))`` with the box rows' targets ``arange(B)`` (one box per sample); entailment
HyCoCLIP's four terms, each the mean over rows and factors of ``relu(angle - k * aperture)``,
summed and halved. One process.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-6  # the configs' lorentz_eps


def factors(x, n):
    return x.view(x.shape[0], n, -1)


def exp_map0_batch(v, curv, eps=EPS):
    """(B, F, d) tangent vectors -> points, curvature ``curv[f]`` on factor ``f``."""
    c = curv.view(1, -1, 1)
    r = torch.sqrt(c) * torch.norm(v, dim=-1, keepdim=True)
    return (
        torch.sinh(torch.clamp(r, min=eps, max=torch.asinh(torch.tensor(2.0**15))))
        * v
        / (torch.clamp(r, min=eps))
    )


def pairwise_dist_batch(x, y, curv, eps=EPS):
    """(B1, F, d), (B2, F, d) -> (F, B1, B2)."""
    xt, yt = x.transpose(0, 1), y.transpose(0, 1)
    c = curv.view(-1, 1, 1)
    x_time = torch.sqrt(1 / c + torch.sum(xt**2, dim=-1, keepdim=True))
    y_time = torch.sqrt(1 / c + torch.sum(yt**2, dim=-1, keepdim=True))
    xyl = xt @ yt.transpose(-2, -1) - x_time @ y_time.transpose(-2, -1)
    return torch.acosh(torch.clamp(-c * xyl, min=1 + eps)) / torch.sqrt(c)


def oxy_angle_batch(x, y, curv, eps=EPS):
    """(B, F, d), (B, F, d) -> (F, B)."""
    xt, yt = x.transpose(0, 1), y.transpose(0, 1)
    c = curv.view(-1, 1)
    x_time = torch.sqrt(1 / c + torch.sum(xt**2, dim=-1))
    y_time = torch.sqrt(1 / c + torch.sum(yt**2, dim=-1))
    c_xyl = c * (torch.sum(xt * yt, dim=-1) - x_time * y_time)
    numer = y_time + c_xyl * x_time
    denom = torch.sqrt(torch.clamp(c_xyl**2 - 1, min=eps))
    ratio = numer / (torch.norm(xt, dim=-1) * denom + eps)
    return torch.acos(torch.clamp(ratio, min=-1 + eps, max=1 - eps))


def half_aperture_batch(x, curv, min_radius=0.1, eps=EPS):
    """(B, F, d) -> (F, B)."""
    xt = x.transpose(0, 1)
    ratio = 2 * min_radius / (torch.norm(xt, dim=-1) * torch.sqrt(curv.view(-1, 1)) + eps)
    return torch.asin(torch.clamp(ratio, min=-1 + eps, max=1 - eps))


def phyclip_reference_loss(img, txt, box_img, box_txt, curv, scale, entail_weight=0.2):
    """``(loss, parts)`` for lifted ``(B, F*d)`` embeddings (one box per sample) and the
    ``(F,)`` curvatures."""
    n = curv.shape[0]
    img, txt, box_img, box_txt = (factors(t, n) for t in (img, txt, box_img, box_txt))
    targets = torch.arange(img.shape[0])

    def ce(rows, cols):
        return F.cross_entropy(scale * -pairwise_dist_batch(rows, cols, curv).mean(0), targets)

    contrastive = 0.5 * (
        0.5 * (ce(img, txt) + ce(txt, img)) + 0.5 * (ce(box_img, txt) + ce(box_txt, img))
    )

    def entail(apex, child, k):
        angle = oxy_angle_batch(apex, child, curv).transpose(0, 1)
        aperture = half_aperture_batch(apex, curv).transpose(0, 1)
        return torch.clamp(angle - k * aperture, min=0).mean()

    entailment = 0.5 * (
        entail(txt, img, 0.7)
        + entail(box_txt, box_img, 0.7)
        + entail(box_img, img, 1.2)
        + entail(box_txt, txt, 1.2)
    )
    return contrastive + entail_weight * entailment, {
        "contrastive": contrastive,
        "entail": entailment,
    }
