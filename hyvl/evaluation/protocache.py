"""The suite's class-prototype cache: one safetensors file per (weights, dataset, prompt set).

Several suite runs may share a cache directory (two jobs on one machine, nodes on a shared
file system) and each torchrun job writes from its main process. An entry is therefore
written to a private temporary file and renamed into place (:func:`hyvl.io.atomic_path`): a
reader sees the old file, the new one or none, never half of one. An entry that cannot be read
anyway (a copy cut short, a disk error, another program) is recomputed and replaced, with a
one-line warning, never an error. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from hyvl.evaluation.embed import Shard
from hyvl.evaluation.zeroshot import zeroshot_classifier

log = logging.getLogger(__name__)


def model_hash(model) -> str:
    """Content hash of the weights (names, dtypes, shapes and bytes), for the prototype cache:
    the same weights loaded from any path share their cache entries."""
    h = hashlib.blake2b(digest_size=16)
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def entry_path(
    cache_dir: str | Path, key: str, name: str, classnames, templates, precision: str
) -> Path:
    """``cache_dir/KEY-NAME-PROMPTS.safetensors``: ``key`` is the :func:`model_hash`,
    PROMPTS a hash of the class names, prompts and precision."""
    prompts = hashlib.blake2b(
        json.dumps([list(classnames), list(templates), precision]).encode(), digest_size=8
    ).hexdigest()
    return Path(cache_dir) / f"{key}-{name}-{prompts}.safetensors"


def read_entry(path: Path, num_classes: int) -> torch.Tensor | None:
    """The (C, D) prototypes stored at ``path``, or None when there are none to use (absent:
    silently; unreadable or of the wrong shape: with a one-line warning)."""
    from safetensors.torch import load_file

    try:
        protos = load_file(str(path))["prototypes"]
        if protos.ndim != 2 or protos.shape[0] != num_classes:
            raise ValueError(f"shape {tuple(protos.shape)}, expected ({num_classes}, D)")
        return protos
    except FileNotFoundError:
        return None
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error types
        detail = str(err).splitlines()[0] if str(err) else ""
        log.warning(
            "%s: unreadable prototype cache entry (%s: %s); recomputing it",
            path,
            type(err).__name__,
            detail,
        )
        return None


def write_entry(path: Path, protos: torch.Tensor, name: str) -> None:
    """Store ``protos`` at ``path`` atomically; a cache that cannot be written (read-only,
    full disk) is a warning: the prototypes are only a cache."""
    from safetensors.torch import save_file

    from hyvl.io import atomic_path

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file(
                {"prototypes": protos.float().cpu().contiguous()},
                str(tmp),
                metadata={"dataset": name},
            )
    except Exception as err:  # noqa: BLE001 - OSError, HyvlError (full disk), SafetensorError
        log.warning("%s: prototype cache not written (%s)", path, str(err).splitlines()[0])


def prototypes(
    model,
    tokenizer,
    name: str,
    classnames: list[str],
    templates: list[str],
    *,
    key: str,
    cache_dir: str | Path | None,
    shard: Shard,
    precision: str = "fp32",
) -> torch.Tensor:
    """(C, D) class prototypes, read from ``cache_dir`` when this checkpoint (``key``: its
    :func:`model_hash`) already made them from the same class names, prompts and precision,
    else computed (shared by ``shard``'s processes) and written there by the main process.

    With several processes the cache is used only when every process could read it: one
    that could not would otherwise compute alone, waiting for the others in the gather."""
    path = None
    if cache_dir is not None:
        path = entry_path(cache_dir, key, name, classnames, templates, precision)
    protos = read_entry(path, len(classnames)) if path is not None else None
    if shard.world > 1 and path is not None:
        hits = shard.gather_json([(shard.rank, protos is not None)])
        protos = protos if all(hits) else None
    if protos is not None:
        return protos
    protos = zeroshot_classifier(model, tokenizer, classnames, templates, shard, precision)
    if path is not None and shard.is_main:
        write_entry(path, protos, name)
    return protos
