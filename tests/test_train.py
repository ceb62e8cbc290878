"""`hyvl train` end to end on tiny models: outputs, exact resume after kill -9, bf16 on CPU,
non-finite steps, config errors."""

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import hyvl
from hyvl.config import load_run_config
from hyvl.train import checkpoint as ckpt

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    from hyvl.data.demo import make_demo

    out = tmp_path_factory.mktemp("demo")
    # only the training shards are read (at most 50 steps x 8 samples, resampled)
    make_demo(out, seed=0, train_samples=1000, val_samples=8, zeroshot_per_class=1,
              retrieval_images=4)  # fmt: skip
    return out


def tiny_overrides(demo_data, **extra):
    values = {
        "data.train_shards": str(demo_data / "train" / "*.tar"),
        "data.workers": 1,
        "data.shuffle_buffer": 64,
        # Smaller than *_tiny so the suite stays fast: 32 px, 2-layer towers.
        "model.vision.image_size": 32,
        "model.vision.depth": 2,
        "model.text.layers": 2,
        "train.batch_size": 8,
        "train.max_steps": 6,
        "train.warmup_steps": 2,
        "train.checkpoint_every": 2,
        "train.keep_last": 2,
        "train.log_every": 1,
        "train.eval_every": 0,
        "eval.zeroshot": "",
        "eval.retrieval": "",
    }
    values.update(extra)
    return [f"{k}={v}" for k, v in values.items()]


# Runs `hyvl train` in a child process that SIGKILLs itself when the checkpoint of step N
# has every file written but not yet meta.json (the fault is injected here, in the test's
# own child, not by a hook in hyvl).
KILLING_MAIN = """
import os, signal, sys
from hyvl.train import checkpoint
step = int(sys.argv[1])
write_meta = checkpoint.write_meta
def killing_write_meta(directory, meta):
    if meta["step"] == step:
        os.kill(os.getpid(), signal.SIGKILL)
    write_meta(directory, meta)
checkpoint.write_meta = killing_write_meta
from hyvl.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def run_train_killed_at(step, config, out, overrides):
    """``hyvl train`` in a child process that SIGKILLs itself when writing step's meta.json."""
    args = ["train", "--config", str(config), "--output-dir", str(out), *overrides]
    cmd = [sys.executable, "-c", KILLING_MAIN, str(step), *args]
    # one thread, as the reference run in the test's process: bitwise-comparable runs
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def read_metrics(out):
    return [json.loads(line) for line in (Path(out) / "metrics.jsonl").read_text().splitlines()]


