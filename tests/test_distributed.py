"""Two gloo processes give the gradients of one process on the concatenated batch.

What "equal" means with unequal local batch sizes: the loss of one process on the whole batch
is a mean over all ``B = B_0 + B_1`` rows. Each rank contributes ``(W / B) * sum over its rows``
(``hyvl.objectives.distributed``); the gather's backward sums gradients over ranks and DDP
averages them, so each rank's parameter gradient must equal the one-process gradient of the
mean over all ``B`` rows, and the mean over ranks of the logged loss must equal that loss.

The tower is a tiny linear model with the real lift (alpha scale + exp_map0 with a learnable
curvature, or L2 normalisation) and a learnable logit scale, wrapped together with the
objective in DDP (so the SigLIP bias and UNCHA's two box scales are averaged like any
parameter). Images and box images go through the image tower in one call, as in the model.
PHyCLIP's case lifts per factor (2 factors, a curvature and an alpha per factor and modality).
UNCHA's case runs without its calibration term: that term's entropy is over each process's own
box rows by design, so only the rest (the gathered box rows and both box scales included) is a
whole-batch quantity to compare.
"""

from __future__ import annotations

import datetime
import itertools
import math
import os
import tempfile

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from hyvl import lorentz as L
from hyvl.config import ObjectiveConfig
from hyvl.models.embeddings import Embeddings
from hyvl.objectives import build_objective, gather_with_grad
from hyvl.objectives import distributed as dist_mod
from hyvl.objectives.objective import BOX_KINDS

IN_DIM, EMBED_DIM, BOXES = 5, 4, 2
FACTORS = 2  # lorentz_product: 2 factors of dimension EMBED_DIM / FACTORS, a curvature each
DTYPES = (torch.float64, torch.float32)

# (name, objective config, geometry, local batch sizes of rank 0 and rank 1)
CASES = [
    ("clip_equal", dict(kind="clip"), "euclidean", (4, 4)),
    ("clip_unequal", dict(kind="clip"), "euclidean", (3, 5)),
    ("clip_sigmoid_unequal", dict(kind="clip", loss="sigmoid"), "euclidean", (5, 2)),
    ("meru_equal", dict(kind="meru"), "lorentz", (4, 4)),
    ("meru_unequal", dict(kind="meru"), "lorentz", (3, 5)),
    ("meru_angle_sigmoid_unequal", dict(kind="meru", logits="angle", loss="sigmoid"), "lorentz", (3, 5)),
    ("hycoclip_equal", dict(kind="hycoclip"), "lorentz", (4, 4)),
    ("hycoclip_unequal", dict(kind="hycoclip"), "lorentz", (3, 5)),
    ("hycoclip_angle_sigmoid_unequal", dict(kind="hycoclip", logits="angle", loss="sigmoid"), "lorentz", (5, 3)),
    # UNCHA without its calibration: the calibration's entropy is over each process's own box
    # rows by design (docs/objectives.md), so it is not a whole-batch quantity; every other term
    # (the three contrastive pairs with the gathered box rows and box scales, the entailment)
    # must match one process.
    ("uncha_nocalib_unequal", dict(kind="uncha", uncha_calibration_weight=0.0), "lorentz", (3, 5)),
    ("phyclip_unequal", dict(kind="phyclip"), "lorentz_product", (5, 3)),
]  # fmt: skip


