"""Walking through the space: image -> origin traversals (MERU Sec. 5) and interpolations.

Points are interpolated in the tangent space at the origin (``log_map0`` both ends, mix,
``exp_map0``), which is a geodesic toward the origin for the image -> origin walk.
"""

from __future__ import annotations

import torch

from hyvl import lorentz


def tangent_path(x: torch.Tensor, y: torch.Tensor | None, steps: int, curv) -> torch.Tensor:
    """(steps, D) points from ``x`` to ``y`` (the origin when None), both log-mapped."""
    vx = lorentz.log_map0(x.float(), curv)
    vy = torch.zeros_like(vx) if y is None else lorentz.log_map0(y.float(), curv)
    t = torch.linspace(0.0, 1.0, steps).unsqueeze(1)
    return lorentz.exp_map0((1 - t) * vx + t * vy, curv)


def traverse(
    points: torch.Tensor,
    texts: torch.Tensor,
    curv,
    min_radius: float = 0.1,
    require_entailment: bool = True,
) -> list[dict]:
    """For each point the nearest text (row index) whose entailment cone contains the point.

    MERU's traversal: a text t "entails" a point p when ``oxy_angle(t, p) <= half_aperture(t)``.
    Returns one dict per step: ``{"step", "dist0", "text" (row or None), "distance"}``.
    A learnable curvature (``model.curv``) may be passed as is: nothing here needs gradients.
    """
    if torch.is_tensor(curv):
        curv = curv.detach()
    points, texts = points.detach(), texts.detach()
    d = lorentz.pairwise_dist(points, texts, curv)  # (S, T)
    out = []
    for s in range(points.shape[0]):
        order = torch.sort(d[s], stable=True).indices
        chosen = None
        for t in order.tolist():
            if not require_entailment:
                chosen = t
                break
            angle = lorentz.oxy_angle(texts[t], points[s], curv)
            if angle <= lorentz.half_aperture(texts[t], curv, min_radius):
                chosen = t
                break
        out.append(
            {
                "step": s,
                "dist0": float(lorentz.dist0(points[s], curv)),
                "text": chosen,
                "distance": None if chosen is None else float(d[s, chosen]),
            }
        )
    return out
