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

Accuracy (fp32, against float64 on the same inputs; ``tools/geometry_accuracy.py``
measures it next to MERU's formulas). MERU goes through ``acosh(-c <x, y>_L)``
and ``acos(ratio)``: for close points ``-c <x, y>_L = 1 + tiny`` is rounded
before ``acosh`` sees it, so in fp32 the distance of points ``1e-3 |x|`` apart
is ~100% wrong and the exterior angle is off by up to a radian. Here:

* Element-wise :func:`dist`, :func:`dist0`, :func:`inner`, :func:`exp_map0`,
  :func:`log_map0`, :func:`half_aperture` use cancellation-free forms: ~4e-7
  relative for ``r`` from 0.05 to 5, still ~1.5e-6 at ``r = 60``, at any
  separation. :func:`oxy_angle` is within ~2e-7 rad for ``r <= 5``; for far,
  radially aligned pairs its error grows like ``~3e-7 r`` rad (the input
  rounding of ``x`` and ``y`` already moves the true angle that much).
* Pairwise :func:`pairwise_dist` and :func:`pairwise_oxy_angle` (the
  ``(B1, B2)`` hot path) are matmuls, and a plain fp32 matmul's rounding
  (``~6e-8 c |x||y|`` in ``cosh(sqrt(c) d) - 1``) swamps close pairs. How they
  avoid that depends on the device (:func:`pairwise_matmul`): fp32 inputs on a
  CPU take one float64 matmul (products of fp32 values are exact in float64):
  ``pairwise_dist`` is then within ~2e-7 relative of the truth at every radius
  up to 20 and every separation down to ``1e-3 |x|`` (distances below the
  float64 rounding bound, ~5e-7 for ``sqrt(c)|x| ~ 1``, read 0). Elsewhere (GPUs,
  float64 inputs) an error-free split of the matmul (5 matmuls, 6x the FLOPs of
  one): within ~3e-6 relative wherever ``d > 0.05`` and ``r <= 5`` (MERU's
  form: 4e-3), ~1e-4 at ``r = 60``; closer pairs degrade (~6e-4 at
  ``1e-3 |x|``, ``r = 5``). Use it for logits and ranking, and :func:`dist` for
  the distance of given pairs. :func:`pairwise_inner` is a single plain matmul
  (cheap ranking score).

Element-wise functions accept any broadcastable ``(..., D)`` shapes; pairwise
ones take ``(B1, D)`` and ``(B2, D)`` (optionally with equal leading batch dims).

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
import torch.nn.functional as F
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
    "pairwise_matmul",
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
    :func:`dist` and rounded once, so it is within ~1 ulp of the exact value
    (the direct ``x . y - x_time y_time`` loses ``~c |x||y|`` ulps). An fp32
    result near ``-1/c`` cannot hold ``c <x, y>_L + 1`` for close points, though:
    use :func:`dist` for that.

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
    ``_exterior_angle_terms``), so in fp32 the angle is within ~2e-7 rad of the
    exact one for ``sqrt(c)|x| <= 5``, even when ``y`` is ``1e-3 |x|`` from ``x``.
    For far, radially aligned pairs the error grows like ``~3e-7 sqrt(c)|x|``
    rad: the exterior angle there is that sensitive to the rounding of the
    inputs' components themselves.

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
    if pairwise_matmul(x) == "float64":
        c = c if isinstance(c, Tensor) else torch.tensor(c, dtype=x.dtype, device=x.device)
        return _OxyAngle.apply(x, y, c, eps)
    return _oxy_angle(x, y, c, eps)[0]


def _oxy_angle(x: Tensor, y: Tensor, c: Curv, eps: float) -> tuple[Tensor, Tensor]:
    """(angle, degenerate) for :func:`oxy_angle` (see there), differentiable by autograd."""
    t = _PairTerms(x, y, c)
    big_y, big_x = _exterior_angle_terms(t, x, y, c)
    degenerate = (t.q <= 0.25 * eps * eps) | (_sqrt(c) * t.nx <= eps)
    safe = torch.atan2(
        torch.where(degenerate, torch.zeros_like(big_y), big_y),
        torch.where(degenerate, torch.ones_like(big_x), big_x),
    )
    # X = Y = 0 only at x = y or x = 0 (X may be -0.0, and atan2(0, -0) = pi).
    undefined = (big_x == 0) & (big_y == 0)
    frozen = torch.where(undefined, torch.zeros_like(safe), torch.atan2(big_y, big_x)).detach()
    return torch.where(degenerate, frozen, safe), degenerate


