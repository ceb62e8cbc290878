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
from hyvl.errors import ConfigError, HyvlError


class Euclidean:
    """CLIP's space: L2-normalised embeddings on the unit sphere, cosine similarity."""

    name = "euclidean"
    #: False: no curvature, no distance to a root, no entailment cones, no alpha.
    hyperbolic = False
    product = False

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
    #: False: one hyperboloid (see :class:`LorentzProduct`).
    product = False

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

    def dist0(self, x: Tensor, curv) -> Tensor:
        """(..., D) -> (...,) geodesic distance to the origin."""
        return lorentz.dist0(x, curv)

    def log_map0(self, x: Tensor, curv) -> Tensor:
        """(..., D) points -> (..., D) tangent vectors at the origin."""
        return lorentz.log_map0(x, curv)

    def cone_margin(self, apex: Tensor, child: Tensor, curv, min_radius: float) -> Tensor:
        """(R, D), (R, D) -> (R,): ``half_aperture(apex) - oxy_angle(apex, child)`` (radians
        inside the cone; negative outside)."""
        return lorentz.half_aperture(apex, curv, min_radius) - lorentz.oxy_angle(apex, child, curv)

    def in_cone(
        self, apex: Tensor, child: Tensor, curv, aperture_scale: float, min_radius: float
    ) -> Tensor:
        """(R, D), (R, D) -> (R,) bool: ``oxy_angle <= k * half_aperture``."""
        angle = lorentz.oxy_angle(apex, child, curv)
        return angle <= aperture_scale * lorentz.half_aperture(apex, curv, min_radius=min_radius)

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