class TinyTower(nn.Module):
    """Linear image/text "towers" followed by the model's lift, deterministic init."""

    def __init__(self, geometry: str):
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.geometry = geometry
        self.image_proj = nn.Parameter(torch.randn(EMBED_DIM, IN_DIM, generator=gen) * 0.3)
        self.text_proj = nn.Parameter(torch.randn(EMBED_DIM, IN_DIM, generator=gen) * 0.2)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))
        if geometry == "lorentz":
            self.log_curv = nn.Parameter(torch.tensor(math.log(1.2)))
            self.log_alpha_image = nn.Parameter(torch.tensor(-0.1))
            self.log_alpha_text = nn.Parameter(torch.tensor(-0.3))
        elif geometry == "lorentz_product":
            self.log_curv = nn.Parameter(torch.tensor([1.2, 0.7]).log())
            self.log_alpha_image = nn.Parameter(torch.tensor([-0.1, -0.2]))
            self.log_alpha_text = nn.Parameter(torch.tensor([-0.3, -0.25]))

    def _lift(self, feats: torch.Tensor, log_alpha: torch.Tensor | None) -> torch.Tensor:
        if self.geometry == "euclidean":
            return nn.functional.normalize(feats, dim=-1)
        if self.geometry == "lorentz_product":  # per factor, in the input's dtype
            v = feats.unflatten(-1, (FACTORS, -1)) * log_alpha.exp().unsqueeze(-1)
            return L.exp_map0(v, self.log_curv.exp()).flatten(-2)
        return L.exp_map0(feats * log_alpha.exp(), self.log_curv.exp())

    def forward(self, images, texts, box_images, box_texts) -> Embeddings:
        n = images.shape[0]
        boxes = box_images is not None
        img = torch.cat([images, box_images]) if boxes else images
        txt = torch.cat([texts, box_texts]) if boxes else texts
        img = self._lift(img @ self.image_proj.T, getattr(self, "log_alpha_image", None))
        txt = self._lift(txt @ self.text_proj.T, getattr(self, "log_alpha_text", None))
        return Embeddings(
            image=img[:n],
            text=txt[:n],
            box_image=img[n:] if boxes else None,
            box_text=txt[n:] if boxes else None,
            curv=self.log_curv.exp() if self.geometry != "euclidean" else None,
            logit_scale=self.log_scale.exp(),
        )


class TowerAndObjective(nn.Module):
    def __init__(self, cfg: ObjectiveConfig, geometry: str):
        super().__init__()
        self.tower = TinyTower(geometry)
        self.objective = build_objective(cfg, geometry)

    def forward(self, images, texts, box_images, box_texts):
        return self.objective(self.tower(images, texts, box_images, box_texts))


def make_batch(total: int, with_boxes: bool, dtype: torch.dtype):
    gen = torch.Generator().manual_seed(total * 31 + 7)
    rows = [total, total] + ([total * BOXES, total * BOXES] if with_boxes else [])
    # images, texts, then (sample-major: rows i*k .. i*k+k-1 belong to sample i) box images/texts
    tensors = [torch.randn(n, IN_DIM, generator=gen).to(dtype) for n in rows]
    return (*tensors, None, None) if not with_boxes else tuple(tensors)


def local_slice(batch, start: int, stop: int):
    images, texts, box_images, box_texts = batch
    if box_images is None:
        return images[start:stop], texts[start:stop], None, None
    return (
        images[start:stop],
        texts[start:stop],
        box_images[start * BOXES : stop * BOXES],
        box_texts[start * BOXES : stop * BOXES],
    )


def _grads(module: nn.Module) -> dict[str, torch.Tensor]:
    return {
        name.removeprefix("module."): p.grad.detach().clone()
        for name, p in module.named_parameters()
        if p.grad is not None
    }


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        results = {}
        # gather_with_grad on its own: offsets, sizes, and the local slice being the input.
        x = torch.full((2 + rank, 3), float(rank), requires_grad=True)
        x_all, offset = gather_with_grad(x)
        (x_all.sum() * (rank + 1)).backward()
        results["gather"] = {
            "rows": x_all.detach(),
            "offset": offset,
            "grad": x.grad.clone(),
            "sizes": dist_mod.gather_sizes(x.shape[0]),
        }
        for (name, cfg_kw, geometry, sizes), dtype in itertools.product(CASES, DTYPES):
            cfg = ObjectiveConfig(**cfg_kw)
            batch = make_batch(sum(sizes), cfg.kind in BOX_KINDS, dtype)
            start = sum(sizes[:rank])
            local = local_slice(batch, start, start + sizes[rank])
            model = nn.parallel.DistributedDataParallel(TowerAndObjective(cfg, geometry).to(dtype))
            out = model(*local)
            out["loss"].backward()
            results[f"{name}-{dtype}"] = {
                "grads": _grads(model),
                "terms": {k: v.detach() for k, v in out.items()},
            }
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        torch.distributed.destroy_process_group()