class _OxyAngle(torch.autograd.Function):
    """:func:`oxy_angle` with a backward from the Gram entries (the ``"float64"`` rule).

    The value is the exact (cancellation-free) one. The angle depends on ``x`` and ``y`` only
    through ``|x|^2``, ``|y|^2`` and ``x . y``, so its gradient is ``(2 a x + b y, 2 a' y + b x)``
    with per-row scalars: they come from autograd on ``(...,)`` float64 vectors through
    ``atan2(c sqrt(|x|^2 |y|^2 - (x.y)^2), sqrt(c) (y_t + c <x, y>_L x_t))``, whose float64
    cancellation costs only ~1e-8 relative in a gradient (more within ~1e-5 rad of the ray
    through ``x``; within 1e-6 rad the component across the ray, where the angle has a kink,
    is dropped as the exact form's subgradient does at 0). On a CPU this replaces about forty
    ``(..., D)`` passes of autograd through the exact form by six. Where the exact form zeroes
    the gradient (degenerate triangles) this does too.
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, c: Tensor, eps: float):
        angle, degenerate = _oxy_angle(x, y, c, eps)
        ctx.save_for_backward(x, y, c, degenerate)
        return angle

    @staticmethod
    def backward(ctx, g: Tensor):
        x, y, c, degenerate = ctx.saved_tensors
        xd, yd = x.double(), y.double()
        with torch.enable_grad():
            nx = xd.square().sum(dim=-1).requires_grad_()
            ny = yd.square().sum(dim=-1).requires_grad_()
            xy = (xd * yd).sum(dim=-1).requires_grad_()
            cd = c.detach().double().requires_grad_()
            xt, yt = torch.sqrt(1.0 / cd + nx), torch.sqrt(1.0 / cd + ny)
            lorentz_c = cd * (xy - xt * yt)  # c <x, y>_L = -cosh(delta)
            big_x = torch.sqrt(cd) * (yt + lorentz_c * xt)
            # |x|^2 |y|^2 sin^2(theta) carries float64 noise ~1e-16 |x|^2 |y|^2: within 1e-6 rad
            # of the ray through x (where the angle has a kink) its gradient is dropped.
            sin2 = nx * ny - xy.square()
            big_y = cd * _sqrt_grad_floor(sin2, floor=(1e-12 * nx * ny).detach())
            angle = torch.atan2(big_y, big_x)
            weight = torch.where(degenerate, 0.0, g.double()).expand(angle.shape)
            gnx, gny, gxy, gc = torch.autograd.grad(angle, (nx, ny, xy, cd), weight)
        gx = gy = None
        if ctx.needs_input_grad[0]:
            gx = (2.0 * gnx.unsqueeze(-1) * xd + gxy.unsqueeze(-1) * yd).to(x.dtype)
            gx = gx.sum_to_size(x.shape)
        if ctx.needs_input_grad[1]:
            gy = (2.0 * gny.unsqueeze(-1) * yd + gxy.unsqueeze(-1) * xd).to(y.dtype)
            gy = gy.sum_to_size(y.shape)
        return gx, gy, gc.to(c.dtype) if ctx.needs_input_grad[2] else None, None


# ----------------------------------------------------------------------------
# pairwise (matmul) functions
# ----------------------------------------------------------------------------


def _two_sum(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    # Knuth's TwoSum: a + b = s + err exactly (no FMA involved, so no contraction risk).
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _slices(x: Tensor, grid1: Tensor, grid2: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """x = a1 + a2 + a3 exactly: a1 on the grid ``grid1``, a2 on ``grid2``, a3 the rest."""
    a1 = torch.round(x / grid1) * grid1
    rest = x - a1  # exact: a1 is x rounded to a coarser power-of-two grid
    a2 = torch.round(rest / grid2) * grid2
    return a1, a2, rest - a2


def _row_grids(x: Tensor, beta: int) -> tuple[Tensor, Tensor]:
    # Per-row power of two >= max |x_k|; two grids 2^-beta and 2^-2beta below it.
    biggest = x.detach().abs().amax(dim=-1, keepdim=True).clamp(min=torch.finfo(x.dtype).tiny)
    top = torch.pow(2.0, torch.ceil(torch.log2(biggest)))
    top = torch.where(top < biggest, 2.0 * top, top)  # log2 may round down
    return top * 2.0**-beta, top * 2.0 ** (-2 * beta)


def _compensated_sqdist(x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
    """``|x_i - y_j|^2`` and ``|x_i|^2``, ``|y_j|^2`` (as hi + lo pairs), nearly exact.

    A single fp32 matmul gives ``x . y`` with error ``~2^-24 |x||y|``, so
    ``|x|^2 + |y|^2 - 2 x.y`` loses everything for close points. Following the
    error-free splitting idea of Ozaki et al. (2012), every row is split on
    power-of-two grids tied to its largest component, ``x = a1 + a2 + a3``,
    where ``a1`` and ``a2`` are integers of at most ``beta`` bits times the
    row's grid. ``beta`` is chosen so that ``3 D 4^beta <= 2^24``: the matmuls
    ``a1 b1``, ``a1 b2``, ``a2 b1``, ``a2 b2`` are then sums of integers below
    2^24 (exact in fp32 in any summation order; the slices have at most 8
    significant bits, so TF32 matmuls keep them exact too), and so are the differences ``a.(a1 - b1)`` they are grouped
    into whenever two rows' grids differ by at most a factor 2 (always true for
    close points). Those give ``|(a1 + a2) - (b1 + b2)|^2`` exactly for close
    pairs; only the tiny ``a3`` terms (one more matmul, width 2D, relative size
    ``2^-2beta``) are rounded. Cost: 5 matmuls with 6x the FLOPs of one.
    """
    depth = x.shape[-1]
    beta = (22 - math.ceil(math.log2(depth))) // 2 if depth > 1 else 11
    grid1x, grid2x = _row_grids(x, beta)
    grid1y, grid2y = _row_grids(y, beta)
    a1, a2, a3 = _slices(x, grid1x, grid2x)
    b1, b2, b3 = _slices(y, grid1y, grid2y)

    def rows(p: Tensor, q: Tensor) -> Tensor:
        return (p * q).sum(dim=-1)

    # Exact integer sums; each bracket, e.g. a1.(a1 - b1) = |a1|^2 - a1.b1, is
    # small (hence exact) when x_i ~ y_j, exactly where the cancellation used to
    # hurt. Built in place under no_grad so only a few (B1, B2) buffers are live.
    n11x, n11y = rows(a1, a1), rows(b1, b1)
    n22x, n22y = rows(a2, a2), rows(b2, b2)
    m12x, m12y = rows(a1, a2), rows(b1, b2)

    def bracket_pair(prod: Tensor, row_x: Tensor, row_y: Tensor) -> Tensor:
        # (row_x - prod) + (row_y - prod)
        first = row_x.unsqueeze(-1) - prod
        return first.add_(prod.neg_().add_(row_y.unsqueeze(-2)))

    sqdist = bracket_pair(a1 @ b1.mT, n11x, n11y)  # |a1 - b1|^2
    d1d2 = (a2 @ b1.mT).neg_().add_(m12x.unsqueeze(-1))  # a2.(a1 - b1)
    d1d2.add_((a1 @ b2.mT).neg_().add_(m12y.unsqueeze(-2)))  # - b2.(a1 - b1)
    sqdist.add_(d1d2, alpha=2.0)
    del d1d2
    sqdist.add_(bracket_pair(a2 @ b2.mT, n22x, n22y))  # |a2 - b2|^2
    # Rounded remainder: with f = x + (a1 + a2),
    # |x - y|^2 - |(a1 + a2) - (b1 + b2)|^2 = (f_x - f_y).(a3 - b3).
    fx, fy = x + (a1 + a2), y + (b1 + b2)
    rfx, rfy = rows(fx, a3), rows(fy, b3)
    rest = (torch.cat([fx, a3], dim=-1) @ torch.cat([b3, fy], dim=-1).mT).neg_()
    sqdist.add_(rest.add_(rfx.unsqueeze(-1)).add_(rfy.unsqueeze(-2)))
    del rest

    def norm_hi_lo(n11: Tensor, m12: Tensor, n22: Tensor, rf: Tensor) -> tuple[Tensor, Tensor]:
        hi, lo = _two_sum(n11, 2.0 * m12)
        hi, err = _two_sum(hi, n22)
        lo = lo + err
        hi, err = _two_sum(hi, rf)
        return _two_sum(hi, lo + err)

    nx_hi, nx_lo = norm_hi_lo(n11x, m12x, n22x, rfx)
    ny_hi, ny_lo = norm_hi_lo(n11y, m12y, n22y, rfy)
    return sqdist.clamp_(min=0), nx_hi, nx_lo, ny_hi, ny_lo


def pairwise_matmul(x: Tensor) -> str:
    """How the pairwise functions form their matmul for inputs like ``x``: the documented rule.

    * ``"float64"``: fp32 inputs on a CPU. One float64 matmul of the fp32 values: their
      products are exact in float64 and the sums are rounded at ``2^-53``, so cancellation
      costs nothing at fp32 output precision. A CPU runs float64 at half its fp32 SIMD rate
      (measured 1.4-2x the time of an fp32 matmul here), far below the split's 6x FLOPs.
    * ``"split"``: everything else. GPUs run float64 at 1/2 (A100, H100) to 1/64 (consumer
      cards) of their fp32 rate, while the split's exact slices also run on TF32 / fp32
      tensor cores; float64 inputs gain nothing from a float64 matmul either.
    """
    return "float64" if x.dtype == torch.float32 and x.device.type == "cpu" else "split"


def _float64_sqdist(x: Tensor, y: Tensor) -> tuple[Tensor, ...]:
    """Same outputs as ``_compensated_sqdist`` from one float64 matmul (the ``"float64"`` rule)."""
    xd, yd = x.double(), y.double()
    nx, ny = xd.square().sum(dim=-1), yd.square().sum(dim=-1)
    sq = (xd @ yd.mT).mul_(-2.0).add_(nx.unsqueeze(-1)).add_(ny.unsqueeze(-2))
    nx_hi, ny_hi = nx.to(x.dtype), ny.to(x.dtype)
    nx_lo, ny_lo = (nx - nx_hi).to(x.dtype), (ny - ny_hi).to(x.dtype)
    return sq.clamp_(min=0).to(x.dtype), nx_hi, nx_lo, ny_hi, ny_lo


class _PairwiseSqDist(torch.autograd.Function):
    """Compensated ``|x_i - y_j|^2`` and squared norms, with the plain analytic gradient.

    The slicing is piecewise constant, so autograd through it would be wrong;
    the backward uses ``d|x - y|^2 / dx = 2 (x - y)`` in matmul form instead
    (gradients need no extra precision). The ``lo`` parts carry no gradient.
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor):
        ctx.save_for_backward(x, y)
        out = (_float64_sqdist if pairwise_matmul(x) == "float64" else _compensated_sqdist)(x, y)
        ctx.mark_non_differentiable(out[2], out[4])
        return out

    @staticmethod
    def backward(ctx, g_sq, g_nx, _g_nx_lo, g_ny, _g_ny_lo):
        x, y = ctx.saved_tensors
        gx = gy = None
        if ctx.needs_input_grad[0]:
            gx = 2.0 * (g_sq.sum(dim=-1, keepdim=True) * x - g_sq @ y)
            gx = gx + 2.0 * g_nx.unsqueeze(-1) * x
            gx = gx.sum_to_size(x.shape)
        if ctx.needs_input_grad[1]:
            gy = 2.0 * (g_sq.sum(dim=-2).unsqueeze(-1) * y - g_sq.mT @ x)
            gy = gy + 2.0 * g_ny.unsqueeze(-1) * y
            gy = gy.sum_to_size(y.shape)
        return gx, gy


