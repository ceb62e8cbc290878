"""Training checkpoints: atomic writes, the last K kept, exact resume of every random stream.

Layout of ``OUTPUT/checkpoints/step_0001000/``::

    state.safetensors   model + objective parameters and buffers (the unwrapped train module)
    optimizer.pt        optimizer state (tensors and plain types; read with weights_only=True)
    scheduler.pt        LR scheduler state
    scaler.pt           fp16 GradScaler state (only when one is in use)
    rng_<rank>.pt       python / numpy / torch (/ cuda) RNG states of each process
    meta.json           step, world size, format tag; written LAST

A checkpoint is written into ``checkpoints/.tmp-step_XXXXXXX`` and renamed into place with
``os.replace`` only after ``meta.json`` is on disk, so a process killed mid-write (``kill -9``,
preemption) leaves a temp directory that resume ignores and removes, never a half checkpoint
that looks complete.

Why not ``accelerator.save_state``: its ``load_state`` swallows any error while restoring the
RNG states ("Could not load random states" at INFO level), which silently breaks exact resume,
and it unpickles with ``weights_only=False``. Under FSDP (sharded parameters and optimizer
state) we do use it, for those two pieces only, and keep our own RNG and meta files.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hyvl.errors import CheckpointError

FORMAT = "hyvl-train-checkpoint-1"
META = "meta.json"
STATE = "state.safetensors"
# Test hook: the process SIGKILLs itself halfway through writing the checkpoint of this step
# (after the weights, before meta.json and the rename). Used by the crash-resume test.
KILL_ENV = "HYVL_TEST_KILL_IN_CHECKPOINT"


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def step_dir(output_dir: str | Path, step: int) -> Path:
    return checkpoint_root(output_dir) / f"step_{step:07d}"


def list_checkpoints(output_dir: str | Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (those with meta.json), oldest first."""
    root = checkpoint_root(output_dir)
    if not root.is_dir():
        return []
    found = []
    for path in root.iterdir():
        if not path.is_dir() or not path.name.startswith("step_") or not (path / META).is_file():
            continue
        try:
            found.append((int(path.name[len("step_") :]), path))
        except ValueError:
            continue
    return sorted(found)


def latest_checkpoint(output_dir: str | Path) -> tuple[int, Path] | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def remove_partial(output_dir: str | Path) -> list[Path]:
    """Delete temp directories left by a write that was killed; returns what was removed."""
    root = checkpoint_root(output_dir)
    removed = []
    if root.is_dir():
        for path in root.iterdir():
            if path.name.startswith(".tmp-"):
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path)
    return removed


def prune(output_dir: str | Path, keep_last: int) -> None:
    """Keep the newest ``keep_last`` complete checkpoints (all of them if keep_last <= 0)."""
    if keep_last <= 0:
        return
    for _, path in list_checkpoints(output_dir)[:-keep_last]:
        shutil.rmtree(path, ignore_errors=True)


# --------------------------------------------------------------------------------------
# RNG states
# --------------------------------------------------------------------------------------