@pytest.fixture(scope="module")
def two_process_results():
    with tempfile.TemporaryDirectory() as tmp:
        init_file = os.path.join(tmp, "init")
        mp.spawn(_worker, args=(2, init_file, tmp), nprocs=2, join=True)
        return [torch.load(os.path.join(tmp, f"rank{r}.pt"), weights_only=True) for r in (0, 1)]


def test_gather_with_grad_unequal_sizes(two_process_results):
    r0, r1 = (res["gather"] for res in two_process_results)
    # Rank 0 has 2 rows of zeros, rank 1 has 3 rows of ones: padding stripped, rank order kept.
    expected = torch.cat([torch.zeros(2, 3), torch.ones(3, 3)])
    torch.testing.assert_close(r0["rows"], expected)
    torch.testing.assert_close(r1["rows"], expected)
    assert (r0["offset"], r1["offset"]) == (0, 2)
    assert r0["sizes"] == r1["sizes"] == [2, 3]
    # Loss on rank r is (r + 1) * sum(all rows): each row's gradient is SUMMED over ranks, 1 + 2.
    torch.testing.assert_close(r0["grad"], torch.full((2, 3), 3.0))
    torch.testing.assert_close(r1["grad"], torch.full((3, 3), 3.0))


def _one_process(cfg_kw, geometry, sizes, dtype):
    cfg = ObjectiveConfig(**cfg_kw)
    single = TowerAndObjective(cfg, geometry).to(dtype)
    out = single(*make_batch(sum(sizes), cfg.kind in BOX_KINDS, dtype))
    out["loss"].backward()
    return out, _grads(single)


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.double() - b.double()).abs().max().item()


@pytest.mark.parametrize("name,cfg_kw,geometry,sizes", CASES, ids=[c[0] for c in CASES])
def test_two_processes_match_one_process_float64(
    two_process_results, name, cfg_kw, geometry, sizes
):
    """Exact arithmetic aside, 2 ranks (DDP averaging + gather) == 1 rank on the whole batch."""
    out, want = _one_process(cfg_kw, geometry, sizes, torch.float64)
    ranks = [res[f"{name}-{torch.float64}"] for res in two_process_results]
    assert set(ranks[0]["grads"]) == set(want)
    for param, grad in want.items():
        assert grad.abs().sum() > 0, f"{param} got no gradient"
        for rank, res in enumerate(ranks):
            torch.testing.assert_close(
                res["grads"][param],
                grad,
                atol=1e-6,
                rtol=0,
                msg=lambda m, r=rank, p=param: f"{name} rank {r} {p}: {m}",
            )
    # Logged terms are each rank's share: their mean over ranks is the whole-batch value.
    for term, value in out.items():
        if term in (
            "logit_scale",
            "curv",
            "sigmoid_bias",
            "logit_scale_local",
            "logit_scale_global_local",
        ):
            continue
        mean = 0.5 * (ranks[0]["terms"][term] + ranks[1]["terms"][term])
        torch.testing.assert_close(mean, value.detach(), atol=1e-9, rtol=1e-9, msg=term)


@pytest.mark.parametrize("name,cfg_kw,geometry,sizes", CASES, ids=[c[0] for c in CASES])
def test_two_processes_fp32_add_no_error_beyond_rounding(
    two_process_results, name, cfg_kw, geometry, sizes
):
    """In fp32 the 2-rank gradients are as close to the float64 truth as 1-rank fp32 ones.

    (A world-size factor or a wrong target would be off by O(1), far above this bound.)
    The one-process fp32 error can be luckily tiny for a gradient that sums many terms of
    both signs (seen: 8e-8 on log_curv on one CPU, 2e-6 on the 2-rank sum): the rounding
    level is therefore floored at 1e-5 of the gradient's size, still 4-5 orders of magnitude
    below a scaling mistake.
    """
    _, truth = _one_process(cfg_kw, geometry, sizes, torch.float64)
    _, single = _one_process(cfg_kw, geometry, sizes, torch.float32)
    for res in two_process_results:
        grads = res[f"{name}-{torch.float32}"]["grads"]
        for param, grad in truth.items():
            rounding = max(_max_err(single[param], grad), 1e-5 * grad.abs().max().item())
            err = _max_err(grads[param], grad)
            assert err <= 4 * rounding + 1e-6, (
                f"{param}: {err:.2e} vs rounding level {rounding:.2e}"
            )