class _PairwiseTerms:
    """Per-pair pieces for the pairwise functions, from one compensated matmul.

    With ``n_x = |x|^2`` (hi + lo), ``sq = |x - y|^2`` (both from
    ``_compensated_sqdist``) and ``t = sqrt(c) x_time = sqrt(1 + c n_x)``:

        z = cosh(sqrt(c) d) - 1 = -c <x, y>_L - 1 = (c/2) (|x - y|^2 - (x_time - y_time)^2),
        x_time - y_time = (n_x - n_y) / (x_time + y_time),

    where ``n_x - n_y`` is formed from the hi and lo parts, so it keeps its
    relative accuracy for close points. The remaining rounding is
    ``~eps_fp32 * (1 + c |x|^2)`` relative in ``z`` (``x_time - y_time`` against
    ``|x - y|`` for radially separated points).
    """

    def __init__(self, x: Tensor, y: Tensor, c: Curv):
        sq, nx, nx_lo, ny, ny_lo = _PairwiseSqDist.apply(x, y)
        nx, ny = nx.clamp(min=0), ny.clamp(min=0)
        self.norm_diff2 = (nx.unsqueeze(-1) - ny.unsqueeze(-2)) + (
            nx_lo.unsqueeze(-1) - ny_lo.unsqueeze(-2)
        )  # |x|^2 - |y|^2
        self.ut_x = torch.sqrt(1.0 + c * nx)  # sqrt(c) x_time
        self.ut_y = torch.sqrt(1.0 + c * ny)
        ut_sum = self.ut_x.unsqueeze(-1) + self.ut_y.unsqueeze(-2)
        self.dut = -c * self.norm_diff2 / ut_sum  # sqrt(c) (y_time - x_time)
        self.nx, self.ny, self.sq = nx, ny, sq
        self.z = (0.5 * c * (sq - self.dut.square() / c)).clamp(min=0)


