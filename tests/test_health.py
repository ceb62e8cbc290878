"""Training health: the stats of constructed embeddings, and each detector on a constructed
sequence of logged steps (fires when its condition holds for `patience` steps, not before,
and not on a healthy run)."""

import math

import pytest
import torch

from hyvl import lorentz
from hyvl.config import ObjectiveConfig
from hyvl.models.embeddings import Embeddings
from hyvl.train.health import (
    HealthMonitor,
    HealthThresholds,
    aperture_scales,
    embedding_stats,
)

HEALTHY = {
    "loss_over_ln_b": 0.6,
    "spread_image": 0.5,
    "spread_text": 0.4,
    "in_cone": 0.7,
    "logit_scale": 14.0,
    "curv": 1.0,
    "curv_bounds": (0.1, 10.0),
    "alphas": {"visual_alpha": 0.09, "textual_alpha": 0.09},
}


def run(monitor, steps, **changes):
    """Feed the same record at each step; return {problem: first step it was reported}."""
    first = {}
    for step in steps:
        for name in monitor.update(step, {**HEALTHY, **changes}):
            first.setdefault(name, step)
    return first


def test_stats_of_lorentz_embeddings():
    torch.manual_seed(0)
    curv = torch.tensor(1.0)
    image = lorentz.exp_map0(torch.randn(16, 8), curv)
    text = lorentz.exp_map0(torch.full((16, 8), 0.01), curv)  # one point near the origin
    emb = Embeddings(image=image, text=text, curv=curv, logit_scale=torch.tensor(10.0))
    stats = embedding_stats(emb, contrastive_loss=math.log(16), global_batch=16)
    assert stats["loss_over_ln_b"] == pytest.approx(1.0)
    assert stats["spread_text"] == pytest.approx(0.0, abs=1e-6)
    # tangent vectors ~ N(0, I_8): RMS distance from the mean ~ sqrt(8)
    assert 2.0 < stats["spread_image"] < 3.5
    assert stats["d0_text"] == pytest.approx(0.01 * math.sqrt(8), rel=1e-4)
    assert stats["d0_image"] > 2.0
    # Texts at r < 2K = 0.2: their cones are half-spaces, but images in the other half stay out.
    assert 0.0 < stats["in_cone"] < 1.0
    # Each image on its text's axis, further out: inside every cone.
    out = lorentz.exp_map0(torch.full((16, 8), 0.5), curv)
    inside = Embeddings(image=out, text=text, curv=curv)
    assert embedding_stats(inside, contrastive_loss=None, global_batch=16)["in_cone"] == 1.0


def test_stats_of_clip_embeddings_and_box_pairs():
    unit = torch.nn.functional.normalize(torch.randn(8, 4), dim=-1)
    emb = Embeddings(image=unit, text=unit[:1].expand(8, 4))
    stats = embedding_stats(emb, contrastive_loss=1.0, global_batch=8)
    assert stats["spread_text"] == pytest.approx(0.0, abs=1e-6)
    assert stats["spread_image"] > 0.5
    assert "d0_image" not in stats and "in_cone" not in stats
    # Lorentz with 2 boxes per sample: box -> whole pairs are matched sample-major.
    curv = torch.tensor(1.0)
    whole = lorentz.exp_map0(torch.full((4, 4), 0.6), curv)
    box = lorentz.exp_map0(torch.full((8, 4), 0.3), curv)
    emb = Embeddings(image=whole, text=box[::2], box_image=box, box_text=box, curv=curv)
    stats = embedding_stats(emb, contrastive_loss=None, global_batch=4)
    assert stats["in_cone"] == 1.0  # every child lies further out on its apex's axis


def test_hycoclip_aperture_scales():
    scales = aperture_scales(ObjectiveConfig(kind="hycoclip"))
    assert scales[("text", "image")] == 0.7 and scales[("box_image", "image")] == 1.2
    assert aperture_scales(ObjectiveConfig(kind="meru")) == {}


def test_healthy_run_reports_nothing():
    monitor = HealthMonitor(HealthThresholds(patience=20))
    assert run(monitor, range(0, 400, 10)) == {}
    assert monitor.status == "ok"
    assert monitor.summary() == "healthy"  # one word (it listed the problems it did not see)


def test_collapse_by_spread_fires_after_patience():
    monitor = HealthMonitor(HealthThresholds(patience=20, min_logit_spread=0.05))
    first = run(monitor, range(10, 100, 10), spread_image=0.001)  # 0.001 * 14 < 0.05
    assert first == {"collapse": 30}  # held at 10, 20, 30: 20 steps
    assert monitor.status == "collapse"
    assert "collapse from step 30" in monitor.summary()