class LorentzProduct(Lorentz):
    """PHyCLIP's space (Yoshikawa & Matsubara 2026): the product of ``F`` Lorentz factors.

    An embedding is ``(..., D)`` with ``D = F * d``: the space components of one point on each
    factor ``H^d`` (coordinates ``f*d .. f*d+d-1`` belong to factor ``f``), factor ``f`` of
    curvature ``-c_f``; ``curv`` is the ``(F,)`` tensor of the ``c_f`` (each learnable, as
    MERU's single one). ``F`` is read from ``curv``, so the object stays stateless.

    Distance (the paper's l1-product metric; its equation numbers could not be checked here,
    the formulas are read from the authors' README and code): the MEAN of the factor distances,
    ``d(X, Y) = (1/F) sum_f d_f(x_f, y_f)``. The paper writes the sum; the authors' code
    (``phyclip/models.py``, ``product_metric="l1"``) takes the mean, which hyvl follows (the
    factor ``1/F`` only rescales the logits, but it sets what the initial logit scale means).
    Entailment (the authors' README): ``X`` is in the cone of ``Y`` iff it is in every factor's
    cone; the loss averages the per-factor violations over factors (the authors' code).

    What a product space does not support: maximum-inner-product search (the l1 product
    distance is no function of one inner product: ``hyvl index`` refuses it), and the
    operations drawn or walked in one hyperbolic plane (``hyvl viz``, ``hyvl traverse``,
    ONNX export); each says so in one line (:func:`require_single_space`).
    """

    name = "lorentz_product"
    #: True: the product of several hyperboloids, one curvature each.
    product = True

    def __repr__(self) -> str:
        return "LorentzProduct()"

    @staticmethod
    def factors(x: Tensor, curv: Tensor) -> Tensor:
        """(..., F*d) -> (..., F, d) view, ``F = len(curv)``."""
        n = curv.shape[-1]
        if x.shape[-1] % n:
            raise ValueError(f"embedding width {x.shape[-1]} is not a multiple of {n} factors")
        return x.unflatten(-1, (n, x.shape[-1] // n))

    def lift(self, feats: Tensor, log_alpha: Tensor, curv: Tensor) -> Tensor:
        """(..., D) features -> (..., D) points: per factor ``exp_map0(alpha_f * v_f; c_f)``
        (an alpha per factor and modality, as the authors' code)."""
        curv = curv.float()
        v = self.factors(feats, curv) * log_alpha.float().exp().unsqueeze(-1)
        return lorentz.exp_map0(v, curv).flatten(-2)

    def pairwise_distance(
        self, x: Tensor, y: Tensor, curv: Tensor, scale: Tensor | float | None = None
    ) -> Tensor:
        """(B1, D), (B2, D) -> (B1, B2) mean over factors of the geodesic distances.

        One :func:`hyvl.lorentz.pairwise_dist` per factor (its accuracy, its guards), summed
        into one (B1, B2) matrix; memory is one matrix per factor for backward.
        """
        xf, yf = self.factors(x, curv), self.factors(y, curv)
        n = curv.shape[-1]
        total = None
        for f in range(n):
            d = lorentz.pairwise_dist(xf[..., f, :], yf[..., f, :], curv[f])
            total = d if total is None else total + d
        total = total / n
        return total if scale is None else scale * total

    def pairwise_similarity(self, x: Tensor, y: Tensor, curv: Tensor) -> Tensor:
        """(B1, D), (B2, D) -> (B1, B2) negative product distances."""
        return -self.pairwise_distance(x, y, curv)

    def pairwise_angle_similarity(self, apex: Tensor, child: Tensor, curv: Tensor) -> Tensor:
        raise ConfigError(
            "objective.logits='angle' is not defined on a product of Lorentz factors "
            "(model.geometry=lorentz_product): use logits='distance'"
        )

    def distance_from_inner(self, ip, q_sq, y_sq, curv):
        require_single_space(self, "search by inner products")

    def augment_items(self, y: Tensor, curv) -> Tensor:
        require_single_space(self, "search by inner products")

    def augment_queries(self, q: Tensor, curv) -> Tensor:
        require_single_space(self, "search by inner products")

    def mean(self, points: Tensor, curv: Tensor) -> Tensor:
        """(..., N, D) -> (..., D): per factor, ``exp_map0`` of the mean ``log_map0``."""
        tangent = lorentz.log_map0(self.factors(points, curv), curv)
        return lorentz.exp_map0(tangent.mean(-3), curv).flatten(-2)

    def dist0(self, x: Tensor, curv: Tensor) -> Tensor:
        """(..., D) -> (...,) product distance to the origin: the mean of the factors'."""
        return lorentz.dist0(self.factors(x, curv), curv).mean(-1)

    def log_map0(self, x: Tensor, curv: Tensor) -> Tensor:
        """(..., D) -> (..., D) per-factor tangent vectors at the origin, concatenated."""
        return lorentz.log_map0(self.factors(x, curv), curv).flatten(-2)

    def cone_margin(self, apex: Tensor, child: Tensor, curv, min_radius: float) -> Tensor:
        """(R, D), (R, D) -> (R,): the per-factor margin, averaged over factors."""
        a, b = self.factors(apex, curv), self.factors(child, curv)
        margin = lorentz.half_aperture(a, curv, min_radius) - lorentz.oxy_angle(a, b, curv)
        return margin.mean(-1)

    def in_cone(
        self, apex: Tensor, child: Tensor, curv, aperture_scale: float, min_radius: float
    ) -> Tensor:
        """(R, D), (R, D) -> (R,) bool: inside the cone in every factor (PHyCLIP's entailment)."""
        a, b = self.factors(apex, curv), self.factors(child, curv)
        angle = lorentz.oxy_angle(a, b, curv)
        inside = angle <= aperture_scale * lorentz.half_aperture(a, curv, min_radius=min_radius)
        return inside.all(-1)

    def cone_violation(
        self, apex: Tensor, child: Tensor, curv: Tensor, aperture_scale: float, min_radius: float
    ) -> Tensor:
        """(R, D), (R, D) -> (R,): HyCoCLIP's ``relu(oxy_angle - k * half_aperture)`` in each
        factor, averaged over factors (PHyCLIP's entailment loss, as the authors' code)."""
        a, b = self.factors(apex, curv), self.factors(child, curv)
        angle = lorentz.oxy_angle(a, b, curv)
        aperture = lorentz.half_aperture(a, curv, min_radius=min_radius)
        return F.relu(angle - aperture_scale * aperture).mean(-1)


def require_single_space(space, what: str) -> None:
    """HyvlError (one line) when ``space`` (a geometry, its name or a model) is a product."""
    space = getattr(space, "space", space)
    if getattr(get_geometry(space), "product", False):
        raise HyvlError(
            f"{what} is not supported on a product of Lorentz factors (PHyCLIP, "
            "model.geometry=lorentz_product): its distance is the mean of the factors' "
            "distances, not one hyperboloid's; zero-shot, retrieval and SugarCrepe evaluation "
            "work"
        )


def require_distance_score(model, what: str) -> None:
    """HyvlError (one line) when ``model`` is not scored by its geometry's distance.

    ATMG's models (``model.score: atmg_angle``) rank captions by the exterior angle at the image,
    which is no function of one inner product or of the distance: an index or a geodesic walk
    ordered by distance would answer by a quantity the model was never trained on.
    """
    score = getattr(getattr(model, "config", None), "score", "distance")
    if score != "distance":
        raise HyvlError(
            f"{what} orders by the distance, but this model is scored by model.score={score!r} "
            "(ATMG's angle at the image), which the distance does not order; zero-shot, "
            "retrieval and SugarCrepe evaluation use its score (to order by distance anyway, "
            'set "score": "distance" in the export\'s config.json)'
        )


Geometry = Euclidean | Lorentz | LorentzProduct

_GEOMETRIES: dict[str, Geometry] = {g.name: g for g in (Lorentz(), Euclidean(), LorentzProduct())}
NAMES = tuple(_GEOMETRIES)


def get_geometry(name: str | Geometry) -> Geometry:
    """``"lorentz"`` -> :class:`Lorentz`, ``"euclidean"`` -> :class:`Euclidean` (shared, stateless).

    A geometry object is returned as it is, so functions may take either.
    """
    if isinstance(name, Euclidean | Lorentz):  # LorentzProduct is a Lorentz
        return name
    try:
        return _GEOMETRIES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"model geometry must be one of {NAMES}, got {name!r}") from None


__all__ = [
    "NAMES",
    "Euclidean",
    "Geometry",
    "Lorentz",
    "LorentzProduct",
    "get_geometry",
    "require_single_space",
]
