"""objective.learn_entail_weight: the entailment weight lambda learned by homoscedastic
uncertainty weighting (Kendall, Gal & Cipolla 2018), ``lambda * L_e - 0.5 * log(2 lambda)``,
clamped in place to [entail_weight_min, entail_weight_max] (facebookresearch/meru issue 7)."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

from hyvl.config import ObjectiveConfig, load_run_config
from hyvl.errors import ConfigError
from hyvl.objectives import build_objective, compute_objective
from hyvl.objectives.objective import learned_entail
from tests.test_objectives import make_embeddings, ref_objective
from tests.test_objectives_recent import make_embeddings as recent_embeddings
from tests.test_objectives_recent import product_embeddings, ref_phyclip, ref_uncha


def _case(kind):
    """(embeddings, geometry, float64 reference {contrastive, entail}) of one objective kind."""
    if kind in ("meru", "hycoclip"):
        emb = make_embeddings("lorentz")
        return emb, "lorentz", ref_objective(emb, ObjectiveConfig(kind=kind), "lorentz", 0.0)
    if kind == "uncha":
        emb = recent_embeddings(k=2)
        return emb, "lorentz", ref_uncha(emb, 2)
    emb = product_embeddings()
    return emb, "lorentz_product", ref_phyclip(emb, 3)


@pytest.mark.parametrize("kind", ["meru", "hycoclip", "uncha", "phyclip"])
def test_loss_is_the_kendall_weighting_and_its_gradient_is_lam_le_minus_half(kind):
    emb, geometry, ref = _case(kind)
    cfg = ObjectiveConfig(kind=kind, learn_entail_weight=True)
    lam = 0.07  # not the init 0.2: a weight that is ignored would show
    log_weight = torch.tensor(math.log(lam), dtype=torch.float64, requires_grad=True)
    out = compute_objective(emb, cfg, geometry, entail_log_weight=log_weight)
    le = ref["entail"]
    want = ref["contrastive"] + lam * le - 0.5 * math.log(2 * lam)
    torch.testing.assert_close(out["loss"].item(), want, rtol=1e-7, atol=1e-10)
    (grad,) = torch.autograd.grad(out["loss"], log_weight)
    torch.testing.assert_close(grad.item(), lam * le - 0.5, rtol=1e-7, atol=1e-10)
    assert out["entail_weight"].item() == pytest.approx(lam, rel=1e-12)
    # the module owns lambda (init entail_weight) and its gradient reaches the parameter
    objective = build_objective(cfg, geometry)
    assert objective.entail_weight == pytest.approx(0.2, rel=1e-6)
    objective(emb)["loss"].backward()
    lam0 = objective.log_entail_weight.detach().double().exp().item()
    assert objective.log_entail_weight.grad.item() == pytest.approx(lam0 * le - 0.5, rel=1e-5)


def test_off_by_default_the_fixed_weight_loss_is_unchanged():
    emb, _, ref = _case("meru")
    objective = build_objective(ObjectiveConfig(kind="meru"), "lorentz")
    assert objective.log_entail_weight is None and not list(objective.parameters())
    out = objective(emb)
    assert "entail_weight" not in out
    torch.testing.assert_close(out["loss"].item(), ref["loss"], rtol=1e-9, atol=1e-10)


def test_ramp_and_gate_multiply_the_whole_term_log_included():
    emb, _, ref = _case("hycoclip")
    le, contrastive = ref["entail"], ref["contrastive"]
    cfg = ObjectiveConfig(kind="hycoclip", learn_entail_weight=True, entail_warmup_steps=100)
    objective = build_objective(cfg, "lorentz").double()
    lam = objective.log_entail_weight.exp().item()
    for step, share in ((0, 0.0), (25, 0.25), (100, 1.0)):
        objective.step = step
        objective.log_entail_weight.grad = None
        out = objective(emb)
        out["loss"].backward()
        want = contrastive + share * (lam * le - 0.5 * math.log(2 * lam))
        torch.testing.assert_close(out["loss"].item(), want, rtol=1e-9, atol=1e-10)
        grad = objective.log_entail_weight.grad  # present at step 0 too (DDP: a used parameter)
        assert grad.item() == pytest.approx(share * (lam * le - 0.5), rel=1e-9, abs=1e-15)
    # the gate closed (every logit equal: the contrastive loss at chance): fully off
    emb.logit_scale = torch.tensor(0.0, dtype=torch.float64)
    gated = ObjectiveConfig(kind="hycoclip", learn_entail_weight=True, entail_gate=0.1)
    log_weight = torch.tensor(math.log(0.05), dtype=torch.float64, requires_grad=True)
    out = compute_objective(emb, gated, "lorentz", entail_log_weight=log_weight)
    assert float(out["entail"]) > 0 and float(out["entail_gate"]) < 1e-12
    assert out["loss"].item() == pytest.approx(out["contrastive"].item(), abs=1e-10)
    assert abs(torch.autograd.grad(out["loss"], log_weight)[0].item()) < 1e-10


def _adamw_loop(objective, le, steps, lr=0.05):
    """AdamW on the toy loss ``lambda * le - 0.5 log(2 lambda)`` with the in-place clamp after
    each step (as hyvl train); returns lambda after each step."""
    opt = torch.optim.AdamW([objective.log_entail_weight], lr=lr, betas=(0.9, 0.98), weight_decay=0)
    seen = []
    for _ in range(steps):
        opt.zero_grad()
        learned_entail(torch.tensor(le), objective.log_entail_weight).backward()
        opt.step()
        objective.clamp_scalars_()
        seen.append(objective.entail_weight)
    return seen


def test_adamw_moves_lambda_to_the_clamped_optimum_and_off_the_bound_again():
    lo, hi = 0.01, 0.3
    objective = build_objective(ObjectiveConfig(kind="meru", learn_entail_weight=True), "lorentz")
    bound = {lo: math.log(lo), hi: math.log(hi)}
    # optimum 1 / (2 * 5) = 0.1 inside the bounds: reached from the init 0.2
    assert _adamw_loop(objective, 5.0, 300)[-1] == pytest.approx(0.1, rel=0.02)
    # optimum 1 / (2 * 0.5) = 1 above the bound: lambda stops AT the bound, not past it
    seen = _adamw_loop(objective, 0.5, 150)
    assert objective.log_entail_weight.item() == pytest.approx(bound[hi], abs=1e-7)
    assert max(seen) <= hi * (1 + 1e-6)
    # the optimum moves inside (1 / (2 * 4) = 0.125): lambda leaves the bound at once, since
    # the clamp is on the parameter, not in the loss, and its gradient never vanished
    seen = _adamw_loop(objective, 4.0, 300)
    assert seen[0] < hi * (1 - 1e-4) and seen[-1] == pytest.approx(0.125, rel=0.02)
    # optimum 1 / (2 * 100) = 0.005 below the lower bound: stops at 0.01
    _adamw_loop(objective, 100.0, 300)
    assert objective.log_entail_weight.item() == pytest.approx(bound[lo], abs=1e-7)
    # what the in-place clamp avoids: a clamp inside the loss has no gradient past its bound
    past = torch.tensor(math.log(0.5), requires_grad=True)
    inside = learned_entail(torch.tensor(4.0), past.clamp(bound[lo], bound[hi]))
    assert torch.autograd.grad(inside, past)[0].item() == 0.0


@pytest.mark.parametrize(
    "values,match",
    [
        (dict(kind="clip"), "kind='clip' has no entailment term"),
        (dict(kind="atmg"), "kind='atmg' has no entailment term"),
        (dict(kind="meru", entail_weight=0.5), "entail_weight_min <= objective.entail_weight"),
        (dict(kind="uncha", entail_weight=0.005), "<= objective.entail_weight_max"),
        (dict(kind="hycoclip", entail_weight_min=0.25), "got 0.25 <= 0.2 <= 0.3"),
    ],
)
def test_config_errors_are_one_line_naming_the_keys(values, match):
    with pytest.raises(ConfigError, match=match) as err:
        ObjectiveConfig(learn_entail_weight=True, **values)
    assert "\n" not in str(err.value) and "objective.learn_entail_weight" in str(err.value)
    # the same values without learning are the fixed-weight objective, accepted as before
    ObjectiveConfig(**values)


def test_a_run_config_refuses_it_for_clip_and_accepts_it_with_custom_bounds():
    with pytest.raises(ConfigError, match="learn_entail_weight"):
        load_run_config(None, ["model=clip_tiny", "objective.learn_entail_weight=true"])
    cfg = load_run_config(
        None,
        ["model=meru_tiny", "objective.learn_entail_weight=true",
         "objective.entail_weight_min=0.1", "objective.entail_weight_max=0.5"],
    )  # fmt: skip
    assert cfg.objective.learn_entail_weight and cfg.objective.entail_weight_max == 0.5


def test_state_dict_round_trip_and_load_clamps_into_the_bounds():
    cfg = ObjectiveConfig(kind="meru", learn_entail_weight=True)
    objective = build_objective(cfg, "lorentz")
    with torch.no_grad():
        objective.log_entail_weight.fill_(math.log(0.123))
    state = objective.state_dict()
    assert set(state) == {"log_entail_weight"}
    fresh = build_objective(cfg, "lorentz")
    fresh.load_state_dict(state)
    assert fresh.log_entail_weight.item() == objective.log_entail_weight.item()
    fresh.load_state_dict({"log_entail_weight": torch.tensor(math.log(3.0))})  # past the bound
    assert fresh.entail_weight == pytest.approx(0.3, rel=1e-6)
    # eval mode clamps the value the loss uses as well (whatever was written into it)
    with torch.no_grad():
        fresh.log_entail_weight.fill_(math.log(3.0))
    out = fresh.eval()(make_embeddings("lorentz"))
    assert out["entail_weight"].item() == pytest.approx(0.3, rel=1e-6)


def test_train_step_clamps_logs_and_a_checkpoint_resumes_lambda_and_its_adam_state(tmp_path):
    """One real hyvl train step (tiny meru) with lambda set past its bound: the step clamps
    it, metrics carry entail_weight, lambda sits in the no-decay group, and a checkpoint
    restores lambda and its AdamW moments into a fresh state."""
    from hyvl.train import checkpoint as ckpt
    from hyvl.train.loop import optimizer_step
    from hyvl.train.records import step_record
    from hyvl.train.state import build_state, make_accelerator
    from hyvl.train.step import forward_backward

    overrides = ["model=meru_tiny", "model.vision.image_size=32", "model.vision.depth=1",
                 "model.text.layers=1", "train.cpu=true", "objective.learn_entail_weight=true"]  # fmt: skip
    cfg = load_run_config(None, overrides)
    state = build_state(cfg, make_accelerator(cfg, tmp_path / "acc"))
    param = state.train_module.objective.log_entail_weight
    group = next(g for g in state.optimizer.param_groups if any(p is param for p in g["params"]))
    assert group["weight_decay"] == 0.0 and "objective.log_entail_weight" in group["names"]
    with torch.no_grad():
        param.fill_(math.log(0.5))  # past entail_weight_max
    g = torch.Generator().manual_seed(0)
    batch = SimpleNamespace(
        images=torch.rand(4, 3, 32, 32, generator=g),
        tokens=state.tokenizer([f"thing {i}" for i in range(4)]),
        box_images=None,
        box_tokens=None,
    )
    result = forward_backward(state.accelerator, state.module, batch)
    assert result.losses["entail_weight"] == pytest.approx(0.5, rel=1e-6)
    assert param.grad is not None and param.grad.item() != 0.0
    lr, grad_norm, stepped = optimizer_step(state, [p for p in state.module.parameters()], result)
    assert stepped and param.item() == pytest.approx(math.log(0.3), abs=1e-7)  # clamped
    state.step = 1
    record = step_record(state, result, lr=lr, grad_norm=grad_norm, stepped=stepped,
                         samples_per_s=1.0, skipped={})  # fmt: skip
    assert record["entail_weight"] == pytest.approx(0.5, rel=1e-6)  # the value the step used
    with torch.no_grad():
        param.fill_(math.log(0.0789))  # a value of its own, not the init or a bound
    ckpt.save_checkpoint(tmp_path / "run", state, keep_last=1)
    resumed = build_state(cfg, state.accelerator)
    assert resumed.train_module.objective.entail_weight == pytest.approx(0.2, rel=1e-6)
    assert ckpt.resume(tmp_path / "run", resumed)["step"] == 1
    again = resumed.train_module.objective.log_entail_weight
    assert again.item() == param.item()
    moments = state.optimizer.state[param]
    restored = resumed.optimizer.state[again]
    assert torch.equal(restored["exp_avg"], moments["exp_avg"])
    assert torch.equal(restored["exp_avg_sq"], moments["exp_avg_sq"])