def test_collapse_by_loss_waits_for_grace_or_learning():
    # At init the loss is ln B: no alarm inside the grace period...
    monitor = HealthMonitor(HealthThresholds(patience=20, grace_steps=100))
    assert run(monitor, range(10, 100, 10), loss_over_ln_b=0.995) == {}
    # ...but after it, or once the loss had dropped and came back, there is.
    assert run(monitor, range(100, 200, 10), loss_over_ln_b=0.995) == {"collapse": 120}
    monitor = HealthMonitor(HealthThresholds(patience=20, grace_steps=1000))
    run(monitor, [10, 20], loss_over_ln_b=0.9)
    assert run(monitor, range(30, 90, 10), loss_over_ln_b=0.99) == {"collapse": 50}


def test_collapse_recovers_and_summary_says_so():
    monitor = HealthMonitor(HealthThresholds(patience=10))
    run(monitor, range(0, 50, 10), spread_image=0.0)
    assert monitor.status == "collapse"
    run(monitor, range(50, 80, 10))
    assert monitor.status == "ok"
    assert "recovered" in monitor.summary()


def test_frozen_text_side():
    monitor = HealthMonitor(HealthThresholds(patience=20))
    first = run(monitor, range(0, 100, 10), spread_text=1e-4)
    assert first == {"frozen_text": 20}


def test_entailment_dead_only_when_full_from_the_start():
    monitor = HealthMonitor(HealthThresholds(patience=20))
    assert run(monitor, range(0, 60, 10), in_cone=1.0) == {"entailment_dead": 20}
    # Cones that fill up during training are learning, not dead.
    monitor = HealthMonitor(HealthThresholds(patience=20))
    run(monitor, [0], in_cone=0.3)
    assert run(monitor, range(10, 200, 10), in_cone=1.0) == {}


@pytest.mark.parametrize(
    "change",
    [{"curv": 10.0}, {"curv": 0.1}, {"alphas": {"visual_alpha": 1.0, "textual_alpha": 0.1}}],
)
def test_clamped_curvature_or_alpha(change):
    monitor = HealthMonitor(HealthThresholds(patience=20))
    assert run(monitor, range(0, 60, 10), **change) == {"clamp": 20}
    assert "clamp" in monitor.status


def test_summary_names_the_problems_in_words():
    monitor = HealthMonitor(HealthThresholds(patience=20))
    run(monitor, range(0, 60, 10), spread_text=0.001, curv=10.0)
    assert monitor.status == "clamp, frozen_text"  # metrics.jsonl keeps the names
    assert monitor.summary() == (
        "unhealthy: frozen text side from step 20; a scalar at its clamp from step 20 "
        "(still: a scalar at its clamp, frozen text side)"
    )


def test_zeroshot_that_names_one_class_is_a_problem_until_it_names_more():
    from hyvl.evaluation.zeroshot import chance_warnings
    from hyvl.train.console import evaluation_rows

    monitor = HealthMonitor(HealthThresholds(patience=20))
    run(monitor, range(0, 200, 10))  # loss, spreads, cones: all healthy
    one = {"num_classes": 10, "num_predicted_classes": 1, "num_samples": 200}
    one |= {"top1": 10.0, "top5": 50.0, "mean_per_class": 10.0}
    (message,) = monitor.update_zeroshot(200, one).values()
    assert "zero-shot predicts 1 of 10 classes for all 200 images" in message
    assert monitor.status == "few_classes"
    assert monitor.summary() == (
        "unhealthy: zero-shot predicts 1 of 10 classes from step 200 "
        "(still: zero-shot predicts 1 of 10 classes)"
    )
    assert "predicts one class for all 200 images" in chance_warnings(one)[0]
    rows = {r["evaluation"]: r["value"] for r in evaluation_rows({"zeroshot": one})}
    assert rows["zero-shot classes predicted (too few: see health)"] == "1 of 10"
    # 3 of 10 is not few (2 of 10 would be); the problem closes, the summary keeps it
    assert monitor.update_zeroshot(400, {**one, "num_predicted_classes": 3}) == {}
    assert monitor.status == "ok"
    assert monitor.summary() == (
        "healthy at the end, recovered from: zero-shot predicts 1 of 10 classes from step 200"
    )
    assert chance_warnings({**one, "num_predicted_classes": 3}) == []
