"""Measure hyvl.lorentz's fp32 accuracy against float64 truth, next to MERU-style fp32 formulas.

    python tools/geometry_accuracy.py            # table on stdout
    python tools/geometry_accuracy.py --json accuracy.json

For each curvature c, scaled radius r = sqrt(c)|x| and separation |x - y| / |x|,
random fp32 pairs are drawn (directions: random, tangential and radial, mixed
equally); the truth is evaluated in float64 on the same fp32 values with the
textbook formulas in full hyperboloid coordinates (acosh of the Lorentzian inner
product; the angle between tangent vectors at x). The MERU-style columns use the
published fp32 formulas (``acosh(clamp(-c <x,y>_L, 1 + eps))`` through a matmul;
``acos`` of the law-of-cosines ratio). Errors: max over the pairs; distances
relative, angles in radians.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hyvl.lorentz as L  # noqa: E402
from hyvl.cli.common import print_table, write_json  # noqa: E402


def lift(x: np.ndarray, c: float) -> np.ndarray:
    return np.concatenate([np.sqrt(1.0 / c + (x * x).sum(-1))[..., None], x], axis=-1)


def mink(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    return (p[..., 1:] * q[..., 1:]).sum(-1) - p[..., 0] * q[..., 0]


def truth_dist(x, y, c):
    # chord form (2/sqrt(c)) asinh(sqrt(c) ||X - Y||_L / 2): float64 acosh(1 + tiny) loses ~1e-7
    chord = lift(x, c) - lift(y, c)
    return 2 * np.arcsinh(np.sqrt(c * np.maximum(mink(chord, chord), 0.0)) / 2) / np.sqrt(c)


def truth_angle(x, y, c):
    X, Y = lift(x, c), lift(y, c)
    origin = np.zeros_like(X)
    origin[..., 0] = 1.0 / np.sqrt(c)
    to_y = Y + (c * mink(X, Y))[..., None] * X
    out = -(origin + (c * mink(X, origin))[..., None] * X)
    along = mink(to_y, out)
    perp = to_y - (along / mink(out, out))[..., None] * out
    return np.arctan2(np.sqrt(np.maximum(mink(perp, perp), 0.0) * mink(out, out)), along)


def meru_pairwise_dist(x, y, c, eps=1e-8):
    x_time = torch.sqrt(1 / c + (x * x).sum(-1, keepdim=True))
    y_time = torch.sqrt(1 / c + (y * y).sum(-1, keepdim=True))
    return torch.acosh(torch.clamp(-c * (x @ y.T - x_time @ y_time.T), min=1 + eps)) / c**0.5


def meru_oxy_angle(x, y, c, eps=1e-8):
    x_time = torch.sqrt(1 / c + (x * x).sum(-1))
    y_time = torch.sqrt(1 / c + (y * y).sum(-1))
    c_xyl = c * ((x * y).sum(-1) - x_time * y_time)
    ratio = (y_time + c_xyl * x_time) / (
        torch.linalg.vector_norm(x, dim=-1) * torch.sqrt(torch.clamp(c_xyl**2 - 1, min=eps)) + eps
    )
    return torch.acos(torch.clamp(ratio, min=-1 + eps, max=1 - eps))


def split_pairwise_dist(x, y, c):
    """``L.pairwise_dist`` forced onto the compensated split (what it runs off the CPU)."""
    with mock.patch.object(L, "pairwise_matmul", lambda t: "split"):
        return L.pairwise_dist(x, y, c)


def make_pairs(rng, n, dim, c, r, sep):
    x = rng.standard_normal((n, dim))
    x *= (r / np.sqrt(c) / np.linalg.norm(x, axis=-1))[:, None]
    unit = x / np.linalg.norm(x, axis=-1, keepdims=True)
    step = rng.standard_normal((n, dim))
    third = n // 3
    step[:third] -= (step[:third] * unit[:third]).sum(-1, keepdims=True) * unit[:third]
    step /= np.linalg.norm(step, axis=-1, keepdims=True)
    step[third : 2 * third] = unit[third : 2 * third]  # radial
    y = x + (sep * r / np.sqrt(c)) * step
    xf, yf = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    return xf, yf, xf.double().numpy(), yf.double().numpy()


def measure(c, r, sep, n, dim, seed):
    rng = np.random.default_rng(seed)
    x, y, xd, yd = make_pairs(rng, n, dim, c, r, sep)
    d = truth_dist(xd, yd, c)
    ang = truth_angle(xd, yd, c)

    far = d > 0.05  # the regime pairwise_dist is meant for (logits, ranking)

    def rel(t, keep=None):
        err = np.abs(t.double().numpy() - d) / d
        err = err if keep is None else err[keep]
        return float(err.max()) if err.size else float("nan")

    def rad(t, keep=None):
        err = np.abs(t.double().numpy() - ang)
        err = err if keep is None else err[keep]
        return float(err.max()) if err.size else float("nan")

    return {
        "c": c,
        "r": r,
        "sep": sep,
        "median_d": float(np.median(d)),
        "dist": rel(L.dist(x, y, c)),
        "pairwise_dist": rel(torch.diagonal(L.pairwise_dist(x, y, c))),
        "pairwise_dist_d>0.05": rel(torch.diagonal(L.pairwise_dist(x, y, c)), far),
        # the error-free split GPUs and float64 inputs use (pairwise_matmul's rule)
        "pairwise_dist_split": rel(torch.diagonal(split_pairwise_dist(x, y, c))),
        "pairwise_dist_split_d>0.05": rel(torch.diagonal(split_pairwise_dist(x, y, c)), far),
        "meru_pairwise_dist": rel(torch.diagonal(meru_pairwise_dist(x, y, c))),
        "meru_pairwise_dist_d>0.05": rel(torch.diagonal(meru_pairwise_dist(x, y, c)), far),
        "oxy_angle": rad(L.oxy_angle(x, y, c)),
        "pairwise_oxy_angle": rad(torch.diagonal(L.pairwise_oxy_angle(x, y, c))),
        "pairwise_oxy_angle_d>0.05": rad(torch.diagonal(L.pairwise_oxy_angle(x, y, c)), far),
        "meru_oxy_angle": rad(meru_oxy_angle(x, y, c)),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pairs", type=int, default=300, help="pairs per cell (default 300)")
    parser.add_argument("--dim", type=int, default=512, help="embedding dimension (default 512)")
    parser.add_argument("--curv", type=float, nargs="+", default=[0.1, 1.0, 10.0])
    parser.add_argument("--radius", type=float, nargs="+", default=[0.05, 0.5, 2.0, 5.0, 20.0])
    parser.add_argument("--sep", type=float, nargs="+", default=[1e-3, 1e-2, 0.1, 1.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="FILE", default=None, help="also write rows as JSON")
    args = parser.parse_args(argv)

    rows = []
    for c in args.curv:
        c = float(np.float32(c))
        for r in args.radius:
            for sep in args.sep:
                rows.append(measure(c, r, sep, args.pairs, args.dim, args.seed))
    print_table(rows, title="max error vs float64 truth (distances: relative; angles: rad)")
    summary = []
    keys = [k for k in rows[0] if k not in ("c", "r", "sep", "median_d")]
    for key in keys:
        for label, keep in (
            ("sep = 1e-3", lambda row: row["sep"] == min(args.sep)),
            ("r <= 5", lambda row: row["r"] <= 5),
            ("all", lambda row: True),
        ):
            values = [r[key] for r in rows if keep(r) and not np.isnan(r[key])]
            summary.append(
                {"quantity": key, "cells": label, "max_error": max(values, default=float("nan"))}
            )
    print()
    print_table(summary, title="worst case over c, r")
    write_json(args.json, {"rows": rows, "summary": summary, "dim": args.dim})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
