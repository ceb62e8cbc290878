"""Step-time, memory and precision benchmarks: CLIP vs MERU vs HyCoCLIP vs the published structure.

Every number is measured in this run, side by side: the objectives share identical tiny towers
and batches, repetitions of the variants are interleaved (A B C D A B C D ...) so drifting
machine load hits all alike, and medians are reported.

    python tools/bench.py --quick          # < 2 minutes on 2 CPU cores
    python tools/bench.py --json out.json  # full mode
    python tools/bench.py --device cuda    # the GPU set (tools/bench_gpu.py)
    python tools/bench.py --device cuda --full   # the GPU proof (tools/gpu_check.py)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hycoclip_reference import reference_step_loss  # noqa: E402

import hyvl  # noqa: E402
from hyvl.cli.common import print_table  # noqa: E402
from hyvl.config import ObjectiveConfig  # noqa: E402
from hyvl.models.embeddings import Embeddings  # noqa: E402
from hyvl.objectives import compute_objective  # noqa: E402
from hyvl.train import box_towers  # noqa: E402
from hyvl.train.allocator import keep_freed_memory  # noqa: E402

KINDS = ("clip", "meru", "hycoclip")
# What the step set times: the objectives, hyvl's HyCoCLIP in both tower arrangements and the
# published structure. "hycoclip" in results is the arrangement train.box_towers=auto picks.
STEP_VARIANTS = ("clip", "meru", "hycoclip_fused", "hycoclip_split", "reference")


def _sync(device: str) -> None:
    # CUDA kernels run asynchronously: a timer must wait for them.
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def make_batch(model, b: int, boxes: bool, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    s, L = model.image_size, model.context_length
    images = torch.rand(b, 3, s, s, generator=g)
    tokens = torch.randint(1, 49000, (b, L), generator=g)
    tokens[:, -1] = 49407
    if not boxes:
        return images, tokens, None, None
    return images, tokens, torch.rand(b, 3, s, s, generator=g), tokens.roll(1, 0)


class Variant:
    """One thing to time: a model + its loss + AdamW, with the same init for every variant."""

    def __init__(
        self,
        name: str,
        b: int,
        autocast: str | None = None,
        device: str = "cpu",
        size: str = "tiny",
        overrides: dict | None = None,
    ):
        """``overrides``: merged into the model config (``hyvl.create_model``'s keywords)."""
        self.name = name
        kind = "hycoclip" if name.startswith("hycoclip") or name == "reference" else name
        torch.manual_seed(0)
        self.model = hyvl.create_model(f"{kind}_{size}", **(overrides or {})).to(device)
        self.cfg = ObjectiveConfig(kind=kind)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        batch = make_batch(self.model, b, boxes=kind == "hycoclip")
        self.batch = tuple(None if t is None else t.to(device) for t in batch)
        self.device = device
        # fused: whole and box images in one tower call on 2B rows; split: two calls on B
        self.box_towers = "split" if name == "hycoclip_split" else "fused"
        self.autocast = autocast

    def autocast_context(self):
        device_type = torch.device(self.device).type
        return torch.autocast(device_type, dtype=torch.bfloat16, enabled=self.autocast == "bf16")

    def loss(self):
        if self.name == "reference":
            return reference_step_loss(self.model, *self.batch)
        emb = self.model(
            *self.batch[:2],
            box_images=self.batch[2],
            box_tokens=self.batch[3],
            box_towers=self.box_towers,
        )
        return compute_objective(emb, self.cfg, self.model.geometry, distributed_gather=False)[
            "loss"
        ]

    def step(self) -> float:
        _sync(self.device)
        t = time.perf_counter()
        with self.autocast_context():
            loss = self.loss()
        loss.backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        _sync(self.device)
        return time.perf_counter() - t


def interleaved(variants: list[Variant], reps: int, warmup: int = 1) -> dict[str, float]:
    for v in variants:
        for _ in range(warmup):
            v.step()
    times: dict[str, list[float]] = {v.name: [] for v in variants}
    for _ in range(reps):
        for v in variants:
            times[v.name].append(v.step())
    return {k: statistics.median(t) for k, t in times.items()}


def with_auto(times: dict[str, float], variants: list[Variant]) -> str:
    """Add ``times["hycoclip"]``: the time of the arrangement ``train.box_towers=auto`` picks
    (the trainer's own measurement, :func:`hyvl.train.box_towers.choose`, run on the fused
    variant's model and batch); returns the pick."""
    fused = next(v for v in variants if v.name == "hycoclip_fused")
    chosen = box_towers.choose(fused.model, fused.batch, autocast=fused.autocast_context)["chosen"]
    times["hycoclip"] = times[f"hycoclip_{chosen}"]
    return chosen


def step_ratios(t: dict[str, float]) -> dict[str, float]:
    """The ratios of one batch size's step times (``t`` with :func:`with_auto`'s "hycoclip")."""
    return {
        "meru_over_clip": t["meru"] / t["clip"],
        "hycoclip_over_clip": t["hycoclip"] / t["clip"],
        "hycoclip_over_reference": t["hycoclip"] / t["reference"],
        "split_over_fused": t["hycoclip_split"] / t["hycoclip_fused"],
        "split_over_reference": t["hycoclip_split"] / t["reference"],
    }


def lift_loss_share(b: int, reps: int) -> dict[str, float]:
    """Median time of lift + loss (forward and backward) on fixed tower features, per kind."""
    out = {}
    for kind in ("meru", "hycoclip"):
        torch.manual_seed(0)
        model = hyvl.create_model(f"{kind}_tiny")
        d = model.config.embed_dim
        n = 2 if kind == "hycoclip" else 1
        feats_i = torch.randn(b * n, d, requires_grad=True)
        feats_t = torch.randn(b * n, d, requires_grad=True)
        cfg = ObjectiveConfig(kind=kind)
        times = []
        for r in range(reps + 1):
            t = time.perf_counter()
            img, txt = model.lift_image(feats_i), model.lift_text(feats_t)
            emb = Embeddings(
                img[:b],
                txt[:b],
                img[b:] if n == 2 else None,
                txt[b:] if n == 2 else None,
                model.curv,
                model.logit_scale_exp,
            )
            compute_objective(emb, cfg, "lorentz", distributed_gather=False)["loss"].backward()
            if r:
                times.append(time.perf_counter() - t)
        out[kind] = statistics.median(times)
    return out


def _loss_inputs(kind: str, b: int, d: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = 2 if kind == "hycoclip" else 1  # whole rows, then one box row per sample
    x = torch.randn(b * n, d, generator=g) * 0.05
    y = torch.randn(b * n, d, generator=g) * 0.05
    return x.to(device), y.to(device)


def _loss_step(
    kind: str, x: torch.Tensor, y: torch.Tensor, b: int, device: str, chunk: int = 0
) -> float:
    """One lift + objective, forward + backward, on fixed tower features; seconds.

    ``chunk``: ``objective.logit_chunk_rows`` (0: whole logits blocks)."""
    xi, yi = x.clone().requires_grad_(), y.clone().requires_grad_()
    _sync(device)
    t = time.perf_counter()
    if kind == "clip":
        a = torch.nn.functional.normalize(xi, dim=-1)
        c = torch.nn.functional.normalize(yi, dim=-1)
        curv, geometry = None, "euclidean"
    else:
        a, c = hyvl.lorentz.exp_map0(xi), hyvl.lorentz.exp_map0(yi)
        curv, geometry = torch.tensor(1.0, device=device), "lorentz"
    boxes = kind == "hycoclip"
    emb = Embeddings(
        a[:b],
        c[:b],
        a[b:] if boxes else None,
        c[b:] if boxes else None,
        curv,
        torch.tensor(10.0, device=device),
    )
    cfg = ObjectiveConfig(kind=kind, logit_chunk_rows=chunk)
    loss = compute_objective(emb, cfg, geometry, distributed_gather=False)
    loss["loss"].backward()
    _sync(device)
    return time.perf_counter() - t


def loss_only_scaling(sizes, d: int = 512, reps: int = 3, device: str = "cpu") -> list[dict]:
    """Lift + objective alone (no towers), forward + backward, D=512, per batch size.

    The kinds take turns within each repetition (after one warm-up round), so the ratios to
    CLIP compare times measured under the same machine load.
    """
    rows = []
    for b in sizes:
        inputs = {kind: _loss_inputs(kind, b, d, device) for kind in KINDS}
        times: dict[str, list[float]] = {kind: [] for kind in KINDS}
        for rep in range(reps + 1):
            for kind in KINDS:
                seconds = _loss_step(kind, *inputs[kind], b, device)
                if rep:
                    times[kind].append(seconds)
        med = {kind: statistics.median(t) for kind, t in times.items()}
        row = {"batch": b, **{f"{kind}_ms": 1000 * med[kind] for kind in KINDS}}
        row["meru_over_clip"] = med["meru"] / med["clip"]
        row["hycoclip_over_clip"] = med["hycoclip"] / med["clip"]
        rows.append(row)
    return rows


def _fresh_process_mb(code: str, **env: str) -> float:
    """Run ``code`` in a fresh interpreter (with ``env`` added) and return the number it prints
    last: the memory measurements below each need a process of their own."""
    run = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return float(run.stdout.strip().splitlines()[-1])


def _loss_peak_mb(kind: str, b: int, chunk: int, device: str) -> float:
    """Peak memory growth (MB) of one loss-only step (:func:`_loss_step`), inputs excluded.

    CUDA: ``torch.cuda.max_memory_allocated``. CPU: the peak RSS growth of a fresh process (after
    a small warm-up step) with glibc's mmap threshold fixed at 64 KiB (``MALLOC_MMAP_THRESHOLD_``):
    freed tensor memory then goes back to the system at once, so the peak follows live tensors.
    With glibc's default (a threshold that rises after each free) mid-sized blocks are served
    from a fragmenting heap and RSS overstates them.
    """
    if device != "cpu":
        x, y = _loss_inputs(kind, b, 512, device)
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        _loss_step(kind, x, y, b, device, chunk=chunk)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    here = str(Path(__file__).resolve().parent)
    code = (
        f"import sys; sys.path.insert(0, {here!r}); import bench; "
        f"x, y = bench._loss_inputs({kind!r}, 64, 512, 'cpu'); "
        f"bench._loss_step({kind!r}, x, y, 64, 'cpu', chunk={chunk}); "
        f"x, y = bench._loss_inputs({kind!r}, {b}, 512, 'cpu'); base = bench._peak_rss_mb(); "
        f"bench._loss_step({kind!r}, x, y, {b}, 'cpu', chunk={chunk}); "
        f"print(bench._peak_rss_mb() - base)"
    )
    return _fresh_process_mb(code, MALLOC_MMAP_THRESHOLD_="65536")


def chunked_loss(
    kind: str, b: int, chunk: int, reps: int, device: str = "cpu"
) -> dict[str, float | str | int]:
    """``objective.logit_chunk_rows=chunk`` against whole blocks, loss only (as
    :func:`loss_only_scaling`): median time (the two take turns) and peak memory
    (:func:`_loss_peak_mb`)."""
    x, y = _loss_inputs(kind, b, 512, device)
    times: dict[int, list[float]] = {0: [], chunk: []}
    for rep in range(reps + 1):
        for c in times:
            seconds = _loss_step(kind, x, y, b, device, chunk=c)
            if rep:
                times[c].append(seconds)
    del x, y
    peak = {c: _loss_peak_mb(kind, b, c, device) for c in times}
    whole, chunked = statistics.median(times[0]), statistics.median(times[chunk])
    return {
        "objective": kind,
        "batch": b,
        "chunk_rows": chunk,
        "whole_ms": 1000 * whole,
        "chunked_ms": 1000 * chunked,
        "time_chunked_over_whole": chunked / whole,
        "peak_mb_whole": peak[0],
        "peak_mb_chunked": peak[chunk],
        "peak_chunked_over_whole": peak[chunk] / peak[0],
    }


def _peak_rss_mb() -> float:
    """This process's peak resident set (MB). /proc's VmHWM belongs to the current address space;
    ru_maxrss would also carry the parent's peak across fork + exec (Linux keeps the larger)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_memory(kind: str, b: int, steps: int = 2, kept: bool = True) -> float:
    """Peak RSS growth (MB) of a fresh process during ``steps`` training steps, over what the model,
    optimizer and batch already hold: CPU tensors live in process memory, and a fresh process per
    variant keeps allocator caches from leaking across variants."""
    here = str(Path(__file__).resolve().parent)
    code = (
        f"import gc, sys; sys.path.insert(0, {here!r}); import bench; "
        f"{kept} and bench.keep_freed_memory(); "
        f"v = bench.Variant({kind!r}, {b}); gc.collect(); base = bench._peak_rss_mb(); "
        f"[v.step() for _ in range({steps})]; print(bench._peak_rss_mb() - base)"
    )
    return _fresh_process_mb(code)


def precision(b: int, reps: int, device: str = "cpu") -> dict[str, float]:
    fp32 = Variant("hycoclip", b, device=device)
    bf16 = Variant("hycoclip", b, autocast="bf16", device=device)
    with torch.no_grad():
        l32 = float(fp32.loss())
        with torch.autocast(torch.device(device).type, dtype=torch.bfloat16):
            l16 = float(bf16.loss())
    fp32.name, bf16.name = "fp32", "bf16"
    t = interleaved([fp32, bf16], reps)
    return {
        "fp32_s": t["fp32"],
        "bf16_s": t["bf16"],
        "bf16_over_fp32": t["bf16"] / t["fp32"],
        "loss_fp32": l32,
        "loss_bf16": l16,
        "loss_abs_diff": abs(l32 - l16),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="fewer repetitions, < 2 minutes")
    p.add_argument("--json", help="write the results here")
    p.add_argument(
        "--device",
        default="cpu",
        help="cpu (default) or cuda[:N]: the GPU set (tools/bench_gpu.py), one JSON on stdout",
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="run tools/gpu_check.py on --device (the GPU path proved and measured; with "
        "--device cpu its --dry-run); --json names its report",
    )
    p.add_argument(
        "--default-malloc",
        action="store_true",
        help="keep glibc's default malloc settings (hyvl train before it kept freed memory)",
    )
    args = p.parse_args(argv)
    if args.full:
        from gpu_check import main as gpu_check

        where = ["--dry-run"] if args.device == "cpu" else ["--device", args.device]
        return gpu_check([*where, *(["--json", args.json] if args.json else [])])
    if args.device != "cpu":
        from bench_gpu import gpu_main

        return gpu_main(args)
    torch.set_num_threads(os.cpu_count() or 1)
    # as hyvl train on a CPU: freed activations stay in the process for the next step
    kept = False if args.default_malloc else keep_freed_memory()
    started = time.perf_counter()
    reps = {64: 3, 256: 2} if args.quick else {64: 15, 256: 7}
    res: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "load_before": os.getloadavg()[0],
            "keep_freed_memory": kept,
        },
        "quick": args.quick,
        "step_seconds": {},
    }
    res["box_towers_auto"] = {}
    for b, n in reps.items():
        variants = [Variant(k, b) for k in STEP_VARIANTS]
        res["step_seconds"][str(b)] = interleaved(variants, n)
        res["box_towers_auto"][str(b)] = with_auto(res["step_seconds"][str(b)], variants)
        del variants
    t256 = res["step_seconds"]["256"]
    res.update(step_ratios(t256))  # "hycoclip": the default, train.box_towers=auto
    res["ratios_b64"] = step_ratios(res["step_seconds"]["64"])
    share = lift_loss_share(256, reps[256] + 2)
    res["lift_loss_share"] = {k: share[k] / t256[k] for k in share}
    steps = 1 if args.quick else 3
    res["peak_rss_mb_b256"] = {k: peak_memory(k, 256, steps, kept) for k in (*KINDS, "reference")}
    # bf16 matmuls are emulated on most CPUs (about 20x slower): a small batch keeps it short.
    pb = 16 if args.quick else 64
    res["precision"] = {"batch": pb, **precision(pb, 2 if args.quick else 5)}
    sizes = [256, 1024, 4096] if args.quick else [64, 256, 1024, 4096]
    res["loss_only"] = loss_only_scaling(sizes, reps=2 if args.quick else 5)
    for row in res["loss_only"]:
        if row["batch"] in (1024, 4096):
            for kind in ("meru", "hycoclip"):
                res[f"loss_{kind}_over_clip_{row['batch']}"] = row[f"{kind}_over_clip"]
    res["loss_chunked"] = chunked_loss("hycoclip", 4096, 512, reps=1 if args.quick else 3)
    res["seconds"] = time.perf_counter() - started
    res["machine"]["load_after"] = os.getloadavg()[0]

    rows = [
        {"batch": b, **{f"{k} s/step": v for k, v in res["step_seconds"][b].items()}}
        for b in res["step_seconds"]
    ]
    print_table(rows, title="train step (forward + backward + AdamW), median, tiny towers")
    goal_of = {"meru_over_clip": 1.03, "hycoclip_over_clip": 2.05, "hycoclip_over_reference": 0.90}
    goals = []
    for batch, ratios in (("256", res), ("64", res["ratios_b64"])):
        for name in (*goal_of, "split_over_fused", "split_over_reference"):
            goal = goal_of.get(name)
            measured = ratios[name]
            if goal is None:
                verdict = "context"
            elif measured <= goal:
                verdict = "met"
            else:
                verdict = f"missed by {100 * (measured / goal - 1):.0f}%"
            goals.append(
                {
                    "batch": batch,
                    "ratio": name,
                    "measured": measured,
                    "goal": f"<= {goal:.2f}" if goal else "-",
                    "verdict": verdict,
                }
            )
    res["goals"] = goals
    print_table(
        goals,
        title="ratios (hycoclip: train.box_towers=auto's pick, "
        + ", ".join(f"B={b}: {c}" for b, c in res["box_towers_auto"].items())
        + ")",
    )
    print_table(
        [{"objective": k, "lift+loss share of step": v} for k, v in res["lift_loss_share"].items()]
    )
    print_table(
        [
            {"variant": k, "peak RSS growth MB (B=256)": v}
            for k, v in res["peak_rss_mb_b256"].items()
        ]
    )
    print_table(
        [res["precision"]],
        title="HyCoCLIP step, fp32 vs bf16 autocast",
    )
    print_table(res["loss_only"], title="loss only (lift + objective, fwd + bwd), D=512, ms")
    print_table([res["loss_chunked"]], title="objective.logit_chunk_rows: loss only, D=512")
    print(f"machine: {res['machine']}; total {res['seconds']:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
