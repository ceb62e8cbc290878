"""A training checkpoint interrupted at every point of its write: resume finds the newest
complete one, with exactly its weights.

The interruption is raised from inside the write (a BaseException nothing in hyvl catches),
which leaves the disk as a kill at that point would; the real ``kill -9`` of a training
process is tested in test_train.py.
"""

import os

import pytest
import torch

from hyvl.config import load_run_config
from hyvl.train import checkpoint as ckpt
from hyvl.train.state import build_state, make_accelerator


class Killed(BaseException):
    """Stands for SIGKILL: not an Exception, so no handler in hyvl swallows it."""


OVERRIDES = [
    "model=clip_tiny",
    "objective.kind=clip",
    "model.vision.image_size=32",
    "model.vision.depth=1",
    "model.text.layers=1",
    "train.cpu=true",
]


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """One tiny train state for the module (building it is most of a test's time)."""
    cfg = load_run_config(None, OVERRIDES)
    return build_state(cfg, make_accelerator(cfg, tmp_path_factory.mktemp("acc")))


def weights(state):
    return {k: v.clone() for k, v in state.train_module.state_dict().items()}


def shift(state, by):
    with torch.no_grad():
        for p in state.train_module.parameters():
            p.add_(by)


def crash_in(monkeypatch, target, attr, when=lambda *a, **k: True):
    real = getattr(target, attr)

    def crashing(*args, **kwargs):
        if when(*args, **kwargs):
            raise Killed(attr)
        return real(*args, **kwargs)

    monkeypatch.setattr(target, attr, crashing)


POINTS = {
    # after state.safetensors, while writing the optimizer state
    "optimizer": (
        lambda mp: crash_in(mp, torch, "save", lambda obj, f, *a, **k: "optimizer" in str(f)),
        2,
    ),
    # every file written and fsynced, before meta.json (the test_train.py kill point)
    "meta": (lambda mp: crash_in(mp, ckpt, "write_meta"), 2),
    # meta.json on disk, before the directory is renamed into place
    "rename": (lambda mp: crash_in(mp, os, "replace", lambda a, b: "step_0000004" in str(b)), 2),
    # renamed into place, while pruning old checkpoints: the new one is complete
    "prune": (lambda mp: crash_in(mp, ckpt, "prune"), 4),
}


@pytest.mark.parametrize("point", POINTS)
def test_checkpoint_interrupted_while_writing_resumes_from_the_newest_complete(
    point, state, tmp_path, monkeypatch
):
    state.step = 2
    ckpt.save_checkpoint(tmp_path, state, keep_last=1)
    saved = {2: weights(state)}
    shift(state, 1.0)
    state.step = 4
    saved[4] = weights(state)
    inject, expected = POINTS[point]
    with monkeypatch.context() as mp:
        inject(mp)
        with pytest.raises(Killed):
            ckpt.save_checkpoint(tmp_path, state, keep_last=1)

    ckpt.remove_partial(tmp_path)  # what `hyvl train` does first on restart
    shift(state, 5.0)  # the restarted process holds other weights until it resumes
    state.step = 0
    meta = ckpt.resume(tmp_path, state)
    assert meta["step"] == state.step == expected
    for name, value in weights(state).items():
        assert torch.equal(value, saved[expected][name]), name
    assert not list(ckpt.checkpoint_root(tmp_path).glob(".tmp-*"))


def test_truncated_file_in_the_newest_checkpoint_falls_back(state, tmp_path, capsys):
    for step in (2, 4):
        state.step = step
        ckpt.save_checkpoint(tmp_path, state, keep_last=2)
    cut = ckpt.step_dir(tmp_path, 4) / "optimizer.pt"
    cut.write_bytes(cut.read_bytes()[:100])  # a disk error after the checkpoint was complete
    assert ckpt.resume(tmp_path, state)["step"] == 2
    err = capsys.readouterr().err
    assert "optimizer.pt" in err and "falling back to the previous complete checkpoint" in err
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2]