def rng_state() -> dict[str, Any]:
    """Every RNG this process draws from, as tensors and plain values (weights_only-safe)."""
    py_version, py_internal, py_gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state: dict[str, Any] = {
        "python_version": py_version,
        "python_state": torch.tensor(py_internal, dtype=torch.int64),
        "python_gauss": py_gauss,
        "numpy_name": np_name,
        "numpy_keys": torch.from_numpy(np_keys.astype(np.int64)),
        "numpy_pos": int(np_pos),
        "numpy_has_gauss": int(np_has_gauss),
        "numpy_gauss": float(np_gauss),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(
        (
            state["python_version"],
            tuple(int(v) for v in state["python_state"].tolist()),
            state["python_gauss"],
        )
    )
    np.random.set_state(
        (
            state["numpy_name"],
            state["numpy_keys"].numpy().astype(np.uint32),
            state["numpy_pos"],
            state["numpy_has_gauss"],
            state["numpy_gauss"],
        )
    )
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------
# Save / load
# --------------------------------------------------------------------------------------


def _torch_load(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {str(path)!r} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same clear error
        raise CheckpointError(f"cannot read checkpoint file {str(path)!r}: {err}") from err


def save_checkpoint(
    output_dir: str | Path,
    step: int,
    *,
    accelerator: Any,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    keep_last: int,
    fsdp_model: Any = None,
) -> Path | None:
    """Write the checkpoint of ``step`` atomically (collective: call on every process).

    ``module`` is the unwrapped train module (model + objective). Returns the final path.
    """
    final = step_dir(output_dir, step)
    tmp = final.parent / f".tmp-{final.name}"
    main = accelerator.is_main_process
    if main:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    if fsdp_model is not None:
        # Sharded parameters and optimizer state: accelerate knows how to gather / shard them.
        accelerator.save_state(str(tmp / "accelerate"), safe_serialization=True)
    elif main:
        from safetensors.torch import save_model

        # save_model (not save_file) de-duplicates tied tensors instead of refusing them.
        save_model(module, str(tmp / STATE))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if main:
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if accelerator.scaler is not None:
            torch.save(accelerator.scaler.state_dict(), tmp / "scaler.pt")
    torch.save(rng_state(), tmp / f"rng_{accelerator.process_index}.pt")
    accelerator.wait_for_everyone()
    if main:
        if os.environ.get(KILL_ENV) == str(step):
            os.kill(os.getpid(), signal.SIGKILL)
        meta = {"format": FORMAT, "step": step, "world_size": accelerator.num_processes}
        (tmp / META).write_text(json.dumps(meta) + "\n")
        _fsync_dir(tmp)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        prune(output_dir, keep_last)
    accelerator.wait_for_everyone()
    return final


def _fsync_dir(path: Path) -> None:
    """Flush a directory entry so the rename survives a power cut, not only a kill."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_meta(path: Path) -> dict:
    try:
        meta = json.loads((path / META).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CheckpointError(
            f"{str(path / META)!r} is not a hyvl training checkpoint: {err}"
        ) from err
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{str(path)!r}: unknown checkpoint format {meta.get('format')!r}, expected {FORMAT!r}"
        )
    return meta


def load_checkpoint(
    path: str | Path,
    *,
    accelerator: Any,
    module: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    fsdp_model: Any = None,
) -> dict:
    """Restore everything :func:`save_checkpoint` wrote; returns meta (with ``step``).

    RNG states are restored per process; when the world size changed since the checkpoint
    the caller reseeds (``meta["rng_restored"]`` is False) since exact replay is then impossible.
    """
    path = Path(path)
    meta = read_meta(path)
    if fsdp_model is not None:
        accelerator.load_state(str(path / "accelerate"))
    else:
        from safetensors.torch import load_model

        state_file = path / STATE
        if not state_file.is_file():
            raise CheckpointError(f"checkpoint {str(path)!r} has no {STATE}")
        try:
            missing, unexpected = load_model(module, str(state_file), strict=False)
        except Exception as err:  # noqa: BLE001
            raise CheckpointError(f"cannot load {str(state_file)!r} into the model: {err}") from err
        if missing or unexpected:
            raise CheckpointError(
                f"{str(state_file)!r} does not match this model/objective config: "
                f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
            )
        optimizer.load_state_dict(_torch_load(path / "optimizer.pt"))
    scheduler.load_state_dict(_torch_load(path / "scheduler.pt"))
    if accelerator.scaler is not None and (path / "scaler.pt").is_file():
        accelerator.scaler.load_state_dict(_torch_load(path / "scaler.pt"))
    rng_file = path / f"rng_{accelerator.process_index}.pt"
    meta["rng_restored"] = (
        meta.get("world_size") == accelerator.num_processes and rng_file.is_file()
    )
    if meta["rng_restored"]:
        set_rng_state(_torch_load(rng_file))
    return meta