class _PairwiseDist(torch.autograd.Function):
    """``k * d_ij`` with ``d_ij = acosh(u_t v_t - u.v) / s``, ``u = s x``, ``v = s y``
    (``s = sqrt(c)``; ``k`` an optional scale, e.g. ``-logit_scale`` for logits).

    The ``"float64"`` rule of :func:`pairwise_matmul`, fused: one float64 matmul of the
    time-augmented rows ``[-u, u_t] . [v, v_t] / 2`` gives ``cosh(s d) / 2`` with an absolute
    error of ``~2^-54 (1 + c |x||y|)``; ``w = (cosh(s d) - 1) / 2 = sinh^2(s d / 2)`` is
    subtracted in float64 (exact) and rounded once to fp32. Everything on the ``(B1, B2)``
    matrix after that runs in place in fp32:

        t = sqrt(w (w + 1)) = sinh(s d) / 2,     s d = log1p(2 (w + t)) = acosh(1 + 2 w),

    (no cancellation for any ``w >= 0``; ``log1p`` and ``sqrt`` are vectorised where ``asinh``
    and ``sinh`` are not: measured ~9x and ~6x the time of ``log1p`` on this CPU). ``t`` is kept
    for the backward, ``dd/d cosh(s d) = 1 / (2 s t)``, which is then one division and two fp32
    matmuls. Hand-written because each pass over a ``(B, B)`` matrix costs about a third of a
    matmul on a CPU and autograd through the pieces makes about ten of them; folding ``k`` in
    saves one more pass each way.
    """

    @staticmethod
    def forward(ctx, x: Tensor, y: Tensor, s: Tensor, eps: float, k: Tensor | None):
        sd = s.double()
        u, v = x.double() * sd, y.double() * sd
        ut = torch.sqrt(1.0 + u.square().sum(dim=-1, keepdim=True))
        vt = torch.sqrt(1.0 + v.square().sum(dim=-1, keepdim=True))
        # cosh(s d) / 2 (the halving is exact), then w = (cosh(s d) - 1) / 2 in place in float64
        # (a float64 -> fp32 subtraction runs an unvectorised loop: ~10x a copy).
        w64 = torch.cat([-0.5 * u, 0.5 * ut], dim=-1) @ torch.cat([v, vt], dim=-1).mT
        w = w64.sub_(0.5).to(x.dtype)
        del w64
        # Below the matmul's rounding bound (D + 1 products and two rounded time components,
        # each term <= u_t v_t) w is noise: it becomes exactly 0, so identical points are at
        # distance 0 (ties stay ties) and negative noise is cut off.
        bound = (x.shape[-1] + 3) * 2.0**-54 * float(ut.max()) * float(vt.max()) if w.numel() else 0
        F.threshold_(w, bound, 0.0)
        t = torch.addcmul(w, w, w).sqrt_()  # sinh(s d) / 2
        scale = (1.0 if k is None else k) / s
        d = w.add_(t).mul_(2.0).log1p_().mul_(scale)  # k * acosh(1 + 2 w) / s
        # Where s d <= acosh(1 + eps) the slope of acosh is infinite: t := inf zeroes the
        # gradient there (t = sinh(s d) / 2 is increasing in d).
        F.threshold_(t, math.sqrt(0.5 * eps * (1.0 + 0.5 * eps)), math.inf)
        ctx.save_for_backward(x, y, s, t, d, k)
        ctx.scaled = k is not None
        return d

    @staticmethod
    def backward(ctx, g: Tensor):
        x, y, s, t, out, k = ctx.saved_tensors
        kk = k if ctx.scaled else 1.0
        # d out / d cosh(s d) = k / (2 s t); the scalar goes on the (B, D + 1) products.
        G = g / t
        f = kk / (2.0 * s)
        u, v = x * s, y * s
        ut = torch.sqrt(1.0 + u.square().sum(dim=-1, keepdim=True))
        vt = torch.sqrt(1.0 + v.square().sum(dim=-1, keepdim=True))
        # d(u_t v_t - u.v)/du_i = v_t u_i / u_t - v_j, and the mirror image for v_j.
        p = (G @ torch.cat([v, vt], dim=-1)) * f
        gu = u / ut * p[..., -1:] - p[..., :-1]
        q = (G.mT @ torch.cat([u, ut], dim=-1)) * f
        gv = v / vt * q[..., -1:] - q[..., :-1]
        g_out = torch.vdot(g.flatten(), out.flatten()) if any(ctx.needs_input_grad[2::2]) else 0
        gs = gk = None
        if ctx.needs_input_grad[2]:
            # out = k delta(s x, s y) / s: d out / ds = (d out/du . x + d out/dv . y) - out / s
            gs = (gu * x).sum() + (gv * y).sum() - g_out / s
        if ctx.scaled and ctx.needs_input_grad[4]:
            gk = g_out / k  # out = k d
        gx = (s * gu).sum_to_size(x.shape) if ctx.needs_input_grad[0] else None
        gy = (s * gv).sum_to_size(y.shape) if ctx.needs_input_grad[1] else None
        return gx, gy, gs, None, gk