def test_cli_run_then_kill_during_checkpoint_and_resume_exactly(tmp_path, demo_data, capsys):
    from hyvl.cli.main import main

    config = ROOT / "configs" / "hycoclip_tiny.yaml"
    overrides = tiny_overrides(demo_data)  # the recipe's train.box_towers: auto

    crashed = tmp_path / "crashed"
    killed = run_train_killed_at(4, config, crashed, overrides)
    assert killed.returncode == -9, killed.stderr[-3000:]  # SIGKILL halfway through writing step 4
    assert (crashed / "checkpoints" / ".tmp-step_0000004").is_dir()
    assert [s for s, _ in ckpt.list_checkpoints(crashed)] == [2]
    # auto timed both arrangements on the first batch, said so and recorded the choice
    chosen = json.loads((crashed / ".hyvl-run").read_text())["box_towers"]
    assert chosen["by"] == "measured" and set(chosen["seconds"]) == {"fused", "split"}
    assert f"train.box_towers=auto: {chosen['chosen']} (measured on cpu" in killed.stderr
    meta = ckpt.read_meta(crashed / "checkpoints" / "step_0000002")
    assert meta["box_towers"] == chosen["chosen"]

    # the uninterrupted reference runs in this process (on one thread, as the two runs of
    # `crashed` in their own processes), with the arrangement the crashed run chose
    reference = tmp_path / "reference"
    args = ["train", "--config", str(config), "--output-dir", str(reference), *overrides]
    args.append(f"train.box_towers={chosen['chosen']}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main([*args, "train.trackers=[tensorboard]"]) == 0
    finally:
        torch.set_num_threads(threads)
    done = capsys.readouterr()
    # the progress line: step, loss, lr and health first (the rest is in metrics.jsonl)
    assert re.search(r"train 6/6, loss \d\.\d{4}, lr \d\.\d\de-\d\d, health ok", done.err)
    # where it ran: said at start, recorded in the run's marker and its checkpoints
    assert "hyvl train: on cpu (CPU), fp32, 1 process" in done.err
    runtime = json.loads((reference / ".hyvl-run").read_text())["runtime"]
    assert (runtime["device"], runtime["precision"], runtime["world_size"]) == ("cpu", "fp32", 1)
    assert ckpt.read_meta(reference / "checkpoints" / "step_0000006")["runtime"]["device"] == "cpu"
    assert load_run_config(reference / "config.yaml").train.max_steps == 6
    assert list(reference.rglob("events.out.tfevents.*")), "tensorboard tracker wrote nothing"
    ref = read_metrics(reference)
    assert [r["step"] for r in ref] == [1, 2, 3, 4, 5, 6]
    assert all(set(r) >= {"loss", "contrastive", "lr", "curv", "logit_scale"} for r in ref)
    assert [s for s, _ in ckpt.list_checkpoints(reference)] == [4, 6]  # last K=2 kept
    model, preprocess, tokenizer = hyvl.load(reference)
    emb = model.encode_text(tokenizer(["a cat"]))
    assert emb.shape[0] == 1 and torch.isfinite(emb).all()
    # a rerun of the finished run trains nothing and says its last loss (it said "n/a")
    assert main(args) == 0
    again = capsys.readouterr().out
    assert f"is at step 6 already; last loss {ref[-1]['loss']:.4f} (step 6)" in again
    assert "health: healthy" in again

    # the resume of the killed run, in this process (a process of its own would add only its
    # imports, ~7 s of CPU: the crash is what needs the process boundary)
    torch.set_num_threads(1)
    try:
        code = main(["train", "--config", str(config), "--output-dir", str(crashed), *overrides])
    finally:
        torch.set_num_threads(threads)
    resumed = capsys.readouterr().err
    assert code == 0, resumed[-3000:]
    assert "resuming from" in resumed and "step_0000002" in resumed
    # the resume takes the recorded arrangement instead of timing again
    assert f"train.box_towers=auto: {chosen['chosen']} (recorded)" in resumed
    got = read_metrics(crashed)
    assert [r["step"] for r in got] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(ref, got, strict=True):
        for key in ("loss", "contrastive", "lr", "curv", "logit_scale", "grad_norm"):
            assert a[key] == b[key], (a["step"], key, a[key], b[key])  # bitwise, not approx
    assert not (crashed / "checkpoints" / ".tmp-step_0000004").exists()


def test_unknown_config_key_is_named(tmp_path, capsys):
    from hyvl.cli.main import main

    # in this process: the error path is the CLI's, no interpreter start is needed to see it
    args = ["--config", str(ROOT / "configs" / "meru_tiny.yaml"), "--output-dir", str(tmp_path)]
    assert main(["train", *args, "train.max_step=3"]) == 2
    err = capsys.readouterr().err
    assert "unknown config key 'train.max_step'" in err and "train.max_steps" in err
    assert "Traceback" not in err and not any(tmp_path.iterdir())


def test_bf16_autocast_on_cpu_trains_without_nonfinite(tmp_path, demo_data):
    from hyvl.train.loop import train

    cfg = load_run_config(
        ROOT / "configs" / "meru_tiny.yaml",
        tiny_overrides(
            demo_data,
            **{
                "train.max_steps": 50,
                "train.mixed_precision": "bf16",
                "train.checkpoint_every": 50,
            },
        ),
    )
    train(cfg, tmp_path)
    records = read_metrics(tmp_path)
    assert len(records) == 50
    assert all(r["loss"] is not None and r["optimizer_stepped"] for r in records)
    model = hyvl.load(tmp_path)[0]
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_bf16_loss_at_init_is_close_to_fp32():
    from hyvl.train.state import build_model_and_objective
    from hyvl.train.step import TrainModule

    cfg = load_run_config(
        None, ["model=meru_tiny", "model.vision.image_size=32", "objective.kind=meru"]
    )
    model, tokenizer, objective = build_model_and_objective(cfg)
    core = TrainModule(model, objective)
    g = torch.Generator().manual_seed(0)
    images = torch.rand(8, 3, 32, 32, generator=g)
    tokens = tokenizer([f"a photo of thing {i}" for i in range(8)])
    with torch.no_grad():
        fp32 = core(images, tokens)[0]["loss"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = core(images, tokens)[0]["loss"]
    assert bf16.dtype == torch.float32  # losses are computed in fp32 even under autocast
    assert bf16.item() != fp32.item()  # autocast really ran the towers in bf16
    assert bf16.item() == pytest.approx(fp32.item(), rel=2e-2)


def test_nonfinite_loss_skips_steps_then_stops(tmp_path, demo_data, monkeypatch):
    from torch import nn

    import hyvl.train.loop as loop

    build = loop.build_model_and_objective

    class PoisonAfter(nn.Module):
        """The real objective, returning NaN from the 3rd call on."""

        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, emb):
            self.calls += 1
            out = self.inner(emb)
            if self.calls >= 3:
                out = {k: v * float("nan") for k, v in out.items()}
            return out

    def poisoned(cfg):
        model, tokenizer, objective = build(cfg)
        return model, tokenizer, PoisonAfter(objective)

    monkeypatch.setattr(loop, "build_model_and_objective", poisoned)
    cfg = load_run_config(
        ROOT / "configs" / "clip_tiny.yaml",
        tiny_overrides(
            demo_data, **{"train.max_steps": 20, "train.max_nonfinite": 3, "train.log_every": 10}
        ),
    )
    with pytest.raises(FloatingPointError, match="3 non-finite losses in a row"):
        loop.train(cfg, tmp_path)
    records = read_metrics(tmp_path)
    # Non-finite steps are always logged (even between log_every), with loss null, not stepped.
    assert [r["step"] for r in records] == [3, 4, 5]
    assert all(r["loss"] is None and not r["optimizer_stepped"] for r in records)
    # the checkpoint written during the streak holds the last good weights, not NaN
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path)] == [2, 4]
    from safetensors.torch import load_file

    state = load_file(str(ckpt.step_dir(tmp_path, 4) / ckpt.STATE))
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())


