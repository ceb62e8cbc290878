"""Optimizer groups, the warmup + cosine schedule and checkpoint bookkeeping (no towers needed)."""

import json
import random

import numpy as np
import pytest
import torch
from torch import nn

from hyvl.config import TrainConfig
from hyvl.errors import CheckpointError
from hyvl.train import checkpoint as ckpt
from hyvl.train.optim import build_optimizer, build_scheduler, lr_factor, param_groups


class Toy(nn.Module):
    """Every kind of parameter the towers, the geometry and the objectives own."""

    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(4, 4)
        self.norm = nn.LayerNorm(4)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, 4))
        self.log_curv = nn.Parameter(torch.zeros(()))
        self.visual_alpha = nn.Parameter(torch.zeros(()))
        self.logit_scale = nn.Parameter(torch.zeros(()))
        self.logit_bias = nn.Parameter(torch.zeros(()))
        self.frozen = nn.Parameter(torch.zeros(3, 3), requires_grad=False)


def test_weight_decay_only_on_matrices():
    decay, no_decay = param_groups(Toy().named_parameters(), 0.2)
    assert decay["weight_decay"] == 0.2 and no_decay["weight_decay"] == 0.0
    assert sorted(decay["names"]) == ["cls_token", "proj.weight"]
    # MERU's trainer decays these by accident (`0.0 or 0.2` == 0.2); here they get exactly 0.
    assert sorted(no_decay["names"]) == sorted(
        [
            "proj.bias",
            "norm.weight",
            "norm.bias",
            "log_curv",
            "visual_alpha",
            "logit_scale",
            "logit_bias",
        ]
    )
    opt = build_optimizer(Toy(), TrainConfig(lr=5e-4, weight_decay=0.2))
    assert [g["weight_decay"] for g in opt.param_groups] == [0.2, 0.0]
    assert opt.defaults["betas"] == (0.9, 0.98)
    assert sum(len(g["params"]) for g in opt.param_groups) == 9  # frozen one left out


def test_warmup_then_cosine_to_zero():
    cfg = TrainConfig(lr=1.0, warmup_steps=4, max_steps=12)
    factors = [lr_factor(s, warmup_steps=4, max_steps=12) for s in range(13)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert (
        factors[4] == 1.0 and factors[8] == pytest.approx(0.5) and factors[12] == pytest.approx(0.0)
    )
    assert all(a >= b for a, b in zip(factors[4:-1], factors[5:], strict=True))
    opt = torch.optim.AdamW([nn.Parameter(torch.zeros(2))], lr=cfg.lr)
    sched = build_scheduler(opt, cfg)
    seen = []
    for _ in range(6):
        seen.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    assert seen == pytest.approx(factors[:6])
    # state round trip: a fresh scheduler continues where the old one stopped
    opt2 = torch.optim.AdamW([nn.Parameter(torch.zeros(2))], lr=cfg.lr)
    sched2 = build_scheduler(opt2, cfg)
    sched2.load_state_dict(sched.state_dict())
    assert sched2.get_last_lr() == sched.get_last_lr()


def test_rng_state_round_trip_is_exact(tmp_path):
    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    torch.save(ckpt.rng_state(), tmp_path / "rng.pt")
    expected = (random.random(), np.random.rand(), torch.rand(3))
    random.seed(9)
    np.random.seed(9)
    torch.manual_seed(9)
    ckpt.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_incomplete_checkpoints_are_ignored_and_pruned(tmp_path):
    root = ckpt.checkpoint_root(tmp_path)
    for step in (2, 4, 6):
        d = ckpt.step_dir(tmp_path, step)
        d.mkdir(parents=True)
        (d / ckpt.META).write_text(json.dumps({"format": ckpt.FORMAT, "step": step}))
    (root / "step_0000008").mkdir()  # no meta.json: a write that never finished
    (root / ".tmp-step_0000010").mkdir()
    assert ckpt.latest_checkpoint(tmp_path)[0] == 6
    assert [p.name for p in ckpt.remove_partial(tmp_path)] == [".tmp-step_0000010"]
    ckpt.prune(tmp_path, keep_last=2)
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [4, 6]


def test_foreign_checkpoint_is_named(tmp_path):
    (tmp_path / ckpt.META).write_text('{"format": "something-else"}')
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        ckpt.read_meta(tmp_path)
