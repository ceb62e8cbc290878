"""Training health in a real (tiny) run: the fields are in metrics.jsonl, a deliberately
collapsing run (lr=1.0) is reported within 50 steps, and train.on_collapse=stop ends it with
a non-zero exit and a loadable last checkpoint."""

import json
from pathlib import Path

import pytest

import hyvl
from hyvl.cli.main import main
from hyvl.config import load_run_config
from hyvl.train import checkpoint as ckpt
from hyvl.train.loop import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    from hyvl.data.demo import make_demo

    out = tmp_path_factory.mktemp("shapes")
    make_demo(out, train_samples=96, val_samples=8, zeroshot_per_class=1, retrieval_images=4)
    return out


def overrides(data, **extra):
    values = {
        "data.train_shards": str(data / "train" / "*.tar"),
        "data.workers": 0,
        "data.shuffle_buffer": 32,
        # smaller than *_tiny so the test stays fast: 32 px, 1-layer towers, batch 8
        "model.vision.image_size": 32,
        "model.vision.depth": 1,
        "model.text.layers": 1,
        "train.batch_size": 8,
        "train.warmup_steps": 5,
        "train.log_every": 5,
        "train.checkpoint_every": 10,
        "train.eval_every": 0,
        "eval.zeroshot": "",
        "eval.retrieval": "",
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


def records(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").open()]


def test_health_fields_are_logged_for_a_lorentz_run(tmp_path, shapes):
    cfg = load_run_config(
        ROOT / "configs" / "hycoclip_tiny.yaml", overrides(shapes, **{"train.max_steps": 5})
    )
    summary = train(cfg, tmp_path)
    last = records(tmp_path)[-1]
    for key in ("loss_over_ln_b", "spread_image", "spread_text", "spread_box_image", "d0_text"):
        assert last[key] > 0, key
    assert 0.0 <= last["in_cone"] <= 1.0 and last["health"] == "ok"
    assert summary["health"].startswith("healthy")


def test_lr_1_collapses_is_reported_and_stop_exits_nonzero(tmp_path, shapes, capsys):
    argv = ["train", "--config", str(ROOT / "configs" / "clip_tiny.yaml"), "--output-dir"]
    # default patience (20 steps): the collapse is named within 50 steps, on stderr, in
    # metrics.jsonl and in the final summary
    warn = overrides(shapes, **{"train.lr": 1.0, "train.max_steps": 40})
    assert main([*argv, str(tmp_path / "warn"), *warn]) == 0
    printed = capsys.readouterr()
    assert ": collapse: " in printed.err and "hyvl train: step " in printed.err
    assert "health: unhealthy: " in printed.out and "collapse from step" in printed.out
    flagged = [r["step"] for r in records(tmp_path / "warn") if "collapse" in r["health"]]
    assert flagged and flagged[0] <= 40

    # a shorter patience stops it sooner; the checkpoints written before are kept
    # (logged and saved every 2 steps, 2 kept: the checkpoint before the collapse is the
    # oldest when the run stops, kept although keep_last alone would have pruned it)
    stop = overrides(
        shapes,
        **{"train.lr": 1.0, "train.max_steps": 200, "train.health_patience": 10},
        **{"train.log_every": 2, "train.checkpoint_every": 2, "train.keep_last": 2},
    )
    out = tmp_path / "stop"
    summary = tmp_path / "stop.json"
    assert main([*argv, str(out), *stop, "train.on_collapse=stop", "--json", str(summary)]) == 1
    err = capsys.readouterr().err
    assert "stopped at step" in err and "train.on_collapse=stop" in err
    logged = records(out)
    stopped = logged[-1]["step"]
    assert stopped < 200
    step, path = ckpt.latest_checkpoint(out)
    assert step <= stopped and str(path) in err
    model, preprocess, tokenizer = hyvl.load(out)  # the last checkpoint's export loads
    assert model.geometry == "euclidean"

    # the stop names the last healthy checkpoint, in stderr, stopped.json and the --json summary
    report = json.loads((out / "stopped.json").read_text())
    assert json.loads(summary.read_text())["stopped"] == report
    healthy, since = report["last_healthy_checkpoint"], report["collapse_since_step"]
    assert report["step"] == stopped and report["last_checkpoint"]["step"] == step
    assert f"last healthy checkpoint (before the collapse began at step {since}): " in err
    assert f"{healthy['path']} (step {healthy['step']})" in err

    # ... which the health records agree with: from `since` on every logged step shows the
    # collapse condition (images indistinguishable, or the loss back at chance after it was
    # below: the default thresholds), the healthy checkpoint's step does not
    flags, learned = {}, False
    for r in logged:
        at_chance = r["loss_over_ln_b"] >= 0.98
        same = r["spread_image"] * r["logit_scale"] < 0.05
        flags[r["step"]] = (at_chance and learned) or same
        learned |= not at_chance
    assert all(flag for s, flag in flags.items() if s >= since)
    assert healthy["step"] < since and not flags[healthy["step"]]
    # nothing was deleted: the healthy checkpoint and every later one are there
    kept = [s for s, _ in ckpt.list_checkpoints(out)]
    assert healthy["step"] in kept and kept[-1] == step and Path(healthy["path"]).is_dir()
