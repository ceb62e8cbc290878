"""The embedding space of a model as one object: lift, similarity, prototypes, search, cones.

A model's ``geometry`` is a string in its config (``"lorentz"`` for MERU / HyCoCLIP,
``"euclidean"`` for CLIP); :func:`get_geometry` turns it into :class:`Lorentz` or
:class:`Euclidean` once (``model.space``), and every part of hyvl that behaves differently per
geometry asks that object instead of comparing the string. A new geometry is one class here.

Conventions (both classes): embeddings are ``(..., D)`` fp32 tensors (Lorentz: the space
components, the time component implied; Euclidean: unit vectors); ``curv`` is the curvature
magnitude ``c`` (a float or a 0-dim tensor; ignored by :class:`Euclidean`, which takes None).
Every similarity is "larger = closer", every distance "smaller = closer".
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from hyvl import lorentz
from hyvl.errors import ConfigError


class Euclidean:
    """CLIP's space: L2-normalised embeddings on the unit sphere, cosine similarity."""

    name = "euclidean"
    #: False: no curvature, no distance to a root, no entailment cones, no alpha.
    hyperbolic = False

    def __repr__(self) -> str:
        return "Euclidean()"

    def lift(self, feats: Tensor, log_alpha: Tensor | None, curv: Tensor | None) -> Tensor:
        """(..., D) projected features -> (..., D) unit vectors (``log_alpha``, ``curv`` unused)."""
        return F.normalize(feats, dim=-1)

    def pairwise_similarity(self, x: Tensor, y: Tensor, curv: Tensor | None) -> Tensor:
        """(B1, D), (B2, D) -> (B1, B2) cosine similarities."""
        return x @ y.T

    def pairwise_distance(
        self, x: Tensor, y: Tensor, curv: float | None, scale: Tensor | float | None = None
    ) -> Tensor:
        """(B1, D), (B2, D) -> (B1, B2) ``1 - cos`` (times ``scale``): the distance search
        reports."""
        d = 1.0 - x @ y.T
        return d if scale is None else scale * d

    def distance_from_inner(self, ip: Tensor, q_sq: Tensor, y_sq: Tensor, curv) -> Tensor:
        """``1 - q . y`` from the inner products ``ip`` (norms unused: unit vectors)."""
        return 1.0 - ip

    def prototypes(self, feats: Tensor, lift) -> Tensor:
        """(C, T, D) projected features of T prompts per class -> (C, D) class embeddings.

        As CLIP / open_clip build zero-shot classifiers: embed, average, normalise.
        ``lift`` maps features to embeddings (the model's ``lift_text``).
        """
        return F.normalize(lift(feats).mean(-2), dim=-1)

    def mean(self, points: Tensor, curv: float | Tensor | None) -> Tensor:
        """(..., N, D) embeddings -> (..., D): their normalised average."""
        return F.normalize(points.mean(-2), dim=-1)

    def augment_items(self, y: Tensor, curv: float | None) -> Tensor:
        """(N, D) -> (N, D) fp32: cosine search is already inner-product search."""
        return y.float().contiguous()

    def augment_queries(self, q: Tensor, curv: float | None) -> Tensor:
        """(Q, D) -> (Q, D) fp32."""
        return q.float().contiguous()


