"""UNCHA's terms (CVPR 2026; jeeit17/UNCHA): the uncertainty of an embedding, the
entailment residual, the calibration with its entropy regulariser, and the box terms they
enter. Split from :mod:`hyvl.objectives.objective` (which documents the formulas) to keep each
module readable; :func:`hyvl.objectives.objective.compute_objective` calls :func:`uncha_box_terms`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from hyvl import lorentz
from hyvl.objectives import distributed


def uncha_uncertainty(x: Tensor) -> Tensor:
    """UNCHA's uncertainty of embeddings: ``u(x) = softplus(-|x|)``, (R, D) -> (R,).

    ``|x|`` is the norm of the space components (monotone in the distance to the origin):
    ``ln 2`` at the origin, towards 0 far from it.
    """
    return F.softplus(-torch.linalg.vector_norm(x, dim=-1))


def uncha_residual(angle: Tensor, aperture: Tensor, aperture_scale: float, beta: float) -> Tensor:
    """UNCHA's piecewise-continuous entailment residual (part of Eq. 14-17):
    ``relu(a - k A) + beta * a``: HyCoCLIP's cone violation, plus ``beta`` times the angle so
    that a child inside the cone is still pulled towards its axis."""
    return F.relu(angle - aperture_scale * aperture) + beta * angle


def uncha_calibration(
    residual: Tensor, uncertainty: Tensor, weight: float, row_weight: float
) -> Tensor:
    """UNCHA's uncertainty calibration with its entropy regulariser (part of Eq. 14-17).

    ``alpha * (mean_i(r_i^det / (2 (U_i + 1e-6)) + u_i / 2) + H)`` with ``U = clamp(e^u, 1e-6,
    1e6)``, ``r^det`` the residual detached (the calibration trains the uncertainty, not the
    angles) and ``H = -sum_i p_i log(p_i + 1e-8)``, ``p = softmax(u)`` over the rows. The mean
    is ``row_weight * sum`` (the global mean with several processes); the entropy is over this
    process's rows, as the authors'.
    """
    spread = uncertainty.exp().clamp(1e-6, 1e6)
    term = 0.5 * residual.detach() / (spread + 1e-6) + 0.5 * uncertainty
    p = torch.softmax(uncertainty, dim=0)
    entropy = -(p * torch.log(p + 1e-8)).sum()
    return weight * (row_weight * term.sum() + entropy)


def uncha_box_terms(
    cfg, space, image, text, image_all, text_all, box_image, box_text, targets, k, curv,
    row_weight, box_weight, block, log_scales, dtype,
):  # fmt: skip
    """UNCHA's contrastive and entailment terms (see the module docstring)."""
    device = image.device
    if log_scales is None:
        log_scales = (
            torch.tensor(math.log(cfg.uncha_local_scale_init), device=device),
            torch.tensor(math.log(cfg.uncha_global_local_scale_init), device=device),
        )
    local_scale, global_local_scale = (t.to(dtype).exp() for t in log_scales)
    gathered = image_all is not image
    if gathered:
        box_image_all, box_offset = distributed.gather_with_grad(box_image)
        box_text_all, _ = distributed.gather_with_grad(box_text)
    else:
        box_image_all, box_text_all, box_offset = box_image, box_text, 0
    box_rows = box_offset + torch.arange(box_image.shape[0], device=device)
    whole_targets = targets.repeat_interleave(k)
    u_image, u_text = uncha_uncertainty(box_image), uncha_uncertainty(box_text)
    # Eq. 10-11: a box's logits to the whole captions / images, times exp(-u/2) (detached).
    w_image = torch.exp(-0.5 * u_image.detach()).clamp(0.1, 10.0)
    w_text = torch.exp(-0.5 * u_text.detach()).clamp(0.1, 10.0)
    out = {
        "contrastive_boximage_boxtext": box_weight
        * block(box_image, box_text_all, box_rows, False, block_scale=local_scale),
        "contrastive_boxtext_boximage": box_weight
        * block(box_text, box_image_all, box_rows, True, block_scale=local_scale),
        "contrastive_boximage_text": box_weight
        * block(box_image, text_all, whole_targets, False, global_local_scale, row_weight_=w_image),
        "contrastive_boxtext_image": box_weight
        * block(box_text, image_all, whole_targets, True, global_local_scale, row_weight_=w_text),
    }
    out["contrastive"] = 0.5 * sum(out.values())  # the three symmetric pairs, summed
    # Each rank's share of the global mean, as every other logged term (the mean over ranks
    # is the whole-batch value also with unequal local batches).
    out["uncertainty_boximage"] = box_weight * u_image.detach().sum()
    out["uncertainty_boxtext"] = box_weight * u_text.detach().sum()
    out["logit_scale_local"] = local_scale.detach()
    out["logit_scale_global_local"] = global_local_scale.detach()
    if not space.hyperbolic:
        return out, {}, None

    def residual(apex: Tensor, child: Tensor, aperture_scale: float) -> Tensor:
        angle = lorentz.oxy_angle(apex, child, curv)
        aperture = lorentz.half_aperture(apex, curv, min_radius=cfg.min_radius)
        return uncha_residual(angle, aperture, aperture_scale, cfg.uncha_angle_weight)

    inter, intra = cfg.inter_aperture_scale, cfg.intra_aperture_scale
    r_box_image = residual(box_image, image.repeat_interleave(k, dim=0), intra)
    r_box_text = residual(box_text, text.repeat_interleave(k, dim=0), intra)
    alpha = cfg.uncha_calibration_weight
    terms = {
        "entail_text_image": row_weight * residual(text, image, inter).sum(),
        "entail_boxtext_boximage": box_weight * residual(box_text, box_image, inter).sum(),
        "entail_boximage_image": box_weight * r_box_image.sum(),
        "entail_boxtext_text": box_weight * r_box_text.sum(),
        "calibration_boximage": uncha_calibration(r_box_image, u_image, alpha, box_weight),
        "calibration_boxtext": uncha_calibration(r_box_text, u_text, alpha, box_weight),
    }
    entail = (
        0.5 * (terms["entail_text_image"] + terms["entail_boxtext_boximage"])
        + 0.25 * (terms["entail_boximage_image"] + terms["entail_boxtext_text"])
        + terms["calibration_boximage"]
        + terms["calibration_boxtext"]
    )
    return out, terms, entail