@_fp32_island
def pairwise_inner(x: Tensor, y: Tensor, curv: Curv = 1.0) -> Tensor:
    """All-pairs Lorentzian inner product with a single matmul (a cheap ranking score).

    ``<x_i, y_j>_L = x_i . y_j - x_time_i y_time_j`` (MERU's definition), in
    ``(B1, B2)``. ``-<x, y>_L = cosh(sqrt(c) d) / c`` grows with distance, so it
    ranks neighbours at the cost of one matmul. Its rounding error is
    ``~1e-7 x_time y_time`` absolute: relative to the value that is small, but it
    swamps ``c <x, y>_L + 1`` for close points, so don't derive distances from
    it; :func:`pairwise_dist` is the accurate (compensated) one and :func:`inner`
    the exact element-wise one.

    Args:
        x: ``(B1, D)`` space components (leading batch dims allowed: ``(N, B1, D)``).
        y: ``(B2, D)`` space components (``(N, B2, D)``).
        curv: ``c > 0``.

    Returns:
        ``(B1, B2)`` inner products (<= ``-1/c`` up to rounding).
    """
    (x, y), c = _cast(x, y, curv=curv)
    x_time = torch.sqrt(1.0 / c + x.square().sum(dim=-1))
    y_time = torch.sqrt(1.0 / c + y.square().sum(dim=-1))
    return x @ y.mT - x_time.unsqueeze(-1) * y_time.unsqueeze(-2)


