"""The published HyCoCLIP training step, re-implemented for side-by-side timing (tools only).

What makes it "the published structure" (read from the HyCoCLIP paper and repository; the code
here is ours): separate tower calls for whole images and box images, and for texts and box
texts; each lifted separately; the MERU-style fp32 formulas (acosh of the Lorentzian inner
product; acos of a ratio for the exterior angle); four separate pairwise distance matrices for
the four contrastive terms; the four entailment terms computed one after another. It runs on a
``HyvlModel``'s towers and parameters, so only the structure differs from hyvl's step.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def meru_exp_map0(x, curv, eps=1e-8):
    rc_xnorm = curv**0.5 * torch.norm(x, dim=-1, keepdim=True)
    sinh_input = torch.clamp(rc_xnorm, min=eps, max=math.asinh(2**15))
    return torch.sinh(sinh_input) * x / torch.clamp(rc_xnorm, min=eps)


def meru_pairwise_dist(x, y, curv, eps=1e-8):
    x_time = torch.sqrt(1 / curv + torch.sum(x**2, dim=-1, keepdim=True))
    y_time = torch.sqrt(1 / curv + torch.sum(y**2, dim=-1, keepdim=True))
    xyl = x @ y.T - x_time @ y_time.T
    return torch.acosh(torch.clamp(-curv * xyl, min=1 + eps)) / curv**0.5


def meru_half_aperture(x, curv, min_radius=0.1, eps=1e-8):
    asin_input = 2 * min_radius / (torch.norm(x, dim=-1) * curv**0.5 + eps)
    return torch.asin(torch.clamp(asin_input, min=-1 + eps, max=1 - eps))


def meru_oxy_angle(x, y, curv, eps=1e-8):
    x_time = torch.sqrt(1 / curv + torch.sum(x**2, dim=-1))
    y_time = torch.sqrt(1 / curv + torch.sum(y**2, dim=-1))
    c_xyl = curv * (torch.sum(x * y, dim=-1) - x_time * y_time)
    acos_numer = y_time + c_xyl * x_time
    acos_denom = torch.sqrt(torch.clamp(c_xyl**2 - 1, min=eps))
    acos_input = acos_numer / (torch.norm(x, dim=-1) * acos_denom + eps)
    return torch.acos(torch.clamp(acos_input, min=-1 + eps, max=1 - eps))


def reference_step_loss(
    model, images, tokens, box_images, box_tokens, inter_k=0.7, intra_k=1.2, entail_weight=0.2
):
    """HyCoCLIP's loss, structured as the published forward pass (one process)."""
    curv = model.curv
    scale = model.logit_scale_exp
    # four tower calls
    img = model.image_features(images)
    box_img = model.image_features(box_images)
    txt = model.text_features(tokens)
    box_txt = model.text_features(box_tokens)
    with torch.autocast(images.device.type, enabled=False):
        va, ta = model.visual_alpha.exp(), model.textual_alpha.exp()
        img = meru_exp_map0(img.float() * va, curv)
        box_img = meru_exp_map0(box_img.float() * va, curv)
        txt = meru_exp_map0(txt.float() * ta, curv)
        box_txt = meru_exp_map0(box_txt.float() * ta, curv)
        targets = torch.arange(img.shape[0], device=img.device)
        # four separate distance matrices
        image_logits = -meru_pairwise_dist(img, txt, curv)
        text_logits = -meru_pairwise_dist(txt, img, curv)
        box_image_logits = -meru_pairwise_dist(box_img, txt, curv)
        box_text_logits = -meru_pairwise_dist(box_txt, img, curv)
        contrastive = (
            F.cross_entropy(scale * image_logits, targets)
            + F.cross_entropy(scale * text_logits, targets)
            + F.cross_entropy(scale * box_image_logits, targets)
            + F.cross_entropy(scale * box_text_logits, targets)
        ) / 4
        # entailment terms one by one
        e1 = torch.clamp(
            meru_oxy_angle(txt, img, curv) - inter_k * meru_half_aperture(txt, curv), min=0
        ).mean()
        e2 = torch.clamp(
            meru_oxy_angle(box_txt, box_img, curv) - inter_k * meru_half_aperture(box_txt, curv),
            min=0,
        ).mean()
        e3 = torch.clamp(
            meru_oxy_angle(box_img, img, curv) - intra_k * meru_half_aperture(box_img, curv), min=0
        ).mean()
        e4 = torch.clamp(
            meru_oxy_angle(box_txt, txt, curv) - intra_k * meru_half_aperture(box_txt, curv), min=0
        ).mean()
        entail = 0.5 * (e1 + e2 + e3 + e4)
        return contrastive + entail_weight * entail
