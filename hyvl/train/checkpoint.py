"""Training checkpoints: atomic writes, the last K kept, exact resume of every random stream.

Layout of ``OUTPUT/checkpoints/step_0001000/``::

    state.safetensors   model + objective parameters and buffers (the unwrapped train module)
    optimizer.pt        optimizer state (tensors and plain types; read with weights_only=True)
    scheduler.pt        LR scheduler state
    scaler.pt           fp16 GradScaler state (only when one is in use)
    rng_<rank>.pt       python / numpy / torch (/ cuda) RNG states of each process
    meta.json           step, world size, format tag, each process's stream position and
                        skipped samples (and their sum), the tower arrangement the steps
                        used (``box_towers``), the run's settings; written LAST

A checkpoint is written into ``checkpoints/.tmp-step_XXXXXXX``; every file is fsynced,
``meta.json`` (with each file's size) is written last, and the directory is renamed into place
with ``os.replace``. A process killed mid-write (``kill -9``, preemption) leaves a temp
directory that resume ignores and removes, never a half checkpoint that looks complete. A
checkpoint that is complete but unreadable (a disk error, a file cut by hand) is set aside as
``corrupt-step_XXXXXXX`` and resume falls back to the newest readable one, saying so.

Why not ``accelerator.save_state``: its ``load_state`` swallows any error while restoring the
RNG states ("Could not load random states" at INFO level), which silently breaks exact resume,
and it unpickles with ``weights_only=False``. Under FSDP (sharded parameters and optimizer
state) we do use it, for those two pieces only, and keep our own RNG and meta files.
"""

from __future__ import annotations

import errno
import json
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hyvl.config import to_dict
from hyvl.errors import CheckpointError, HyvlError
from hyvl.train.step import from_every_process, sum_counts

FORMAT = "hyvl-train-checkpoint-1"
META = "meta.json"
STATE = "state.safetensors"


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


def set_aside_incomplete(output_dir: str | Path) -> list[tuple[Path, Path]]:
    """Move ``step_*`` folders without meta.json to ``incomplete-step_*``; returns the moves.

    hyvl renames a checkpoint into place only after its meta.json is written, so such a folder
    was damaged or made by hand: it is not used, and moved so that the checkpoint of the same
    step written later cannot replace it (it may hold something worth a look).
    """
    root = checkpoint_root(output_dir)
    moved = []
    if not root.is_dir():
        return moved
    for path in sorted(root.iterdir()):
        if path.is_dir() and path.name.startswith("step_") and not (path / META).exists():
            aside = next(
                root / f"incomplete-{path.name}{f'-{i}' if i else ''}"
                for i in range(10**6)
                if not (root / f"incomplete-{path.name}{f'-{i}' if i else ''}").exists()
            )
            os.replace(path, aside)
            moved.append((path, aside))
    return moved