def _acosh1p(z: Tensor, eps: float) -> Tensor:
    # acosh(1 + z) = log1p(z + sqrt(z (z + 2))): no 1 + z rounding for small z.
    # The slope is infinite at z = 0, so the gradient is zeroed for z <= eps
    # (values stay exact).
    return torch.log1p(z + _sqrt_grad_floor(z * (z + 2.0), floor=eps * (eps + 2.0)))


@_fp32_island
def pairwise_dist(
    x: Tensor,
    y: Tensor,
    curv: Curv = 1.0,
    eps: float = 1e-8,
    *,
    scale: Tensor | float | None = None,
) -> Tensor:
    """All-pairs geodesic distance from matmuls: the contrastive-loss hot path.

    ``d_ij = acosh(1 + z_ij) / sqrt(c)`` with ``z = -c <x_i, y_j>_L - 1`` and
    ``acosh(1 + z) = log1p(z + sqrt(z (z + 2)))``, so nothing near 1 is rounded.

    Accuracy: MERU's ``acosh(clamp(-c <x, y>_L, min=1 + eps))`` takes
    ``x . y`` from one fp32 matmul, whose rounding (``~6e-8 |x||y|``) is the
    whole of ``z`` for close points: ~100% error when points are ``1e-3 |x|``
    apart, and ~4e-3 relative at ``d > 0.05`` once ``sqrt(c)|x|`` reaches 5.
    Here the matmul follows :func:`pairwise_matmul`:

    * ``"float64"`` (fp32 inputs on a CPU): one float64 matmul of the
      time-augmented rows gives ``1 + z`` to ``~2^-53 (1 + c|x||y|)``; measured
      within ~2e-7 relative of float64 truth everywhere in
      ``tools/geometry_accuracy.py`` (``sqrt(c)|x|`` up to 20, pairs ``1e-3 |x|``
      apart). ``z`` below the float64 rounding bound reads 0 (identical points
      are at distance exactly 0; the bound is ``~5e-7`` in ``sqrt(c) d`` for
      ``sqrt(c)|x| ~ 1``, growing like ``sqrt(1 + c max|x|^2)`` over the batch).
      Cost: about 1.5x one fp32 matmul, and a hand-written backward.
    * ``"split"`` (GPUs, float64 inputs): ``z = (c/2)(|x - y|^2 - (x_time -
      y_time)^2)`` with ``|x - y|^2`` and ``|x|^2 - |y|^2`` from an error-free
      split of the matmul (``_compensated_sqdist``: five matmuls, 6x the FLOPs
      of one). Within ~3e-6 relative wherever ``d > 0.05`` and
      ``sqrt(c)|x| <= 5``; the remaining rounding grows like ``1 + c |x|^2``
      for radially separated pairs (~4e-4 at ``sqrt(c)|x| = 60``) and for pairs
      closer than ``d ~ 0.05`` (~6e-4 at ``1e-3 |x|`` apart,
      ``sqrt(c)|x| = 5``). With TF32 matmuls
      (``torch.backends.cuda.matmul.allow_tf32``) the exact slices stay exact
      (they have at most 8 significant bits); only the small remainder
      products lose precision (not measured here: no GPU).

    Use :func:`dist` for given pairs (exact at any separation) and this for
    ``(B1, B2)`` logits and retrieval scores.

    Guard: where ``z <= eps`` (``sqrt(c) d`` below ~``sqrt(2 eps)``) the value is
    kept but the gradient is zeroed, as acosh's slope is infinite at 1 (MERU
    clamps the value there instead).

    Args:
        x: ``(B1, D)`` space components (leading batch dims allowed: ``(N, B1, D)``).
        y: ``(B2, D)`` space components (``(N, B2, D)``).
        curv: ``c > 0``.
        eps: gradient-free threshold on ``z``.
        scale: optional non-zero factor (a 0-dim tensor may require grad), e.g.
            ``-logit_scale`` for MERU's logits: ``scale * d``, multiplied inside the fused
            CPU path, which saves a pass over the ``(B1, B2)`` matrix each way.

    Returns:
        ``(B1, B2)`` distances >= 0 (times ``scale``).
    """
    (x, y), c = _cast(x, y, curv=curv)
    if scale is not None:
        scale = torch.as_tensor(scale, device=x.device).to(x.dtype)
    if pairwise_matmul(x) == "float64":
        s = _sqrt(c)
        s = s if isinstance(s, Tensor) else torch.tensor(s, dtype=x.dtype, device=x.device)
        return _PairwiseDist.apply(x, y, s, eps, scale)
    d = _acosh1p(_PairwiseTerms(x, y, c).z, eps) / _sqrt(c)
    return d if scale is None else scale * d


