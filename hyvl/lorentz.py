"""Lorentz-model geometry on space components, accurate in fp32.

Conventions (MERU's, so MERU / HyCoCLIP code and checkpoints carry over):

* Hyperbolic space of dimension ``D`` with constant sectional curvature ``-c``
  (``c > 0`` is the ``curv`` argument everywhere) is the upper sheet of the
  hyperboloid ``<p, p>_L = -1/c`` in ``R^(D+1)``, with the Lorentzian inner product
  ``<p, q>_L = p_space . q_space - p_time * q_time``.
* Every function takes and returns only the space components ``x`` (last axis,
  size ``D``); the time component is implied:
  ``x_time = sqrt(1/c + |x|^2)`` (see :func:`time_component`).
* ``curv`` is a Python float or a 0-dim tensor; gradients flow to a tensor
  ``curv`` (MERU learns ``log c``). A float ``curv <= 0`` raises ``ValueError``; a
  tensor is not checked (that would synchronise a GPU).
* Many formulas are simplest in the scaled coordinates ``u = sqrt(c) x`` of the
  unit hyperboloid, where ``u_time = sqrt(1 + |u|^2)`` and distances are
  ``sqrt(c)`` times the true ones. Docstrings write ``r = sqrt(c) |x|``.

Precision. Half-precision inputs (fp16 / bf16) are computed in fp32 and returned
as fp32; float64 inputs stay float64. Every function disables autocast for its
body (``torch.autocast(device_type, enabled=False)`` plus explicit casts; note
that ``autocast(dtype=torch.float32)`` is a no-op on CPU), so it is an fp32
island even when called inside a bf16 / fp16 autocast region.

Accuracy. MERU's formulas go through ``acosh(-c <x, y>_L)`` and
``acos(ratio)``: when two points are close, ``-c <x, y>_L = 1 + tiny`` is rounded
before ``acosh`` sees it, so in fp32 their distance is ~100% wrong once the
points are about ``1e-3 |x|`` apart, and the exterior angle is off by tenths of a
radian. The element-wise functions here (:func:`dist`, :func:`dist0`,
:func:`inner`, :func:`oxy_angle`, :func:`exp_map0`, :func:`log_map0`,
:func:`half_aperture`) use forms free of that cancellation and agree with a
float64 evaluation of the exact formulas on the same inputs to ~1e-6 relative
(distances) or ~1e-6 rad (angles) in fp32 for ``r`` from 0.05 to beyond 5.
``tools/geometry_accuracy.py`` measures this against a MERU-style formula.

Element-wise vs pairwise. :func:`pairwise_dist`, :func:`pairwise_inner` and
:func:`pairwise_oxy_angle` are matmuls (the contrastive-loss hot path). A
matmul only sees ``x . y``, whose rounding error is ``~eps_fp32 * |x| |y|``, so
their absolute error in ``cosh(sqrt(c) d) - 1`` is ``~1e-7 * c |x| |y|``: fine for
logits and ranking (relative error ~1e-5 once ``d > 0.05`` for ``r`` up to about
2), useless for very close points. Use :func:`dist` (exact, element-wise, any
broadcastable shapes) whenever you need the distance between specific pairs,
and ``pairwise_dist`` for ``(B1, B2)`` logits and retrieval scores.

Guards. ``eps`` keeps MERU's signatures. Here it never shifts a value: each
function documents what ``eps`` does, which is either the switch point to a
Taylor series (maps) or the point below which a gradient is zeroed where the
exact derivative is infinite or undefined (distance at ``x = y``, aperture at
the cone's minimum radius, angle at a degenerate triangle). Values are exact on
both sides of the switch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from contextlib import nullcontext
from typing import TypeVar

import torch
from torch import Tensor

__all__ = [
    "dist",
    "dist0",
    "exp_map0",
    "half_aperture",
    "inner",
    "log_map0",
    "oxy_angle",
    "pairwise_dist",
    "pairwise_inner",
    "pairwise_oxy_angle",
    "time_component",
    "to_poincare",
]

Curv = float | Tensor

# MERU caps the sinh input of the exponential map at asinh(2**15), i.e. a mapped
# point never has sqrt(c)|x| above 2**15. Beyond that x_time^2 ~ 2**30 / c and
# products of two such points start to exhaust fp32's 24-bit mantissa, so keeping
# the same cap keeps published checkpoints' embeddings in the same region.
EXP_MAP_CAP = math.asinh(2.0**15)

_F = TypeVar("_F", bound=Callable[..., Tensor])


# ----------------------------------------------------------------------------
# fp32 island plumbing
# ----------------------------------------------------------------------------


def _autocast_off(device_type: str):
    # autocast(enabled=False) is the only way to leave an autocast region; on a
    # device type autocast doesn't know there is no region to leave.
    if torch.amp.is_autocast_available(device_type):
        return torch.autocast(device_type=device_type, enabled=False)
    return nullcontext()


def _fp32_island(fn: _F) -> _F:
    @functools.wraps(fn)
    def wrapper(x: Tensor, *args, **kwargs):
        with _autocast_off(x.device.type):
            return fn(x, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _cast(*tensors: Tensor, curv: Curv) -> tuple[list[Tensor], Curv]:
    """Cast inputs to the compute dtype (>= fp32) and ``curv`` along with them."""
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    if not dtype.is_floating_point or torch.finfo(dtype).bits < 32:
        dtype = torch.float32
    out = [t.to(dtype) for t in tensors]
    if isinstance(curv, Tensor):
        curv = curv.to(device=out[0].device, dtype=dtype)
    else:
        curv = float(curv)
        if not curv > 0:
            raise ValueError(f"curv must be positive (space curvature is -curv), got {curv}")
    return out, curv


def _sqrt(c: Curv) -> Curv:
    return c.sqrt() if isinstance(c, Tensor) else math.sqrt(c)


def _norm(x: Tensor) -> Tensor:
    # vector_norm's backward returns 0 (not NaN) at the zero vector.
    return torch.linalg.vector_norm(x, dim=-1)


def _nonzero(t: Tensor) -> Tensor:
    """``t`` with zeros replaced by 1, for denominators whose numerator is 0 there."""
    return torch.where(t > 0, t, torch.ones_like(t))


def _sqrt_grad_floor(q: Tensor, floor: float) -> Tensor:
    """``sqrt(max(q, 0))`` exactly, with the gradient zeroed where ``q <= floor``.

    sqrt has an infinite derivative at 0; below ``floor`` the value is still
    exact but detached, so the backward pass never evaluates ``1 / sqrt(0)``.
    """
    above = q > floor
    root = torch.sqrt(torch.where(above, q, torch.ones_like(q)))
    return torch.where(above, root, torch.sqrt(q.clamp(min=0)).detach())


# ----------------------------------------------------------------------------
# single-point functions
# ----------------------------------------------------------------------------


@_fp32_island
def time_component(x: Tensor, curv: Curv = 1.0) -> Tensor:
    """Time component of points on the hyperboloid.

    ``x_time = sqrt(1/c + |x|^2)``. Defined for every ``x``; no guard needed.

    Args:
        x: ``(..., D)`` space components.
        curv: ``c > 0``.

    Returns:
        ``(...,)`` time components (>= ``1/sqrt(c)``).
    """
    (x,), c = _cast(x, curv=curv)
    return torch.sqrt(1.0 / c + x.square().sum(dim=-1))


@_fp32_island
def dist0(x: Tensor, curv: Curv = 1.0) -> Tensor:
    """Geodesic distance from the hyperboloid's origin (vertex).

    ``d0(x) = asinh(sqrt(c) |x|) / sqrt(c)``, the same value as MERU-style
    ``acosh(sqrt(c) x_time) / sqrt(c)`` but without rounding ``sqrt(1 + r^2)`` to 1
    for small ``r`` first (acosh has an infinite slope at 1). asinh is accurate
    on its whole range, so no guard is needed; the gradient at ``x = 0`` is 0
    (the norm's subgradient).

    Args:
        x: ``(..., D)`` space components.
        curv: ``c > 0``.

    Returns:
        ``(...,)`` distances >= 0.
    """
    (x,), c = _cast(x, curv=curv)
    sqrt_c = _sqrt(c)
    return torch.asinh(sqrt_c * _norm(x)) / sqrt_c


def _sinhc(r: Tensor, series_below: float) -> Tensor:
    # sinh(r)/r; the Taylor series 1 + r^2/6 + r^4/120 (next term r^6/5040) is
    # exact to float64 precision for r < 1e-3 and avoids 0/0 at r = 0.
    small = r < series_below
    r_safe = torch.where(small, torch.ones_like(r), r)
    r2 = r.square()
    series = 1.0 + r2 / 6.0 + r2.square() / 120.0
    return torch.where(small, series, torch.sinh(r_safe) / r_safe)


def _asinhc(r: Tensor, series_below: float) -> Tensor:
    # asinh(r)/r; series 1 - r^2/6 + 3 r^4/40 (next term 15 r^6/336).
    small = r < series_below
    r_safe = torch.where(small, torch.ones_like(r), r)
    r2 = r.square()
    series = 1.0 - r2 / 6.0 + 0.075 * r2.square()
    return torch.where(small, series, torch.asinh(r_safe) / r_safe)


@_fp32_island
def exp_map0(x: Tensor, curv: Curv = 1.0, eps: float = 1e-8) -> Tensor:
    """Exponential map at the origin: tangent vectors -> points (space components).

    ``exp0(v) = sinh(r) / r * v`` with ``r = sqrt(c) |v|`` (the time component,
    ``cosh(r) / sqrt(c)``, is implied). Defined for every ``v``.

    Guards:
        * ``sinh(r) / r`` is evaluated as its Taylor series below
          ``r = min(eps, 1e-3)``, which is exact there and makes ``v = 0`` (0/0)
          harmless, with a finite gradient. (Above that, the direct quotient is
          accurate in value, and its derivative's cancellation only costs
          absolute ~1e-7 in the Jacobian.)
        * Overflow cap, as in MERU: ``sinh`` is evaluated at ``min(r,
          EXP_MAP_CAP)`` with ``EXP_MAP_CAP = asinh(2**15)``, so the output never
          exceeds ``sqrt(c)|x| = 2**15`` and keeps the direction of ``v``. Past the
          cap the output is ``2**15 / sqrt(c) * v/|v|``: its gradient is finite and
          only rotates it.

    Args:
        x: ``(..., D)`` tangent vectors at the origin (Euclidean vectors; MERU
            names this argument ``x``).
        curv: ``c > 0``.
        eps: below this ``r`` the Taylor series replaces ``sinh(r)/r``.

    Returns:
        ``(..., D)`` space components of the mapped points.
    """
    (v,), c = _cast(x, curv=curv)
    r = _sqrt(c) * _norm(v)
    capped = r.clamp(max=EXP_MAP_CAP)
    # sinh(min(r, cap)) / r = sinhc(min(r, cap)) * min(r, cap) / r
    cap_ratio = torch.where(r > EXP_MAP_CAP, EXP_MAP_CAP / _nonzero(r), torch.ones_like(r))
    scale = _sinhc(capped, min(eps, 1e-3)) * cap_ratio
    return v * scale.unsqueeze(-1)


@_fp32_island
def log_map0(x: Tensor, curv: Curv = 1.0, eps: float = 1e-8) -> Tensor:
    """Logarithmic map at the origin: points -> tangent vectors (inverse of exp_map0).

    ``log0(x) = asinh(r) / r * x`` with ``r = sqrt(c) |x|``. MERU computes the
    length as ``acosh(sqrt(1 + r^2))``, which in fp32 rounds to 0 for
    ``r < 3e-4`` and loses half the digits for small ``r``; ``asinh(r)`` does not.

    Guard: ``asinh(r) / r`` is its Taylor series below ``r = min(eps, 1e-3)``
    (exact there; no 0/0 at ``x = 0``, finite gradient).

    Args:
        x: ``(..., D)`` space components.
        curv: ``c > 0``.
        eps: below this ``r`` the Taylor series replaces ``asinh(r)/r``.

    Returns:
        ``(..., D)`` tangent vectors at the origin (their norm is ``dist0(x)``).
    """
    (x,), c = _cast(x, curv=curv)
    r = _sqrt(c) * _norm(x)
    return x * _asinhc(r, min(eps, 1e-3)).unsqueeze(-1)


@_fp32_island
def half_aperture(
    x: Tensor, curv: Curv = 1.0, min_radius: float = 0.1, eps: float = 1e-8
) -> Tensor:
    """Half-aperture of the entailment cone with apex ``x`` (MERU's definition).

    ``psi(x) = asin(min(1, 2K / r))`` with ``r = sqrt(c) |x|`` and ``K = min_radius``:
    the cone widens to a half-space (``psi = pi/2``) at and inside ``r = 2K``.
    Computed as ``atan2(2K, sqrt((r - 2K)(r + 2K)))``, the same angle without
    asin's loss of digits next to 1 (asin of ``1 - t`` has error ``~sqrt(t)``).

    Domain and conditioning: the true derivative is infinite at ``r = 2K``, so
    within ~1e-4 relative of that radius fp32 rounding of ``r`` itself
    (~1e-7) dominates the error; elsewhere the result is exact to a few ulps.

    Guard: the gradient is zeroed where ``(r - 2K)(r + 2K) <= eps * 8K^2``, i.e.
    ``r < 2K (1 + eps)``, which bounds ``|d psi / d r|`` by about
    ``1 / (2K sqrt(2 eps))`` instead of letting it reach infinity. Values are
    exact on both sides.

    Args:
        x: ``(..., D)`` space components of the cone apexes.
        curv: ``c > 0``.
        min_radius: ``K``; MERU's default 0.1.
        eps: relative width of the gradient-free band at ``r = 2K``.

    Returns:
        ``(...,)`` half-apertures in ``(0, pi/2]``.
    """
    (x,), c = _cast(x, curv=curv)
    two_k = 2.0 * min_radius
    r = _sqrt(c) * _norm(x)
    q = (r - two_k) * (r + two_k)
    root = _sqrt_grad_floor(q, floor=eps * 2.0 * two_k * two_k)
    return torch.atan2(torch.full_like(root, two_k), root)


@_fp32_island
def to_poincare(x: Tensor, curv: Curv = 1.0) -> Tensor:
    """Map hyperboloid points to the Poincare ball of radius ``1/sqrt(c)``.

    ``p = x / (1 + sqrt(c) x_time) = x / (1 + sqrt(1 + c |x|^2))``; the
    denominator is >= 2, so no guard is needed. Stereographic projection from
    ``(-1/sqrt(c), 0)``; distances are preserved (it is an isometry onto the ball
    with curvature ``-c``). Useful for 2-D plots.

    Args:
        x: ``(..., D)`` space components.
        curv: ``c > 0``.

    Returns:
        ``(..., D)`` Poincare-ball coordinates, ``|p| < 1/sqrt(c)``.
    """
    (x,), c = _cast(x, curv=curv)
    denom = 1.0 + torch.sqrt(1.0 + c * x.square().sum(dim=-1))
    return x / denom.unsqueeze(-1)


# ----------------------------------------------------------------------------
# element-wise pair functions (exact)
# ----------------------------------------------------------------------------


class _PairTerms:
    """Cancellation-free pieces shared by dist / inner / oxy_angle.

    With ``u = sqrt(c) x``, ``v = sqrt(c) y`` (unit hyperboloid), ``a = asinh|u|``,
    ``b = asinh|v|`` and ``theta`` the Euclidean angle between ``x`` and ``y``:

        -<u, v>_L = cosh(a) cosh(b) - sinh(a) sinh(b) cos(theta)
                  = cosh(a - b) + |u||v| (1 - cos theta),

    so with ``delta = sqrt(c) d(x, y)``

        q := sinh^2(delta / 2) = sinh^2((a - b) / 2) + c |x||y| sin^2(theta / 2),

    a sum of two non-negative terms, each computed without cancellation:

    * ``sinh(a - b) = c (|x|^2 - |y|^2) / (r_x u_t(y) + r_y u_t(x))``, where
      ``|x|^2 - |y|^2 = (x - y) . (x + y)`` keeps its relative accuracy however
      close the points are.
    * ``|x||y| sin(theta/2) = |h| / 2`` with ``h = |y| x - |x| y``, formed as
      ``|y| (x - y) - y (|x| - |y|)`` (or the mirror image using the
      shorter vector) so that only the exact difference ``x - y`` and
      ``|x| - |y| = (x - y).(x + y) / (|x| + |y|)`` enter.

    The remaining rounding is ``~eps_fp32 * |x - y|`` in ``h``, which costs at
    most ``~eps_fp32 * sqrt(1 + r^2)`` relative in ``q``.
    """

    def __init__(self, x: Tensor, y: Tensor, c: Curv):
        nx, ny = _norm(x), _norm(y)
        w = x - y
        w_dot_s = (w * (x + y)).sum(dim=-1)  # |x|^2 - |y|^2 without cancellation
        sqrt_c = _sqrt(c)
        rx, ry = sqrt_c * nx, sqrt_c * ny
        ut_x = torch.sqrt(1.0 + rx.square())  # sqrt(c) * x_time
        ut_y = torch.sqrt(1.0 + ry.square())

        # Radial part: sinh^2((a-b)/2) = S^2 / (2 (cosh(a-b) + 1)), S = sinh(a-b).
        # The denominator vanishes only when both points are the origin, where
        # the numerator is 0 too.
        sinh_ab = c * w_dot_s / _nonzero(rx * ut_y + ry * ut_x)
        radial = sinh_ab.square() / (2.0 * (torch.sqrt(1.0 + sinh_ab.square()) + 1.0))

        # Angular part: h = |y| x - |x| y built from the shorter of the two
        # vectors, so its rounding is eps * min(|x|,|y|) * |x - y|.
        norm_diff = w_dot_s / _nonzero(nx + ny)  # |x| - |y|
        y_shorter = (ny <= nx).unsqueeze(-1)
        shorter = torch.where(y_shorter, y, x)
        h = torch.minimum(nx, ny).unsqueeze(-1) * w - shorter * norm_diff.unsqueeze(-1)
        hn = _norm(h)
        # c |x||y| sin^2(theta/2) = c |h|^2 / (4 |x||y|), split to avoid underflow;
        # h = 0 whenever x or y is 0, so the placeholder denominators are harmless.
        nx_safe, ny_safe = _nonzero(nx), _nonzero(ny)
        angular = c * (hn / nx_safe) * (hn / ny_safe) / 4.0

        self.nx, self.ny, self.w, self.w_dot_s = nx, ny, w, w_dot_s
        self.nx_safe, self.ny_safe = nx_safe, ny_safe
        self.ut_x, self.ut_y, self.hn = ut_x, ut_y, hn
        self.q = radial + angular


@_fp32_island
def inner(x: Tensor, y: Tensor, curv: Curv = 1.0) -> Tensor:
    """Element-wise Lorentzian inner product of the full hyperboloid points.

    ``<x, y>_L = x . y - x_time y_time = -cosh(sqrt(c) d(x, y)) / c``, computed as
    ``-(1 + 2 sinh^2(sqrt(c) d / 2)) / c`` from the cancellation-free pieces of
    :func:`dist`, so ``c <x, y>_L + 1`` stays accurate for close points.

    Args:
        x: ``(..., D)`` space components.
        y: ``(..., D)`` space components, broadcastable with ``x``.
        curv: ``c > 0``.

    Returns:
        ``(...,)`` inner products (<= ``-1/c``).
    """
    (x, y), c = _cast(x, y, curv=curv)
    q = _PairTerms(x, y, c).q
    return -(1.0 + 2.0 * q) / c


@_fp32_island
def dist(x: Tensor, y: Tensor, curv: Curv = 1.0, eps: float = 1e-8) -> Tensor:
    """Element-wise geodesic distance, exact for close points.

    ``d(x, y) = acosh(-c <x, y>_L) / sqrt(c) = 2 asinh(sqrt(q)) / sqrt(c)`` with
    ``q = sinh^2(sqrt(c) d / 2)`` (a quarter of the squared Minkowski norm of
    ``sqrt(c)(x - y)`` in full coordinates) built from two non-negative terms, a
    radial one and an angular one, see ``_PairTerms``. Unlike ``acosh(1 + tiny)``
    nothing is rounded away, so points ``1e-3 |x|`` apart (or much closer) get
    their distance to a few ulps in fp32.

    Guard: ``d`` is not differentiable at ``x = y`` (like a norm at 0). Where
    ``sqrt(c) d < eps`` the value is still exact but its gradient is zeroed, so
    backward never forms ``1 / sqrt(0)``.

    Args:
        x: ``(..., D)`` space components.
        y: ``(..., D)`` space components, broadcastable with ``x``.
        curv: ``c > 0``.
        eps: below ``sqrt(c) d = eps`` the gradient is zeroed.

    Returns:
        ``(...,)`` distances >= 0.
    """
    (x, y), c = _cast(x, y, curv=curv)
    q = _PairTerms(x, y, c).q
    half_chord = _sqrt_grad_floor(q, floor=0.25 * eps * eps)  # sinh(sqrt(c) d / 2)
    return 2.0 * torch.asinh(half_chord) / _sqrt(c)


def _exterior_angle_terms(t: _PairTerms, x: Tensor, y: Tensor, c: Curv) -> tuple[Tensor, Tensor]:
    """(Y, X) with exterior angle = atan2(Y, X); both carry the factor sqrt(c)|x| sinh(delta).

    In unit coordinates (``u = sqrt(c) x``, ``v = sqrt(c) y``, ``w = u - v``):

    * ``X = u_t(v) - u_t(u) cosh(delta) = u . (u_t(u) v - u_t(v) u)``
      ``= -[(u.w)(2 + u_t(u)(u_t(v) - u_t(u))) + |u|^2 |w|^2] / (u_t(u) + u_t(v))``,
      where ``u_t(v) - u_t(u) = -(|u|^2 - |v|^2) / (u_t(u) + u_t(v))``: no term
      is a difference of nearly equal large numbers.
    * ``Y = |u||v| sin(theta) = c |h| cos(theta/2)`` with ``h`` from
      ``_PairTerms`` and ``cos(theta/2) = | |y| x + |x| y | / (2 |x||y|)``.
    """
    ut_x, ut_y = t.ut_x, t.ut_y
    ut_sum = ut_x + ut_y
    dut = -c * t.w_dot_s / ut_sum  # u_t(v) - u_t(u)
    x_dot_w = (x * t.w).sum(dim=-1)
    w2 = t.w.square().sum(dim=-1)
    big_x = -(c * x_dot_w * (2.0 + ut_x * dut) + c * c * t.nx.square() * w2) / ut_sum
    k = t.ny.unsqueeze(-1) * x + t.nx.unsqueeze(-1) * y
    cos_half = _norm(k) / (2.0 * t.nx_safe * t.ny_safe)
    big_y = c * t.hn * cos_half
    return big_y, big_x


@_fp32_island
def oxy_angle(x: Tensor, y: Tensor, curv: Curv = 1.0, eps: float = 1e-8) -> Tensor:
    """Exterior angle at ``x`` of the hyperbolic triangle (origin, x, y) (MERU's definition).

    The angle at ``x`` between the geodesic from ``x`` to ``y`` and the geodesic
    ray from the origin through ``x``, continued beyond ``x``. ``y`` lies in the
    entailment cone of ``x`` iff ``oxy_angle(x, y) <= half_aperture(x)``.

    MERU evaluates ``acos((y_t + c<x,y>_L x_t) / (|x| sqrt((c<x,y>_L)^2 - 1)))``
    (law of cosines); that ratio is 0/0-like for close points and acos loses
    half the digits near 0 and pi. Here, with ``delta = sqrt(c) d(x, y)``,

        angle = atan2(Y, X),  X = sqrt(c)|x| sinh(delta) cos(angle),
                              Y = sqrt(c)|x| sinh(delta) sin(angle) = c |x||y| sin(theta),

    (``Y`` from the hyperbolic law of sines, ``theta`` the angle between ``x`` and
    ``y`` at the origin), both formed without cancellation (see
    ``_exterior_angle_terms``), so the angle is accurate to ~1e-6 rad in fp32
    even when ``y`` is ``1e-3 |x|`` from ``x``.

    Degenerate triangles: at ``x = y`` or ``x = 0`` the angle is undefined and
    ``X = Y = 0`` exactly; the result there is 0 (the apex is taken to be inside
    its own cone; MERU's eps-clamped formula happens to return pi/2).

    Guard: the angle's gradient grows like ``1/delta`` and ``1/|x|``; where
    ``delta < eps`` or ``sqrt(c)|x| < eps`` the value is exact but the gradient is
    zeroed (no 0/0 in backward).

    Args:
        x: ``(..., D)`` space components of the cone apexes (MERU: the parent).
        y: ``(..., D)`` space components, broadcastable with ``x`` (the child).
        curv: ``c > 0``.
        eps: gradient-free threshold for ``delta`` and ``sqrt(c)|x|``.

    Returns:
        ``(...,)`` angles in ``[0, pi]``.
    """
    (x, y), c = _cast(x, y, curv=curv)
    t = _PairTerms(x, y, c)
    big_y, big_x = _exterior_angle_terms(t, x, y, c)
    degenerate = (t.q <= 0.25 * eps * eps) | (_sqrt(c) * t.nx <= eps)
    safe = torch.atan2(
        torch.where(degenerate, torch.zeros_like(big_y), big_y),
        torch.where(degenerate, torch.ones_like(big_x), big_x),
    )
    return torch.where(degenerate, torch.atan2(big_y, big_x).detach(), safe)


# ----------------------------------------------------------------------------
# pairwise (matmul) functions
# ----------------------------------------------------------------------------


def _pairwise_terms(x: Tensor, y: Tensor, c: Curv) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``z = -c <x_i, y_j>_L - 1 = cosh(sqrt(c) d_ij) - 1`` with one matmul.

    With ``u = sqrt(c) x``, ``alpha(u) = u_t - 1 = |u|^2 / (u_t + 1)`` (no
    cancellation):

        z = u_t(u) u_t(v) - 1 - u . v = alpha(u) u_t(v) + alpha(v) - u . v,

    so the constant 1 never meets the matmul: near the origin the rounding is
    relative to ``|u||v|`` instead of to 1. Returns ``(z, u . v, u_t(u), u_t(v))``.
    """
    sqrt_c = _sqrt(c)
    u, v = sqrt_c * x, sqrt_c * y
    u2, v2 = u.square().sum(dim=-1), v.square().sum(dim=-1)
    ut_u, ut_v = torch.sqrt(1.0 + u2), torch.sqrt(1.0 + v2)
    alpha_u, alpha_v = u2 / (ut_u + 1.0), v2 / (ut_v + 1.0)
    bias = alpha_u.unsqueeze(-1) * ut_v.unsqueeze(-2) + alpha_v.unsqueeze(-2)
    u_dot_v = u @ v.mT
    return bias - u_dot_v, u_dot_v, ut_u, ut_v


@_fp32_island
def pairwise_inner(x: Tensor, y: Tensor, curv: Curv = 1.0) -> Tensor:
    """All-pairs Lorentzian inner product (one matmul).

    ``<x_i, y_j>_L = x_i . y_j - x_time_i y_time_j``, returned as ``-(1 + z) / c``
    with ``z`` from the cancellation-limiting form in ``pairwise_dist``.

    Args:
        x: ``(B1, D)`` (or ``(N, B1, D)``) space components.
        y: ``(B2, D)`` (or ``(N, B2, D)``) space components.
        curv: ``c > 0``.

    Returns:
        ``(B1, B2)`` inner products.
    """
    (x, y), c = _cast(x, y, curv=curv)
    z = _pairwise_terms(x, y, c)[0]
    return -(1.0 + z) / c


def _acosh1p(z: Tensor, eps: float) -> Tensor:
    # acosh(1 + z) = log1p(z + sqrt(z (z + 2))): no 1 + z rounding for small z.
    # The slope is infinite at z = 0, so the gradient is zeroed for z <= eps
    # (values stay exact); rounding can make z slightly negative, hence max(z, 0).
    z = z.clamp(min=0)
    return torch.log1p(z + _sqrt_grad_floor(z * (z + 2.0), floor=eps * (eps + 2.0)))


@_fp32_island
def pairwise_dist(x: Tensor, y: Tensor, curv: Curv = 1.0, eps: float = 1e-8) -> Tensor:
    """All-pairs geodesic distance with one matmul: the contrastive-loss hot path.

    ``d_ij = acosh(1 + z_ij) / sqrt(c)``, ``z_ij = -c <x_i, y_j>_L - 1``, with ``z``
    formed so that the constant 1 never cancels (see
    ``_pairwise_terms``) and ``acosh(1 + z) = log1p(z + sqrt(z (z + 2)))``.

    Accuracy: the matmul's rounding (~``1e-7 * c |x_i| |y_j|`` absolute in
    ``z``) cannot be avoided by any single matmul, so the relative error is about
    ``1e-7 * r_x r_y / (sqrt(c) d)^2``: ~1e-5 for ``d > 0.05`` at ``r <= 2``,
    growing for very close or far-from-origin points. For exact distances of
    given pairs use :func:`dist`. (MERU's form ``acosh(clamp(-c<x,y>_L, 1+eps))``
    is ~100% off for points ``1e-3 |x|`` apart.) TF32 matmuls
    (``torch.backends.cuda.matmul.allow_tf32``) multiply this error by ~1000.

    Guard: where ``z <= eps`` (``sqrt(c) d`` below ~``sqrt(2 eps)``, inside the
    matmul's noise anyway) the value is kept but the gradient is zeroed, as
    acosh's slope is infinite at 1 (MERU clamps the value there instead).

    Args:
        x: ``(B1, D)`` (or ``(N, B1, D)``) space components.
        y: ``(B2, D)`` (or ``(N, B2, D)``) space components.
        curv: ``c > 0``.
        eps: gradient-free threshold on ``z``.

    Returns:
        ``(B1, B2)`` distances >= 0.
    """
    (x, y), c = _cast(x, y, curv=curv)
    z = _pairwise_terms(x, y, c)[0]
    return _acosh1p(z, eps) / _sqrt(c)


@_fp32_island
def pairwise_oxy_angle(x: Tensor, y: Tensor, curv: Curv = 1.0, eps: float = 1e-8) -> Tensor:
    """All-pairs exterior angle at ``x_i`` of triangle (origin, x_i, y_j), via matmuls.

    Same definition as :func:`oxy_angle` (its diagonal for equal batch sizes), as
    ``atan2(Y, X)`` with, in unit coordinates and ``z = cosh(delta) - 1``,
    ``X = (u_t(v) - u_t(u)) - u_t(u) z`` and
    ``Y = |u||v| sin(theta) = sqrt((|u||v| - u.v)(|u||v| + u.v))``.
    ``u . v`` comes from a matmul, so the accuracy is matmul-limited like
    :func:`pairwise_dist` (fine for ranking pairs ``d > 0.05`` apart; use
    :func:`oxy_angle` for exact angles of given pairs). Where
    ``sqrt(c)|x_i| <= eps`` (apex at the origin) or ``z <= eps`` (``y_j`` within
    the matmul's noise of ``x_i``) the angle is undefined or noise; the result is
    0 there with zero gradient, matching :func:`oxy_angle` at ``x = 0`` and
    ``x = y``.

    Args:
        x: ``(B1, D)`` apexes (parents).
        y: ``(B2, D)`` children.
        curv: ``c > 0``.
        eps: gradient-free threshold for ``sqrt(c)|x_i|`` and for ``z``.

    Returns:
        ``(B1, B2)`` angles in ``[0, pi]``.
    """
    (x, y), c = _cast(x, y, curv=curv)
    z, u_dot_v, ut_u, ut_v = _pairwise_terms(x, y, c)
    sqrt_c = _sqrt(c)
    ru, rv = sqrt_c * _norm(x), sqrt_c * _norm(y)
    rr = ru.unsqueeze(-1) * rv.unsqueeze(-2)
    big_y = _sqrt_grad_floor((rr - u_dot_v) * (rr + u_dot_v), floor=0.0)
    big_x = (ut_v.unsqueeze(-2) - ut_u.unsqueeze(-1)) - ut_u.unsqueeze(-1) * z
    degenerate = (z.clamp(min=0) <= eps) | (ru <= eps).unsqueeze(-1)
    safe = torch.atan2(
        torch.where(degenerate, torch.zeros_like(big_y), big_y),
        torch.where(degenerate, torch.ones_like(big_x), big_x),
    )
    return torch.where(degenerate, torch.zeros_like(safe), safe)