def test_item5_resume_applies_changed_lr_weight_decay_and_betas(state, tmp_path):
    """The optimizer state restored from a checkpoint carries the old lr, weight decay and
    betas: a resume with train.allow_config_change must train with the new ones."""
    from hyvl.train.optim import lr_factor

    for _ in range(2):  # two steps of the schedule (no gradients: the weights stay)
        state.optimizer.step()
        state.scheduler.step()
    state.step = 2
    ckpt.save_checkpoint(tmp_path, state, keep_last=1)
    changed = ["train.lr=0.005", "train.weight_decay=0.05", "train.betas=[0.8,0.9]"]
    cfg = load_run_config(None, [*OVERRIDES, *changed])
    resumed = build_state(cfg, state.accelerator)
    assert ckpt.resume(tmp_path, resumed)["step"] == 2
    tcfg = cfg.train
    want = 0.005 * lr_factor(2, warmup_steps=tcfg.warmup_steps, max_steps=tcfg.max_steps,
                             min_ratio=tcfg.min_lr / tcfg.lr)  # fmt: skip
    groups = resumed.optimizer.param_groups
    assert [g["lr"] for g in groups] == [want, want]
    assert resumed.scheduler.get_last_lr() == [want, want]
    assert [g["weight_decay"] for g in groups] == [0.05, 0.0]  # norms and biases stay undecayed
    assert all(tuple(g["betas"]) == (0.8, 0.9) for g in groups)


def test_item9_full_disk_during_a_checkpoint_is_one_line_and_the_partial_write_removed(
    state, tmp_path
):
    """A real full disk (a small tmpfs): torch's zip writer says "file write failed" and
    safetensors raises its own error type, neither naming the cause."""
    from hyvl.errors import HyvlError

    from conftest import fill, small_disk

    with small_disk(tmp_path / "disk", "160m") as disk:
        state.step = 2
        kept = ckpt.save_checkpoint(disk, state, keep_last=2)
        size = sum(p.stat().st_size for p in kept.iterdir())
        saved = weights(state)
        fill(disk, leave=size // 2)
        state.step = 4
        with pytest.raises(HyvlError) as info:
            ckpt.save_checkpoint(disk, state, keep_last=2)
        message = str(info.value)
        assert "no space left on device" in message and "\n" not in message, message
        assert str(disk / "checkpoints") in message and "step_0000002 (step 2) is intact" in message
        assert not list((disk / "checkpoints").glob(".tmp-*"))  # removed at once
        (disk / "filler").unlink()
        shift(state, 3.0)
        assert ckpt.resume(disk, state)["step"] == 2
        assert all(torch.equal(v, saved[k]) for k, v in weights(state).items())


def test_the_optimizer_step_clamps_the_logit_scale_back_in_place(state):
    # issue 23: the trainer clamps the bounded scalars as parameters after each step (as
    # open_clip's logit scale), so one pushed past its bound is back at it, not stuck beyond
    import copy
    import math

    from hyvl.train.loop import optimizer_step
    from hyvl.train.step import StepResult

    kept = (weights(state), copy.deepcopy(state.optimizer.state_dict()))
    kept_schedule = copy.deepcopy(state.scheduler.state_dict())
    trainable = [p for p in state.module.parameters() if p.requires_grad]
    with torch.no_grad():
        state.model.logit_scale.fill_(10.0)
    for p in trainable:
        p.grad = torch.zeros_like(p)
    try:
        optimizer_step(state, trainable, StepResult({}, True))
        assert state.model.logit_scale.item() == pytest.approx(math.log(100.0))
    finally:  # the module's state goes on as it was for the other tests
        state.train_module.load_state_dict(kept[0])
        state.optimizer.load_state_dict(kept[1])
        state.scheduler.load_state_dict(kept_schedule)