@_fp32_island
def pairwise_oxy_angle(x: Tensor, y: Tensor, curv: Curv = 1.0, eps: float = 1e-8) -> Tensor:
    """All-pairs exterior angle at ``x_i`` of triangle (origin, x_i, y_j).

    Same definition and ``atan2(Y, X)`` form as :func:`oxy_angle` (its diagonal
    for equal batch sizes), with the pieces taken from the compensated matmul
    of :func:`pairwise_dist` (unit coordinates, ``z = cosh(delta) - 1``):
    ``X = (t_y - t_x) - t_x z`` and ``Y = c |x||y| sin(theta) = c sqrt(G (2|x||y| - G))``
    with ``G = |x||y| (1 - cos theta) = (|x - y|^2 - (|x| - |y|)^2) / 2``.

    Accuracy: ``G`` is a difference, so its rounding (``~1e-7 |x - y|^2``)
    reaches the angle through a square root when ``theta`` is near 0 or pi,
    i.e. when ``y_j`` sits close to the ray through ``x_i``: measured errors up
    to ~1e-2 rad for ``d > 0.05``, ``sqrt(c)|x| <= 5`` (~5e-2 at 60), falling
    to ~1e-6 rad for angles well away from 0 and pi. Entailment cones far from the origin are thin
    (half-aperture ``asin(2K / r)``, 0.04 rad at ``r = 5``), so decide cone
    membership of specific pairs with :func:`oxy_angle` (exact); use this for
    ranking and plots.

    Where ``sqrt(c)|x_i| <= eps`` (apex at the origin) or ``sqrt(c) d_ij <= eps``
    (``y_j`` on top of ``x_i``) the angle is undefined; the result is 0 there
    with zero gradient, as for :func:`oxy_angle` at ``x = 0`` and ``x = y``.

    Args:
        x: ``(B1, D)`` apexes (parents).
        y: ``(B2, D)`` children.
        curv: ``c > 0``.
        eps: threshold for ``sqrt(c)|x_i|`` and ``sqrt(c) d_ij`` described above.

    Returns:
        ``(B1, B2)`` angles in ``[0, pi]``.
    """
    (x, y), c = _cast(x, y, curv=curv)
    t = _PairwiseTerms(x, y, c)
    nx, ny = torch.sqrt(t.nx).unsqueeze(-1), torch.sqrt(t.ny).unsqueeze(-2)
    norm_gap = t.norm_diff2 / _nonzero(nx + ny)  # |x| - |y|
    half_gap = (0.5 * (t.sq - norm_gap.square())).clamp(min=0)  # |x||y|(1 - cos theta)
    big_y = c * _sqrt_grad_floor(half_gap * (2.0 * nx * ny - half_gap).clamp(min=0), floor=0.0)
    big_x = t.dut - t.ut_x.unsqueeze(-1) * t.z
    degenerate = (t.z <= 0.5 * eps * eps) | (_sqrt(c) * nx <= eps)
    safe = torch.atan2(
        torch.where(degenerate, torch.zeros_like(big_y), big_y),
        torch.where(degenerate, torch.ones_like(big_x), big_x),
    )
    return torch.where(degenerate, torch.zeros_like(safe), safe)
