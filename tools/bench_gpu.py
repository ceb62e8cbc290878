"""The benchmark set on a CUDA GPU, as one command and one JSON to compare with a CPU run.

    python tools/bench.py --device cuda [--quick] [--json gpu.json]
    hyvl bench --device cuda

Measured side by side as on the CPU (variants take turns, medians; CUDA work is synchronised
before every clock read):

* ``step``: the train-step ratios of ``tools/bench.py`` (clip, meru, hycoclip fused, hycoclip
  split, the published structure) with the tiny towers at GPU batch sizes, in fp32 and under
  bf16 autocast; peak memory per variant (``torch.cuda.max_memory_allocated``).
* ``vit_b``: one training step of the ViT-B/16 models (224 px, bf16 autocast) beside open_clip's
  own ViT-B-16 with ``open_clip.loss.ClipLoss`` (:func:`tower_steps`, which
  ``tools/gpu_check.py`` runs at ViT-S/16 and ViT-B/16, B = 256) and the MERU / HyCoCLIP over
  CLIP ratios where towers dominate.
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
from bench import (
    STEP_VARIANTS,
    Variant,
    chunked_loss,
    interleaved,
    loss_only_scaling,
    make_batch,
    precision,
    step_ratios,
    with_auto,
)

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


# open_clip's configuration of the tower each hyvl size stands beside; tiny: built from hyvl's
# *_tiny dimensions (open_clip has no such config).
OPEN_CLIP_NAMES = {"vit_s": "ViT-S-16", "vit_b": "ViT-B-16", "vit_l": "ViT-L-16"}


def open_clip_model(size: str, like: torch.nn.Module):
    """open_clip's own CLIP (random init, nothing downloaded) for hyvl's tower ``size``;
    ``like`` (the hyvl model of that size) gives image size and context length."""
    import open_clip

    if size in OPEN_CLIP_NAMES:
        return open_clip.create_model(OPEN_CLIP_NAMES[size])
    cfg = like.config
    return open_clip.model.CLIP(
        embed_dim=cfg.embed_dim,
        vision_cfg={
            "image_size": like.image_size,
            "patch_size": cfg.vision.patch_size,
            "width": cfg.vision.width,
            "layers": cfg.vision.depth,
            "head_width": cfg.vision.width // cfg.vision.heads,
        },
        text_cfg={
            "context_length": like.context_length,
            "width": cfg.text.width,
            "heads": cfg.text.heads,
            "layers": cfg.text.layers,
        },
    )


class OpenClipVariant(Variant):
    """open_clip's model and loss (``open_clip.loss.ClipLoss``) + AdamW: the anchor beside
    hyvl's CLIP on the same tower size, batch and precision."""

    def __init__(
        self, b: int, autocast: str | None, device: str, size: str, overrides: dict | None = None
    ):
        from open_clip.loss import ClipLoss

        self.name, self.device, self.autocast, self.box_towers = "open_clip", device, autocast, None
        like = Variant("clip", 1, size=size, overrides=overrides)  # hyvl's tower: its sizes
        torch.manual_seed(0)
        self.model = open_clip_model(size, like.model).to(device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        images, tokens, _, _ = make_batch(like.model, b, boxes=False)
        self.batch = (images.to(device), tokens.to(device), None, None)
        self.clip_loss = ClipLoss()

    def loss(self):
        out = self.model(*self.batch[:2])
        if isinstance(out, dict):
            out = (out["image_features"], out["text_features"], out["logit_scale"])
        return self.clip_loss(*out[:3])


def tower_steps(
    size: str,
    b: int,
    reps: int,
    device: str,
    autocast: str | None = "bf16",
    overrides: dict | None = None,
) -> dict:
    """One training step of every step variant and open_clip's anchor at tower ``size``, the
    variants taking turns: seconds, images/s, ratios, the arrangement auto picks.
    ``overrides``: smaller towers than the named size (the dry run of tools/gpu_check.py)."""
    variants = [
        Variant(n, b, autocast=autocast, device=device, size=size, overrides=overrides)
        for n in STEP_VARIANTS
    ]
    variants.append(OpenClipVariant(b, autocast, device, size, overrides))
    t = interleaved(variants, reps)
    auto = with_auto(t, variants)
    del variants
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return {
        "tower": size,
        "batch": b,
        "autocast": autocast or "fp32",
        "box_towers_auto": auto,
        "seconds": t,
        "images_per_s": {k: b / v for k, v in t.items()},
        **step_ratios(t),
        # hyvl's CLIP images/s over open_clip's on the same tower (goal >= 0.95 at ViT-B/16)
        "clip_over_open_clip_images_per_s": t["open_clip"] / t["clip"],
    }


def peak_memory_mb(variant: Variant, device: str) -> float:
    """Peak CUDA memory of one step (MB) over what model, optimizer and batch already hold."""
    variant.step()  # optimizer state exists from here on
    torch.cuda.synchronize(device)
    base = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    variant.step()
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def steps(device: str, quick: bool) -> dict:
    reps = 3 if quick else 10
    out: dict = {"seconds": {}, "ratios": {}, "bf16_seconds": {}, "bf16_ratios": {}}
    for b in (256, 1024):
        for mode, key in ((None, "seconds"), ("bf16", "bf16_seconds")):
            variants = [Variant(n, b, autocast=mode, device=device) for n in STEP_VARIANTS]
            t = interleaved(variants, reps)
            out.setdefault(f"box_towers_auto_{key}", {})[str(b)] = with_auto(t, variants)
            out[key][str(b)] = t
            out[key.replace("seconds", "ratios")][str(b)] = step_ratios(t)
            if b == 1024 and mode is None:
                out["peak_mb_b1024"] = {v.name: peak_memory_mb(v, device) for v in variants}
            del variants
            torch.cuda.empty_cache()
    out["precision"] = {"batch": 256, **precision(256, reps, device)}
    return out


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
    res["vit_b"] = tower_steps("vit_b", 64 if args.quick else 128, 3 if args.quick else 8, device)
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