def prune(output_dir: str | Path, keep_last: int, keep_step: int | None = None) -> None:
    """Keep the newest ``keep_last`` complete checkpoints (all of them if keep_last <= 0), and
    the newest one at or before ``keep_step`` (a run's last healthy checkpoint)."""
    if keep_last <= 0:
        return
    found = list_checkpoints(output_dir)
    kept = [c for c in found if keep_step is not None and c[0] <= keep_step][-1:]
    for step, path in found[:-keep_last]:
        if (step, path) not in kept:
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
    output_dir: str | Path, state: Any, *, keep_last: int, keep_step: int | None = None
) -> Path:
    """Write the checkpoint of ``state.step`` atomically (collective: call on every process).

    ``state`` is the run's :class:`~hyvl.train.state.TrainState`. Returns the final path.
    ``keep_last`` / ``keep_step``: what :func:`prune` keeps.
    """
    final = step_dir(output_dir, state.step)
    tmp = final.parent / f".tmp-{final.name}"
    accelerator, main = state.accelerator, state.is_main

    def start() -> None:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)

    _agree(state, final, _attempt(start, final.parent) if main else None)

    def write_files() -> None:
        if state.sharded:
            # Sharded parameters and optimizer state: accelerate knows how to gather / shard them.
            accelerator.save_state(str(tmp / "accelerate"), safe_serialization=True)
        elif main:
            from safetensors.torch import save_model

            # save_model (not save_file) de-duplicates tied tensors instead of refusing them.
            save_model(state.train_module, str(tmp / STATE))
            torch.save(state.optimizer.state_dict(), tmp / "optimizer.pt")
        if main:
            torch.save(state.scheduler.state_dict(), tmp / "scheduler.pt")
            if accelerator.scaler is not None:
                torch.save(accelerator.scaler.state_dict(), tmp / "scaler.pt")
        rng_file = tmp / f"rng_{accelerator.process_index}.pt"
        torch.save(rng_state(), rng_file)
        _fsync_file(rng_file)

    error = _attempt(write_files, final.parent)
    # each process reads its own shards: its own stream position and skips
    processes = from_every_process(
        accelerator, {"data_position": state.data_position, "skipped": state.skipped}
    )
    _agree(state, final, error)

    def finish() -> None:
        meta = {
            "format": FORMAT,
            "step": state.step,
            "world_size": accelerator.num_processes,
            "data_position": state.data_position,
            "skipped": sum_counts([p["skipped"] for p in processes]),
            "processes": processes,
            "box_towers": state.box_towers,
            "config": to_dict(state.cfg),  # what resume compares the next settings against
            "runtime": getattr(state, "runtime", None) or None,  # device, precision, processes
            "files": _fsync_tree(tmp),
        }
        write_meta(tmp, meta)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        prune(output_dir, keep_last, keep_step)

    _agree(state, final, _attempt(finish, final.parent) if main else None)
    return final


# A writer that loses the errno (torch's zip writer: "file write failed", safetensors' own error
# type) failed for want of space when this little is left.
FULL_BELOW = 64 * 2**20


def disk_full(err: BaseException, directory: Path) -> bool:
    """True when ``err`` (raised by a writer into ``directory``) means the disk or quota is full."""
    if isinstance(err, OSError) and err.errno is not None:
        return err.errno in (errno.ENOSPC, errno.EDQUOT)
    text = str(err)
    if "No space left on device" in text or "Disk quota exceeded" in text:
        return True
    try:
        return shutil.disk_usage(directory).free < FULL_BELOW
    except OSError:
        return False


def _attempt(write, directory: Path) -> tuple[str, bool] | None:
    """Run ``write()``; a failure becomes (its message, disk full?) instead of an exception."""
    from safetensors import SafetensorError

    try:
        write()
    except (OSError, RuntimeError, SafetensorError) as err:
        first = str(err).splitlines()[0] if str(err) else ""
        return f"{type(err).__name__}: {first}", disk_full(err, directory)
    return None


def _agree(state: Any, final: Path, error: tuple[str, bool] | None) -> None:
    """Collective: if the write failed on any process, remove the partial checkpoint and raise
    the same one-line :class:`HyvlError` everywhere (instead of a hang or a raw error)."""
    accelerator = state.accelerator
    tmp = final.parent / f".tmp-{final.name}"
    errors = [e for e in from_every_process(accelerator, error) if e]
    if not errors:
        return
    message, full = errors[0]
    if state.is_main:
        shutil.rmtree(tmp, ignore_errors=True)  # now, not at the next start: it holds space
    accelerator.wait_for_everyone()
    previous = latest_checkpoint(final.parent.parent)
    kept = f"{previous[1]} (step {previous[0]}) is intact" if previous else "there is none yet"
    cause = "no space left on device" if full else message
    raise HyvlError(
        f"{final.parent}: cannot write the checkpoint of step {state.step}: {cause}; the "
        f"partial write was removed and the previous checkpoint {kept}"
        + ("; free some space and rerun the same command to continue" if full else "")
    )


