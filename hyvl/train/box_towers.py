"""``train.box_towers: auto``: which tower arrangement a run with box crops uses, and why.

The two arrangements give the same embeddings up to rounding (``HyvlModel.forward``):
``fused`` embeds whole and box rows in one tower call on 2B rows, ``split`` in two calls on B.
Which is faster depends on the device: on a GPU one bigger call fills it better; on some CPUs
the bigger call's activations leave the caches and two calls win by 2-70% (measured on two
2-core machines). A default measured on one machine is a guess, so ``auto`` measures at start:
one forward + backward of the towers per arrangement on the run's first (micro-)batch, after a
warm-up, the two taking turns, medians. The towers are all that differs between the two, so
the objective is left out of the timing.

The choice is printed, kept in every checkpoint's meta.json (a resume uses it, so resumed
runs stay bit-identical to uninterrupted ones) and in the run directory's ``.hyvl-run``
(``box_towers``). The measurement leaves no trace in the run: random streams are forked and
restored, gradients cleared.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import torch
from torch import nn

from hyvl.train.step import EMB_FIELDS, split_micro

ARRANGEMENTS = ("fused", "split")


def rule(device: torch.device | str) -> str:
    """The arrangement without a measurement: fused on CUDA, split elsewhere."""
    return "fused" if torch.device(device).type == "cuda" else "split"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(
    model: nn.Module,
    tensors: tuple,
    *,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    reps: int = 3,
    warmup: int = 1,
) -> dict[str, float]:
    """Median seconds of one forward + backward of ``model`` per arrangement on ``tensors``
    ``(images, tokens, box_images, box_tokens)``; the arrangements take turns.

    Random streams (dropout, drop-path) are forked and restored and ``.grad`` is put back as it
    was, so a run that measures is the same run as one that does not.
    """
    device = tensors[0].device
    params = [p for p in model.parameters() if p.requires_grad]
    grads = [p.grad for p in params]
    cuda = [device.index or 0] if device.type == "cuda" else []
    times: dict[str, list[float]] = {a: [] for a in ARRANGEMENTS}
    try:
        with torch.random.fork_rng(devices=cuda):
            for rep in range(warmup + reps):
                for arrangement in ARRANGEMENTS:
                    for p in params:
                        p.grad = None
                    _sync(device)
                    start = time.perf_counter()
                    with autocast():
                        emb = model(*tensors, box_towers=arrangement)
                    total = sum(
                        getattr(emb, n).float().sum()
                        for n in EMB_FIELDS
                        if getattr(emb, n) is not None
                    )
                    total.backward()
                    _sync(device)
                    if rep >= warmup:
                        times[arrangement].append(time.perf_counter() - start)
    finally:
        for p, g in zip(params, grads, strict=True):
            p.grad = g
    return {a: statistics.median(t) for a, t in times.items()}


def pick(seconds: dict[str, float]) -> str:
    """The faster arrangement (fused on a tie: it makes fewer calls)."""
    return "split" if seconds["split"] < seconds["fused"] else "fused"


def choose(
    model: nn.Module,
    tensors: tuple,
    *,
    autocast: Callable[[], AbstractContextManager] = nullcontext,
    reps: int = 3,
) -> dict[str, Any]:
    """``{"chosen", "by", "seconds"}`` for ``auto`` on this model and batch (one process)."""
    if tensors[2] is None and tensors[3] is None:
        return {"chosen": "fused", "by": "no box crops"}  # one call per tower either way
    seconds = measure(model, tensors, autocast=autocast, reps=reps)
    return {"chosen": pick(seconds), "by": "measured", "seconds": seconds}


def resolve(state: Any, tensors: tuple) -> dict[str, Any]:
    """``train.box_towers`` of this run as ``{"setting", "chosen", "by", ...}`` (collective).

    ``state.box_towers`` is what a resumed checkpoint recorded (None on a fresh run).
    ``auto``: the recorded choice on resume; else measured on this process's first batch
    (its first GradCache micro-batch: what the towers see), the main process's choice sent
    to every process so all run the same arrangement. Under FSDP no process holds whole
    towers to time alone: :func:`rule` then.
    """
    tcfg, accelerator = state.cfg.train, state.accelerator
    setting = tcfg.box_towers
    if setting != "auto":
        return {"setting": setting, "chosen": setting, "by": "config"}
    if state.box_towers is not None:
        return {"setting": setting, "chosen": state.box_towers, "by": "recorded"}
    device = tensors[0].device
    if tcfg.fsdp:
        info = {"chosen": rule(device), "by": "rule (fsdp)"}
    else:
        micro = split_micro(tensors, tcfg.grad_accum)[0]
        info = choose(state.model, micro, autocast=accelerator.autocast)
    if accelerator.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        info = broadcast_object_list([info], from_process=0)[0]
    info = {"setting": setting, **info, "device": str(device), "batch": int(tensors[0].shape[0])}
    return info


def describe(info: dict[str, Any]) -> str:
    """One log line for the choice."""
    line = f"hyvl train: train.box_towers={info['setting']}: {info['chosen']}"
    if info["by"] == "measured":
        s = info["seconds"]
        line += (
            f" (measured on {info['device']}, batch {info['batch']}: towers forward + backward "
            f"fused {s['fused']:.3g} s, split {s['split']:.3g} s)"
        )
    elif info["by"] != "config":
        line += f" ({info['by']})"
    return line
