"""The benchmark set on a CUDA GPU, as one command and one JSON to compare with a CPU run.

    python tools/bench.py --device cuda [--quick] [--json gpu.json]
    hyvl bench --device cuda

Measured side by side as on the CPU (variants take turns, medians; CUDA work is synchronised
before every clock read):

* ``step``: the train-step ratios of ``tools/bench.py`` (clip, meru, hycoclip fused, hycoclip
  split, the published structure) with the tiny towers at GPU batch sizes, in fp32 and under
  bf16 autocast; peak memory per variant (``torch.cuda.max_memory_allocated``).
* ``vit_b``: one training step of the ViT-B/16 models (224 px, bf16 autocast) and the
  MERU / HyCoCLIP over CLIP ratios where towers dominate.
* ``loss_only``: lift + objective at B = 1024 / 4096 / 16384 (``pairwise_matmul`` says which
  matmul the pairwise distance used: "split" on CUDA).
* ``loss_chunked``: HyCoCLIP's loss at the largest of those batches with
  ``objective.logit_chunk_rows=2048`` against whole blocks: time and peak memory.
* ``loader``: the training loader (one box per sample, JPEG draft decoding) against a
  full-size decode-only loop at a GPU batch size with DataLoader workers.

Without a usable CUDA device it prints one line and exits with status 2.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch
from bench import KINDS, Variant, chunked_loss, interleaved, loss_only_scaling, precision

from hyvl import lorentz


def cuda_problem(device: str) -> str | None:
    """Why ``device`` cannot run the GPU set, or None."""
    try:
        is_cuda = torch.device(device).type == "cuda"
    except RuntimeError:
        is_cuda = False
    if not is_cuda:
        return "unknown device: use cpu or cuda[:N]"
    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only"
        return f"no CUDA device available (torch {torch.__version__}, {build})"
    index = torch.device(device).index or 0
    if index >= torch.cuda.device_count():
        return f"no CUDA device {index} ({torch.cuda.device_count()} visible)"
    return None


def _ratios(t: dict[str, float]) -> dict[str, float]:
    out = {
        "meru_over_clip": t["meru"] / t["clip"],
        "hycoclip_over_clip": t["hycoclip"] / t["clip"],
    }
    if "reference" in t:
        out["hycoclip_over_reference"] = t["hycoclip"] / t["reference"]
        out["split_over_fused"] = t["hycoclip_split"] / t["hycoclip"]
        out["split_over_reference"] = t["hycoclip_split"] / t["reference"]
    return out


def peak_memory_mb(variant: Variant, device: str) -> float:
    """Peak CUDA memory of one step (MB) over what model, optimizer and batch already hold."""
    variant.step()  # optimizer state exists from here on
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    variant.step()
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def steps(device: str, quick: bool) -> dict:
    names = (*KINDS, "reference", "hycoclip_split")
    reps = 3 if quick else 10
    out: dict = {"seconds": {}, "ratios": {}, "bf16_seconds": {}, "bf16_ratios": {}}
    for b in (256, 1024):
        for mode, key in ((None, "seconds"), ("bf16", "bf16_seconds")):
            variants = [Variant(n, b, autocast=mode, device=device) for n in names]
            t = interleaved(variants, reps)
            out[key][str(b)] = t
            out[key.replace("seconds", "ratios")][str(b)] = _ratios(t)
            if b == 1024 and mode is None:
                out["peak_mb_b1024"] = {v.name: peak_memory_mb(v, device) for v in variants}
            del variants
            torch.cuda.empty_cache()
    out["precision"] = {"batch": 256, **precision(256, reps, device)}
    return out


def vit_b(device: str, quick: bool) -> dict:
    b = 64 if quick else 128
    variants = [Variant(k, b, autocast="bf16", device=device, size="vit_b") for k in KINDS]
    t = interleaved(variants, 3 if quick else 8)
    return {
        "batch": b,
        "autocast": "bf16",
        "seconds": t,
        "samples_per_s": {k: b / v for k, v in t.items()},
        **_ratios(t),
    }


def loader(quick: bool) -> dict:
    from bench_data import draft_comparison

    workers = min(8, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory() as root:
        rows = draft_comparison(
            Path(root),
            [512],
            [224],
            batch_size=256,
            batches=3 if quick else 10,
            reps=2 if quick else 3,
            workers=workers,
        )
    return {"workers": workers, "batch": 256, "rows": rows}


def gpu_main(args) -> int:
    problem = cuda_problem(args.device)
    if problem is not None:
        print(f"bench: --device {args.device}: {problem}", file=sys.stderr)
        return 2
    device = args.device
    started = time.perf_counter()
    props = torch.cuda.get_device_properties(device)
    res: dict = {
        "machine": {
            "device": torch.cuda.get_device_name(device),
            "capability": f"{props.major}.{props.minor}",
            "memory_gb": round(props.total_memory / 2**30, 1),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "python": platform.python_version(),
            "allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "pairwise_matmul": lorentz.pairwise_matmul(torch.zeros(1, device=device)),
        },
        "quick": args.quick,
    }
    res["step"] = steps(device, args.quick)
    for name, ratio in res["step"]["ratios"]["256"].items():
        res[name] = ratio  # the CPU run's top-level keys (its batch 256)
    res["vit_b"] = vit_b(device, args.quick)
    sizes = [1024, 4096] if args.quick else [1024, 4096, 16384]
    res["loss_only"] = loss_only_scaling(sizes, reps=3 if args.quick else 5, device=device)
    for row in res["loss_only"]:
        for kind in ("meru", "hycoclip"):
            res[f"loss_{kind}_over_clip_{row['batch']}"] = row[f"{kind}_over_clip"]
    res["loss_chunked"] = chunked_loss(
        "hycoclip", sizes[-1], 2048, reps=3 if args.quick else 5, device=device
    )
    res["loader"] = loader(args.quick)
    res["seconds"] = time.perf_counter() - started
    text = json.dumps(res, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0