def write_meta(directory: Path, meta: dict) -> None:
    """meta.json, the file that makes a checkpoint complete: written last, fsynced."""
    path = directory / META
    with open(path, "w") as f:
        f.write(json.dumps(meta) + "\n")
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(directory)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def _fsync_tree(root: Path) -> dict[str, int]:
    """fsync every file under ``root`` (and its folders); returns {relative path: size}.

    torch.save / safetensors close their files without fsync: after a power cut the rename
    could be on disk before the data. The sizes let resume spot a file cut short later.
    """
    sizes = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            _fsync_file(path)
            sizes[str(path.relative_to(root))] = path.stat().st_size
        else:
            _fsync_dir(path)
    _fsync_dir(root)
    return sizes


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
    for name, size in meta.get("files", {}).items():
        file = path / name
        actual = file.stat().st_size if file.is_file() else None
        if actual != size:
            raise CheckpointError(
                f"{str(file)!r}: {'missing' if actual is None else f'{actual} bytes'}, "
                f"the checkpoint wrote {size}"
            )
    return meta


def read_checkpoint(path: str | Path, state: Any) -> dict:
    """Read and check every file of a checkpoint for this process, restoring nothing yet.

    Returns ``{"meta", "weights", "optimizer", "scheduler", "scaler", "rng"}`` (FSDP: no
    weights / optimizer, accelerate reads its shards in :func:`apply_checkpoint`).
    """
    path = Path(path)
    meta = read_meta(path)
    accelerator = state.accelerator
    scaler_file = path / "scaler.pt"
    rng_file = path / f"rng_{accelerator.process_index}.pt"
    # exact replay needs each process's own streams; with another world size, reseed
    meta["rng_restored"] = meta.get("world_size") == accelerator.num_processes
    pieces = {
        "meta": meta,
        "scheduler": _torch_load(path / "scheduler.pt"),
        "scaler": _torch_load(scaler_file) if scaler_file.is_file() else None,
        "rng": _torch_load(rng_file) if meta["rng_restored"] else None,
        "weights": None,
        "optimizer": None,
    }
    if not state.sharded:
        pieces["weights"], pieces["optimizer"] = _read_weights(path, state.train_module)
    return pieces


def apply_checkpoint(path: str | Path, pieces: dict, state: Any) -> dict:
    """Restore what :func:`read_checkpoint` read into ``state``; returns the meta."""
    accelerator, meta = state.accelerator, pieces["meta"]
    configured = configured_hyperparameters(state.optimizer)
    if state.sharded:
        accelerator.load_state(str(Path(path) / "accelerate"))
    else:
        state.train_module.load_state_dict(pieces["weights"], strict=False)
        state.optimizer.load_state_dict(pieces["optimizer"])
    state.scheduler.load_state_dict(pieces["scheduler"])
    apply_hyperparameters(state.optimizer, state.scheduler, configured)
    if accelerator.scaler is not None and pieces["scaler"] is not None:
        accelerator.scaler.load_state_dict(pieces["scaler"])
    if pieces["rng"] is not None:
        set_rng_state(pieces["rng"])
    state.step = int(meta["step"])
    # the arrangement the steps so far used (train.box_towers=auto resumes with it); a
    # checkpoint from before it was recorded ran the default of then, fused
    state.box_towers = meta.get("box_towers") or "fused"
    processes = meta.get("processes")
    if meta["rng_restored"] and processes and len(processes) == accelerator.num_processes:
        mine = processes[accelerator.process_index]
        state.data_position, state.skipped = int(mine["data_position"]), dict(mine["skipped"])
    else:  # another world size (or an older checkpoint): the main process carries the totals
        state.data_position = int(meta.get("data_position", meta["step"]))
        state.skipped = dict(meta.get("skipped", {})) if state.is_main else {}
    return meta


# What the run's config sets in each AdamW group (torch restores the checkpoint's values).
HYPERPARAMETERS = ("initial_lr", "weight_decay", "betas", "eps")