def test_progress_line_puts_step_loss_lr_and_health_first_within_80_columns():
    from tqdm import tqdm

    from hyvl.train.console import BAR_FORMAT, MAX_COLUMNS, progress_fields

    record = {"step": 3, "loss": 4.1234, "contrastive_image_text": 1.0, "lr": 1e-3, "curv": 0.9}
    assert progress_fields({**record, "health": "ok"}) == "loss 4.1234, lr 1.00e-03, health ok"
    assert progress_fields({**record, "loss": None}) == "loss nan, lr 1.00e-03"  # non-finite
    # a long run with two open problems still fits, bar and times included
    fields = progress_fields({**record, "health": "collapse, frozen_text"})
    line = tqdm.format_meter(
        123456, 500000, 98765.4, ncols=MAX_COLUMNS, prefix="train", postfix=fields,
        bar_format=BAR_FORMAT,
    )  # fmt: skip
    assert line.startswith(f"train 123456/500000, {fields} |") and len(line) <= MAX_COLUMNS


def test_start_line_names_device_precision_and_what_the_recipe_asked_in_vain():
    from hyvl.train.console import runtime, start_line

    cpu = SimpleNamespace(device=torch.device("cpu"), num_processes=2)
    asked = load_run_config(None, ["train.cpu=false", "train.mixed_precision=fp16"])
    info = runtime(cpu, asked)
    assert (info["device"], info["precision"], info["world_size"]) == ("cpu", "fp32", 2)
    assert start_line(info) == (
        "hyvl train: on cpu (CPU), fp32, 2 processes (train.cpu=false but no GPU is visible; "
        "train.mixed_precision=fp16 has no effect here)"
    )
    bf16 = runtime(cpu, load_run_config(None, ["train.cpu=true", "train.mixed_precision=bf16"]))
    assert start_line(bf16) == "hyvl train: on cpu (CPU), bf16, 2 processes"


