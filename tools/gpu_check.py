"""Prove and measure hyvl's GPU path in one command (at most about 8 minutes on one H100/H200).

    python tools/gpu_check.py [--device cuda[:N]] [--json F] [--markdown F]
    hyvl bench --device cuda --full                 # the same
    python tools/gpu_check.py --dry-run --json F    # the same code on CPU, tiny sizes (CI)

Checks (each one a key of ``checks`` in the JSON, with ``ok`` and ``seconds``):

* ``step_vit_s``, ``step_vit_b``: one training step (forward + backward + AdamW) at 224 px, bf16
  autocast, B = 256, of CLIP, MERU, HyCoCLIP fused and split (and which one
  ``train.box_towers=auto`` picks), the published HyCoCLIP step structure
  (``tools/hycoclip_reference.py``) and open_clip's own model with ``open_clip.loss.ClipLoss``
  on the same tower size, taking turns (``tools/bench_gpu.py``); seconds, images/s, ratios.
* ``train_loader``: 200 HyCoCLIP ViT-S/16 steps in bf16 through ``hyvl.train`` and its real
  loader on generated 224 px grounded JPEG shards (one box per sample, DataLoader workers):
  the share of the step spent waiting for data, images/s, peak memory, the health verdict.
* ``fp16``: 50 steps with ``train.mixed_precision=fp16`` (accelerate's gradient scaler).
* ``compile``: the same steps with ``train.compile`` on and off: time per step, loss difference.
* ``resume``: a run killed (SIGKILL) right after a checkpoint and resumed, against a run never
  stopped: the losses after the resume within bf16 tolerance; the recorded arrangement reused.
* ``eval``: the eval suite (zero-shot and retrieval folders of a generated demo world) with the
  trained model on the device and on the CPU: same numbers up to one sample.
* ``chunked``: HyCoCLIP's loss with ``objective.logit_chunk_rows`` at the largest batch that
  fits (doubling until out of memory), and whole blocks at the largest that fits them; peak
  memory from ``torch.cuda.max_memory_allocated``.

Writes one JSON ``{"ok", "device", "checks": {NAME: {...}}}`` and a markdown table; exits 1 if
any check failed or produced a NaN, 2 without a usable CUDA device (unless ``--dry-run``).
``--dry-run``: tiny towers, batch 8, a few steps, bf16 autocast on the CPU, torch.compile with
its "eager" backend (graph capture without code generation): every line above runs, in about a
minute on 2 CPU cores, with figures that mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import _loss_inputs, _loss_peak_mb, _loss_step, _peak_rss_mb  # noqa: E402
from bench_gpu import cuda_problem, tower_steps  # noqa: E402


@dataclass
class Plan:
    """Sizes of one run: the real ones, or the dry run's tiny ones."""

    device: str
    dry: bool
    work: Path
    towers: tuple = ("vit_s", "vit_b")
    step_batch: int = 256
    step_reps: int = 5
    recipe: str = "hycoclip_vit_s"
    batch: int = 256
    steps: int = 200
    fp16_steps: int = 50
    compile_steps: int = 20
    resume_steps: int = 12
    resume_batch: int = 64
    shards: int = 8
    per_shard: int = 512
    source_px: int = 256
    workers: int = field(default_factory=lambda: max(1, min(12, (os.cpu_count() or 2) - 2)))
    tolerance: float = 2e-2  # relative, on each resumed loss: bf16 autocast and GPU reductions
    model_overrides: tuple = ()  # for the training runs (key=value)
    step_overrides: dict | None = None  # for the step sets (hyvl.create_model's keywords)
    shards_pattern: str = ""  # set by make_shards

    @classmethod
    def dry_run(cls, work: Path) -> Plan:
        return cls(
            device="cpu",
            dry=True,
            work=work,
            towers=("tiny",),
            step_batch=8,
            step_reps=1,
            recipe="hycoclip_tiny",
            batch=8,
            steps=6,
            fp16_steps=3,
            compile_steps=2,
            resume_steps=4,
            resume_batch=8,
            shards=2,
            per_shard=16,
            source_px=96,
            workers=1,
            step_overrides={"vision": {"image_size": 32, "depth": 1}, "text": {"layers": 1}},
            model_overrides=(
                "model.vision.image_size=32",
                "model.vision.depth=1",
                "model.text.layers=1",
            ),
        )

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")