class Lorentz:
    """MERU / HyCoCLIP's space: the hyperboloid of curvature ``-c`` (:mod:`hyvl.lorentz`)."""

    name = "lorentz"
    #: True: a learnable curvature, alpha per modality, distance to the origin, entailment cones.
    hyperbolic = True

    def __repr__(self) -> str:
        return "Lorentz()"

    def lift(self, feats: Tensor, log_alpha: Tensor, curv: Tensor) -> Tensor:
        """(..., D) projected features -> (..., D) points: ``exp_map0(alpha * feats)`` (MERU).

        ``log_alpha`` is used as given: the model keeps it ``<= 0`` (alpha <= 1, as MERU) by
        clamping the parameter itself (``HyvlModel.clamp_scalars_``), so its gradient does not
        vanish at the bound.
        """
        return lorentz.exp_map0(feats * log_alpha.float().exp(), curv.float())

    def pairwise_similarity(self, x: Tensor, y: Tensor, curv: Tensor) -> Tensor:
        """(B1, D), (B2, D) -> (B1, B2) negative geodesic distances (MERU's logits)."""
        return -lorentz.pairwise_dist(x, y, curv)

    def pairwise_angle_similarity(self, apex: Tensor, child: Tensor, curv: Tensor) -> Tensor:
        """(B1, D) apexes, (B2, D) children -> (B1, B2) ``-oxy_angle(apex, child)``."""
        return -lorentz.pairwise_oxy_angle(apex, child, curv)

    def pairwise_distance(
        self, x: Tensor, y: Tensor, curv: float | Tensor, scale: Tensor | float | None = None
    ) -> Tensor:
        """(B1, D), (B2, D) -> (B1, B2) geodesic distances (times a non-zero ``scale``, fused)."""
        return lorentz.pairwise_dist(x, y, curv, scale=scale)

    def distance_from_inner(self, ip: Tensor, q_sq: Tensor, y_sq: Tensor, curv) -> Tensor:
        """Geodesic distances from the space components' inner products ``ip`` and squared norms.

        ``d = acosh(1 + z) / sqrt(c)`` with ``z = c (q_t y_t - q . y) - 1``; in float64 the
        cancellation in ``z`` costs ~1e-8 relative for fp32 points 1e-3 |x| apart (better than
        ``lorentz.dist`` in fp32). Hand-written because no library computes hyperboloid
        distances of gathered pairs. Shapes broadcast: ``ip`` (Q, m), ``q_sq`` (Q, 1),
        ``y_sq`` (Q, m).
        """
        c = float(curv)
        yt = torch.sqrt(1.0 / c + y_sq)
        qt = torch.sqrt(1.0 / c + q_sq)
        z = (c * (qt * yt - ip) - 1.0).clamp_min(0.0)
        return torch.log1p(z + torch.sqrt(z * (z + 2.0))) / math.sqrt(c)

    def prototypes(self, feats: Tensor, lift) -> Tensor:
        """(C, T, D) projected features of T prompts per class -> (C, D) class embeddings.

        As MERU's zero-shot classifier: average in the tangent space at the origin (the
        features, before alpha and ``exp_map0``), then lift the mean once with ``lift`` (the
        model's ``lift_text``). Averaging lifted points instead would leave the hyperboloid.
        """
        return lift(feats.mean(-2))

    def mean(self, points: Tensor, curv: float | Tensor) -> Tensor:
        """(..., N, D) points -> (..., D): ``exp_map0`` of the mean of their ``log_map0``."""
        return lorentz.exp_map0(lorentz.log_map0(points, curv).mean(-2), curv)

    def augment_items(self, y: Tensor, curv: float) -> Tensor:
        """(N, D) space components -> (N, D+1) fp32 vectors ``(-y_0, y_s)``.

        For a fixed c the distance decreases with the Lorentzian inner product
        ``<q, y>_L = q_s . y_s - q_0 y_0``, so ``argmin_y d(q, y) = argmax_y (q_0, q_s) .
        (-y_0, y_s)``: plain maximum-inner-product search (FAISS ``IndexFlatIP``, a matmul)
        over these vectors ranks exactly by distance.
        """
        time = lorentz.time_component(y, curv).unsqueeze(-1)
        return torch.cat([-time, y], dim=-1).float().contiguous()

    def augment_queries(self, q: Tensor, curv: float) -> Tensor:
        """(Q, D) -> (Q, D+1) fp32 vectors ``(q_0, q_s)``."""
        time = lorentz.time_component(q, curv).unsqueeze(-1)
        return torch.cat([time, q], dim=-1).float().contiguous()

    def cone_violation(
        self, apex: Tensor, child: Tensor, curv: Tensor, aperture_scale: float, min_radius: float
    ) -> Tensor:
        """(R, D), (R, D) -> (R,): ``relu(oxy_angle(apex, child) - k * half_aperture(apex))``.

        How far ``child`` lies outside the entailment cone of ``apex`` (MERU Eq. 10; HyCoCLIP
        scales the half-aperture by ``k = aperture_scale``).
        """
        angle = lorentz.oxy_angle(apex, child, curv)
        aperture = lorentz.half_aperture(apex, curv, min_radius=min_radius)
        return F.relu(angle - aperture_scale * aperture)


Geometry = Euclidean | Lorentz

_GEOMETRIES: dict[str, Geometry] = {g.name: g for g in (Lorentz(), Euclidean())}
NAMES = tuple(_GEOMETRIES)


def get_geometry(name: str | Geometry) -> Geometry:
    """``"lorentz"`` -> :class:`Lorentz`, ``"euclidean"`` -> :class:`Euclidean` (shared, stateless).

    A geometry object is returned as it is, so functions may take either.
    """
    if isinstance(name, Euclidean | Lorentz):
        return name
    try:
        return _GEOMETRIES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"model geometry must be one of {NAMES}, got {name!r}") from None


__all__ = ["NAMES", "Euclidean", "Geometry", "Lorentz", "get_geometry"]