def configured_hyperparameters(optimizer: Any) -> list[dict]:
    """Each group's lr / weight decay / betas / eps as the current config built them."""
    return [
        {k: group[k] for k in HYPERPARAMETERS if k in group} for group in optimizer.param_groups
    ]


def apply_hyperparameters(optimizer: Any, scheduler: Any, configured: list[dict]) -> None:
    """Put the config's hyperparameters back after a checkpoint's optimizer state was loaded.

    ``optimizer.load_state_dict`` restores the groups' lr, weight decay and betas and the
    scheduler's ``base_lrs`` from the checkpoint, so ``train.lr=...`` on a resume (with
    ``train.allow_config_change``) would be recorded and silently not applied. The lr of the
    resumed step is the schedule's (``base_lr * factor(step)``, the expression LambdaLR uses):
    unchanged settings give back the same bits.
    """
    for group, values in zip(optimizer.param_groups, configured, strict=True):
        group.update(values)
    scheduler.base_lrs = [group["initial_lr"] for group in optimizer.param_groups]
    step = scheduler.last_epoch
    for group, base, factor in zip(
        optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True
    ):
        group["lr"] = base * factor(step)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


def load_checkpoint(path: str | Path, state: Any) -> dict:
    """Restore everything :func:`save_checkpoint` wrote into ``state``; returns meta.

    Every file is read and checked before anything is restored, so a bad file leaves
    ``state`` untouched. When the world size changed since the checkpoint the caller
    reseeds (``meta["rng_restored"]`` is False): exact replay is then impossible.
    """
    return apply_checkpoint(path, read_checkpoint(path, state), state)


def _read_weights(path: Path, module: torch.nn.Module) -> tuple[dict, dict]:
    """(module state, optimizer state) of a checkpoint, checked against ``module``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    state_file = path / STATE
    if not state_file.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} has no {STATE}")
    try:
        weights = load_file(str(state_file))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {str(state_file)!r}: {err}") from err
    expected = module.state_dict()
    # save_model drops one name of each tied pair: a missing key is fine if its tensor's
    # storage is shared with a saved one (the same rule safetensors' load_model applies).
    missing = [k for k in expected if k not in weights and not _tied(k, expected, weights)]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        raise CheckpointError(
            f"{str(state_file)!r} does not match this model/objective config: "
            f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    return weights, _torch_load(path / "optimizer.pt")


def _tied(name: str, expected: dict, saved: dict) -> bool:
    ptr = expected[name].untyped_storage().data_ptr()
    return any(
        k in saved and expected[k].untyped_storage().data_ptr() == ptr
        for k in expected
        if k != name
    )


def resume(output_dir: str | Path, state: Any) -> dict | None:
    """Load the newest readable checkpoint of ``output_dir`` into ``state`` (None: none).

    A complete checkpoint that cannot be read (on any process) is renamed
    ``corrupt-step_XXXXXXX`` (kept, not deleted: it may be worth a look) and the next older
    one is tried, with a message. Collective: call on every process.
    """
    accelerator = state.accelerator
    for _, path in reversed(list_checkpoints(output_dir)):
        error = None
        try:
            pieces = read_checkpoint(path, state)
        except CheckpointError as err:
            error = str(err)
        bad = torch.tensor([float(error is not None)], device=accelerator.device)
        if accelerator.num_processes > 1:
            bad = accelerator.reduce(bad, reduction="sum")
        if bad.item() == 0:
            return apply_checkpoint(path, pieces, state)
        aside = path.parent / f"corrupt-{path.name}"
        accelerator.wait_for_everyone()
        if state.is_main:
            shutil.rmtree(aside, ignore_errors=True)
            os.replace(path, aside)
            print(
                f"hyvl train: checkpoint {path} is unreadable "
                f"({error or 'on another process'}); moved to {aside.name}, "
                "falling back to the previous complete checkpoint",
                file=sys.stderr,
            )
        accelerator.wait_for_everyone()
    return None