# ------------------------------------------------------------------------------ training runs
def make_shards(plan: Plan) -> str:
    """Grounded JPEG shards (one box a sample) under the work folder; their brace pattern."""
    from bench_data import write_jpeg_shard  # the shard writer of the loader benchmark

    folder = plan.work / "shards"
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:03d}.tar" for i in range(plan.shards)]
    args = [(p, plan.source_px, plan.per_shard, i) for i, p in enumerate(paths)]
    with ProcessPoolExecutor(max_workers=min(plan.shards, os.cpu_count() or 1)) as pool:
        list(pool.map(write_jpeg_shard, *zip(*args, strict=True)))
    return str(folder / f"{{000..{plan.shards - 1:03d}}}.tar")


def run_overrides(plan: Plan, steps: int, batch: int, **extra) -> list[str]:
    values = {
        "data.train_shards": plan.shards_pattern,
        "data.workers": plan.workers,
        "data.resampled": "true",
        "data.shuffle_buffer": 256,
        "data.min_box_size": 8,
        "train.batch_size": batch,
        "train.max_steps": steps,
        "train.warmup_steps": max(1, steps // 10),
        "train.mixed_precision": "bf16",
        "train.checkpoint_every": steps,
        "train.keep_last": 1,
        "train.log_every": 1,
        "train.eval_every": 0,
        "train.cpu": str(plan.dry).lower(),
        "eval.zeroshot": "",
        "eval.retrieval": "",
    }
    values.update(extra)
    return [*plan.model_overrides, *(f"{k}={v}" for k, v in values.items())]


class TimedLoader:
    """The trainer's loader, timing each wait for a batch (what the loop waits on the data)."""

    def __init__(self, inner):
        self.inner, self.waits, self.handed = inner, [], []

    def __iter__(self):
        batches = iter(self.inner)
        while True:
            start = time.perf_counter()
            batch = next(batches, None)
            self.waits.append(time.perf_counter() - start)
            self.handed.append((start, time.perf_counter()))
            if batch is None:
                return
            yield batch

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def wait_share(self) -> float | None:
        """Waiting over wall time from the 2nd request to the last batch (the first waits for
        the workers to start, and auto's timing runs between the first two)."""
        if len(self.handed) < 3:
            return None
        span = self.handed[-1][1] - self.handed[1][0]
        return sum(self.waits[1:]) / span if span > 0 else None


@contextmanager
def timed_loader():
    """Make ``hyvl.train.train`` build a :class:`TimedLoader`; yields the list it lands in."""
    from hyvl.train import loop

    built, original = [], loop.build_loader

    def build(state):
        built.append(TimedLoader(original(state)))
        return built[-1]

    loop.build_loader = build
    try:
        yield built
    finally:
        loop.build_loader = original


def train_run(plan: Plan, name: str, overrides: list[str], recipe: str | None = None) -> dict:
    """One ``hyvl.train`` run in this process: summary, metrics, data wait, peak memory."""
    from hyvl.config import load_run_config
    from hyvl.train.loop import train

    cfg = load_run_config(recipe or plan.recipe, overrides)
    out = plan.work / name
    if plan.cuda:
        torch.cuda.reset_peak_memory_stats(plan.device)
    base_rss = _peak_rss_mb()
    with timed_loader() as built:
        summary = train(cfg, out, overwrite=True)
    peak = (
        torch.cuda.max_memory_allocated(plan.device) / 2**20
        if plan.cuda
        else _peak_rss_mb() - base_rss
    )
    metrics = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    losses = [m["loss"] for m in metrics if "loss" in m]
    rates = [m["samples_per_s"] for m in metrics if "samples_per_s" in m][1:]  # after step 1
    return {
        "out": str(out),
        "steps": summary["step"],
        "losses": losses,
        "last_loss": losses[-1] if losses else None,
        "finite": bool(losses) and all(x is not None and math.isfinite(x) for x in losses),
        "images_per_s": sorted(rates)[len(rates) // 2] if rates else None,
        "data_wait_share": built[0].wait_share() if built else None,
        "peak_memory_mb": peak,
        "peak_memory": "torch.cuda.max_memory_allocated" if plan.cuda else "RSS growth",
        "health": summary["health"],
        "box_towers": summary["box_towers"],
        "stepped": sum(bool(m.get("optimizer_stepped")) for m in metrics),
        "seconds": summary["seconds"],
    }


# ------------------------------------------------------------------------------ the checks
def check_steps(plan: Plan, size: str) -> dict:
    res = tower_steps(
        size, plan.step_batch, plan.step_reps, plan.device, overrides=plan.step_overrides
    )
    values = list(res["seconds"].values())
    res["ok"] = all(math.isfinite(v) and v > 0 for v in values)
    return res


def check_train_loader(plan: Plan) -> dict:
    run = train_run(plan, "train_loader", run_overrides(plan, plan.steps, plan.batch))
    run["workers"] = plan.workers
    run["ok"] = run["finite"] and run["steps"] == plan.steps
    del run["losses"]
    return run


def check_fp16(plan: Plan) -> dict:
    overrides = run_overrides(
        plan, plan.fp16_steps, plan.batch, **{"train.mixed_precision": "fp16"}
    )
    run = train_run(plan, "fp16", overrides)
    # the scaler skips the first steps while it finds its scale; most must step
    run["ok"] = run["finite"] and run["stepped"] >= plan.fp16_steps // 2
    del run["losses"]
    return run


def check_compile(plan: Plan) -> dict:
    from hyvl.train import state

    backend = state.COMPILE_BACKEND
    if plan.dry:
        state.COMPILE_BACKEND = "eager"
    try:
        runs = {
            flag: train_run(
                plan,
                f"compile_{flag}",
                run_overrides(
                    plan,
                    plan.compile_steps,
                    plan.batch,
                    **{"train.compile": flag},
                ),
            )
            for flag in ("false", "true")
        }
    finally:
        state.COMPILE_BACKEND = backend
    off, on = runs["false"], runs["true"]
    diff = max(abs(a - b) for a, b in zip(off["losses"], on["losses"], strict=True))
    return {
        "backend": "eager" if plan.dry else backend,
        "images_per_s_off": off["images_per_s"],
        "images_per_s_on": on["images_per_s"],
        "on_over_off_images_per_s": (on["images_per_s"] or 0) / (off["images_per_s"] or 1),
        "seconds_off": off["seconds"],
        "seconds_on": on["seconds"],  # with the compilation
        "max_loss_abs_diff": diff,
        "ok": off["finite"] and on["finite"] and diff <= plan.tolerance * max(off["losses"]),
    }


# The killed run: hyvl train in a child process that SIGKILLs itself once the checkpoint of the
# given step is complete (what a preemption right after a save leaves behind).
KILLED_AFTER_SAVE = """
import os, signal, sys
from hyvl.train import checkpoint
save, step = checkpoint.save_checkpoint, int(sys.argv[1])
def save_then_die(output_dir, state, **kwargs):
    path = save(output_dir, state, **kwargs)
    if state.step == step:
        os.kill(os.getpid(), signal.SIGKILL)
    return path
checkpoint.save_checkpoint = save_then_die
from hyvl.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def check_resume(plan: Plan) -> dict:
    import yaml

    from hyvl.config import load_run_config, to_dict

    steps, half = plan.resume_steps, plan.resume_steps // 2
    overrides = run_overrides(
        plan, steps, plan.resume_batch, **{"train.checkpoint_every": half, "train.keep_last": 2}
    )
    # a small model: what is checked is the GPU path of kill and resume, not the towers
    recipe = "hycoclip_tiny"
    config = plan.work / "resume.yaml"
    config.write_text(yaml.safe_dump(to_dict(load_run_config(recipe, overrides))))
    killed_dir = plan.work / "resume_killed"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), *sys.path])}
    cmd = [sys.executable, "-c", KILLED_AFTER_SAVE, str(half), "train", "--config", str(config)]
    killed = subprocess.run(
        [*cmd, "--output-dir", str(killed_dir), "--overwrite"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    if killed.returncode != -signal.SIGKILL:
        raise RuntimeError(
            f"the run to kill ended with {killed.returncode}: {killed.stderr[-800:]}"
        )
    chosen = json.loads((killed_dir / ".hyvl-run").read_text())["box_towers"]["chosen"]
    resumed = train_run(plan, "resume_killed", overrides, recipe)
    same = [*overrides, f"train.box_towers={chosen}"]
    reference = train_run(plan, "resume_reference", same, recipe)
    after = list(zip(reference["losses"][half:], resumed["losses"][half:], strict=True))
    worst = max(abs(a - b) / max(abs(a), 1e-6) for a, b in after)
    return {
        "killed_after_step": half,
        "steps": steps,
        "box_towers_recorded": chosen,
        "box_towers_resumed": resumed["box_towers"],
        "losses_reference": reference["losses"],
        "losses_resumed": resumed["losses"],
        "max_rel_diff_after_resume": worst,
        "bitwise": all(a == b for a, b in after),
        "tolerance": plan.tolerance,
        "ok": (
            resumed["steps"] == steps
            and len(resumed["losses"]) == steps
            and resumed["box_towers"] == chosen
            and worst <= plan.tolerance
        ),
    }


def check_eval(plan: Plan) -> dict:
    import hyvl
    from hyvl.data.demo import make_demo
    from hyvl.evaluation.suite import run_suite

    root = plan.work / "eval_world"
    make_demo(root, seed=1, train_samples=8, val_samples=8, zeroshot_per_class=4,
              retrieval_images=24, samples_per_shard=8)  # fmt: skip
    export = plan.work / "train_loader" / "export"  # the model train_loader trained
    model, preprocess, tokenizer = hyvl.load(export)
    results = {}
    for where in ("cpu", plan.device):
        results[where] = run_suite(
            model.to(where), preprocess, tokenizer, root, log=lambda *a, **k: None
        )
    cpu, dev = results["cpu"], results[plan.device]
    rows = {}
    for name, row in cpu["datasets"].items():
        rows[f"zeroshot:{name}"] = (row["value"], dev["datasets"][name]["value"], row)
    for name, row in cpu["retrieval"].items():
        for key in ("image_to_text", "text_to_image"):
            rows[f"{name}:{key} R@1"] = (row[key]["R@1"], dev["retrieval"][name][key]["R@1"], row)
    if not rows:
        raise RuntimeError(f"the eval suite found nothing under {root}: {cpu.get('missing')}")
    one_sample = {
        k: 100.0 / max(r.get("num_samples", r.get("num_images", 1)) or 1, 1)
        for k, (_, _, r) in rows.items()
    }
    diffs = {k: abs(a - b) for k, (a, b, _) in rows.items()}
    return {
        "model": "the export of train_loader",
        "on_device": {k: b for k, (_, b, _) in rows.items()},
        "on_cpu": {k: a for k, (a, _, _) in rows.items()},
        "max_abs_diff": max(diffs.values()),
        "ok": all(d <= one_sample[k] + 1e-6 for k, d in diffs.items()),
    }


def _fits(b: int, chunk: int, device: str) -> dict | None:
    """Time (ms) of HyCoCLIP's loss at batch b (after a warm-up), or None when out of memory."""
    try:
        x, y = _loss_inputs("hycoclip", b, 512, device)
        _loss_step("hycoclip", x, y, b, device, chunk=chunk)  # warm-up
        return {"batch": b, "ms": 1000 * _loss_step("hycoclip", x, y, b, device, chunk=chunk)}
    except torch.cuda.OutOfMemoryError:
        return None
    finally:
        if device.startswith("cuda"):
            torch.cuda.empty_cache()


def check_chunked(plan: Plan) -> dict:
    chunk = 128 if plan.dry else 2048
    sizes = [256, 512] if plan.dry else [2**k for k in range(13, 18)]  # 8192 ... 131072
    best: dict[str, dict | None] = {"chunked": None, "whole": None}
    for kind, c in (("chunked", chunk), ("whole", 0)):
        for b in sizes:
            row = _fits(b, c, plan.device)
            if row is None:
                break
            best[kind] = row
        if best[kind] is not None:  # peak memory at the largest batch that fit
            best[kind]["peak_mb"] = _loss_peak_mb("hycoclip", best[kind]["batch"], c, plan.device)
    ok = best["chunked"] is not None and all(
        math.isfinite(v) for r in best.values() if r for v in (r["ms"], r["peak_mb"])
    )
    return {
        "chunk_rows": chunk,
        "sizes_tried": sizes,
        "largest_chunked": best["chunked"],
        "largest_whole": best["whole"],
        "peak_memory": "torch.cuda.max_memory_allocated" if plan.cuda else "RSS growth",
        "ok": ok,
    }


CHECKS = {
    "step_{tower}": check_steps,
    "train_loader": check_train_loader,
    "fp16": check_fp16,
    "compile": check_compile,
    "resume": check_resume,
    "eval": check_eval,
    "chunked": check_chunked,
}


# ------------------------------------------------------------------------------ the report
def has_nan(value) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(has_nan(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(has_nan(v) for v in value)
    return False


def finite(value):
    """``value`` with NaN / inf numbers as None (JSON has no NaN; the check already failed)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def run_checks(plan: Plan, checks: dict, log=print) -> dict[str, dict]:
    """Every check, in order: its dict with ``ok`` and ``seconds``; an exception or a NaN in
    its figures makes it ``ok: false`` (with ``error``), and the next check still runs."""
    results = {}
    for pattern, fn in checks.items():
        names = [pattern.format(tower=t) for t in plan.towers] if "{" in pattern else [pattern]
        for name in names:
            start = time.perf_counter()
            try:
                res = fn(plan, name.split("_", 1)[1]) if "{" in pattern else fn(plan)
            except Exception as err:  # noqa: BLE001 - a failed check is reported, not fatal
                res = {"ok": False, "error": f"{type(err).__name__}: {err}"}
                traceback.print_exc()
            if has_nan(res):
                res["ok"], res["error"] = False, res.get("error") or "NaN or inf in the figures"
            # the check's own wall time; "seconds" is a step set's per-variant step times
            res["check_seconds"] = time.perf_counter() - start
            results[name] = res
            log(
                f"gpu_check: {name}: {'ok' if res['ok'] else 'FAILED'} ({res['check_seconds']:.0f} s)"
            )
    return results


def _fmt(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def markdown(report: dict) -> str:
    """The checks as one table, then each step set's variants side by side."""
    lines = [
        f"gpu_check on {report['device']}: {'ok' if report['ok'] else 'FAILED'}",
        "",
        "| check | ok | seconds | figures |",
        "| --- | --- | --- | --- |",
    ]
    for name, res in report["checks"].items():
        shown = {
            k: v
            for k, v in res.items()
            if k not in ("ok", "check_seconds") and not isinstance(v, (dict, list))
        }
        figures = "; ".join(f"{k} {_fmt(v)}" for k, v in shown.items())
        lines.append(
            f"| {name} | {'yes' if res['ok'] else 'NO'} | {res['check_seconds']:.0f} | {figures} |"
        )
    for name, res in report["checks"].items():
        if "images_per_s" in res and isinstance(res["images_per_s"], dict):
            lines += ["", f"{name} (B={res['batch']}, {res['autocast']}):", ""]
            lines += ["| variant | s/step | images/s |", "| --- | --- | --- |"]
            for k, t in res["seconds"].items():
                lines.append(f"| {k} | {t:.4f} | {res['images_per_s'][k]:.0f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--device", default="cuda", help="the CUDA device (default: cuda)")
    p.add_argument("--dry-run", action="store_true", help="the same code on CPU, tiny sizes")
    p.add_argument("--json", default="gpu_check.json", help="the report (default: gpu_check.json)")
    p.add_argument("--markdown", default="gpu_check.md", help="the table (default: gpu_check.md)")
    p.add_argument("--work", help="folder for shards and runs (default: a temporary one)")
    p.add_argument(
        "--only",
        help="comma-separated checks to run: step, train_loader, fp16, compile, resume, eval (needs train_loader), chunked",
    )
    args = p.parse_args(argv)
    if not args.dry_run:
        problem = cuda_problem(args.device)
        if problem is not None:
            print(f"gpu_check: --device {args.device}: {problem}", file=sys.stderr)
            return 2
    with tempfile.TemporaryDirectory(dir=args.work) as work:
        plan = Plan.dry_run(Path(work)) if args.dry_run else Plan(args.device, False, Path(work))
        plan.shards_pattern = make_shards(plan)
        chosen = CHECKS
        if args.only:
            wanted = set(args.only.split(","))
            chosen = {
                k: f for k, f in CHECKS.items() if k in wanted or k.format(tower="") in wanted
            }
        checks = run_checks(plan, chosen, log=lambda line: print(line, flush=True))
    device = torch.cuda.get_device_name(plan.device) if plan.cuda else "cpu (dry run)"
    report = {"ok": all(c["ok"] for c in checks.values()), "device": device, "checks": checks}
    Path(args.json).write_text(json.dumps(finite(report), indent=2, allow_nan=False) + "\n")
    Path(args.markdown).write_text(markdown(report))
    print(markdown(report))
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