@pytest.mark.parametrize("accum", [1, 2])
def test_step_passes_box_towers_per_call_and_returns_detached_embeddings(accum, tmp_path):
    from hyvl.errors import ConfigError
    from hyvl.train.state import build_model_and_objective, make_accelerator
    from hyvl.train.step import TrainModule, forward_backward

    cfg = load_run_config(
        None,
        ["model=hycoclip_tiny", "model.vision.image_size=32", "objective.kind=hycoclip",
         "objective.box_pair_weight=1"],
    )  # fmt: skip
    model, tokenizer, objective = build_model_and_objective(cfg)
    seen = []
    forward = model.forward

    def spy(*args, box_towers="fused", **kwargs):
        seen.append(box_towers)
        return forward(*args, box_towers=box_towers, **kwargs)

    model.forward = spy
    g = torch.Generator().manual_seed(0)
    batch = SimpleNamespace(
        images=torch.rand(4, 3, 32, 32, generator=g),
        tokens=tokenizer([f"thing {i}" for i in range(4)]),
        box_images=torch.rand(4, 3, 32, 32, generator=g),
        box_tokens=tokenizer([f"part {i}" for i in range(4)]),
    )
    accelerator = make_accelerator(cfg, tmp_path)
    result = forward_backward(
        accelerator, TrainModule(model, objective), batch, grad_accum=accum, box_towers="split"
    )
    # the mode is an argument of every tower call, not state left on the model
    assert seen and set(seen) == {"split"} and not hasattr(model, "box_towers")
    emb = result.embeddings
    assert emb.image.shape == emb.box_text.shape == (4, model.config.embed_dim)
    assert not emb.image.requires_grad and emb.curv is not None
    assert result.finite and math.isfinite(result.losses["loss"])
    # the box texts' identities reach the objective through both paths (GradCache too)
    assert math.isfinite(result.losses["contrastive_boxpair"])
    assert model.visual_proj.weight.grad is not None
    with pytest.raises(ConfigError, match="box_towers.*'split'"):
        load_run_config(None, ["train.box_towers=both"])


def test_auto_box_towers_times_both_arrangements_and_leaves_no_trace():
    from hyvl.train import box_towers

    torch.manual_seed(0)
    model = hyvl.create_model("hycoclip_tiny", vision={"image_size": 32, "depth": 2})
    tok = hyvl.get_tokenizer("hycoclip_tiny")
    g = torch.Generator().manual_seed(0)
    tensors = (
        torch.rand(2, 3, 32, 32, generator=g),
        tok(["a", "b"]),
        torch.rand(2, 3, 32, 32, generator=g),
        tok(["c", "d"]),
    )
    held = torch.full_like(model.visual_proj.weight, 0.5)
    model.visual_proj.weight.grad = held
    rng = torch.get_rng_state()
    info = box_towers.choose(model, tensors, reps=1)
    assert info["by"] == "measured" and info["seconds"]["fused"] > 0 < info["seconds"]["split"]
    assert info["chosen"] == min(info["seconds"], key=info["seconds"].get)
    # the run goes on as if nothing had been timed: same random stream, same gradients
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.visual_proj.weight.grad is held
    assert all(p.grad is None for n, p in model.named_parameters() if n != "visual_proj.weight")
    # without box crops both arrangements are one call per tower: nothing to time
    assert box_towers.choose(model, (*tensors[:2], None, None)) == {
        "chosen": "fused",
        "by": "no box crops",
    }


@pytest.mark.parametrize("mixed,expected", [("no", "fp32"), ("bf16", "bf16")])
def test_periodic_eval_runs_the_towers_in_the_training_precision(monkeypatch, mixed, expected):
    import hyvl.evaluation.retrieval as retrieval
    import hyvl.evaluation.zeroshot as zeroshot
    from hyvl.config import load_run_config
    from hyvl.train.periodic import evaluate
    from hyvl.train.state import build_model_and_objective

    seen = {}

    def record(name):
        def fake(*args, **kwargs):
            seen[name] = (kwargs["precision"], kwargs["batch_size"])
            return {}

        return fake

    monkeypatch.setattr(zeroshot, "evaluate_zeroshot", record("zeroshot"))
    monkeypatch.setattr(retrieval, "evaluate_retrieval", record("retrieval"))
    overrides = [f"train.mixed_precision={mixed}", "eval.zeroshot=zs", "eval.retrieval=r.json"]
    cfg = load_run_config(None, [*overrides, "eval.batch_size=7"])
    model, tokenizer, _ = build_model_and_objective(cfg)
    evaluate(model, tokenizer, cfg)
    assert seen == {"zeroshot": (expected, 7), "retrieval": (expected, 7)}
