"""Embedding datasets once, batched, with a progress bar; scores in fp32.

Several processes (``torchrun --nproc_per_node N hyvl eval ...``, or ``accelerate launch``)
share the work through a :class:`Shard`: process ``r`` of ``N`` embeds the whole batches
``i`` with ``i % N == r``, exactly the batches one process would have made, and the rows are
gathered back into one-process order. Every row therefore comes out of the same forward
pass on the same batch as in a one-process run, so the metrics are identical, not just
close.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

# Row keys are batch_index * _ROWS + row_in_batch, so sorting them restores the
# one-process order. A batch of more than 2**31 rows is not a batch.
_ROWS = 1 << 31


@dataclass(frozen=True)
class Shard:
    """This process's share of an evaluation: the whole batches ``i`` with ``i % world == rank``.

    ``Shard()`` is one process doing everything. :meth:`from_accelerate` reads the rank and
    world size of the processes that ``torchrun`` / ``accelerate launch`` started (the process
    group is created by accelerate's ``PartialState``).
    """

    rank: int = 0
    world: int = 1

    @classmethod
    def from_accelerate(cls, state=None) -> Shard:
        if state is None:
            from accelerate import PartialState

            state = PartialState()
        return cls(state.process_index, state.num_processes)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def mine(self, index: int) -> bool:
        return index % self.world == self.rank

    def batches(self, dataset, batch_size: int, num_workers: int = 0) -> Iterator[tuple[int, Any]]:
        """``(batch_index, batch)`` of this process's batches of a map-style dataset.

        The batches are the one-process ``DataLoader(dataset, batch_size)`` batches; the other
        processes' batches are never loaded.
        """
        return self.share(dataset, batch_size, num_workers)[0]

    def share(self, dataset, batch_size: int, num_workers: int = 0):
        """(:meth:`batches`, how many there are) for a progress bar."""
        n = len(dataset)
        mine = [i for i in range((n + batch_size - 1) // batch_size) if self.mine(i)]
        sampler = [list(range(i * batch_size, min(n, (i + 1) * batch_size))) for i in mine]
        loader = torch.utils.data.DataLoader(
            dataset, batch_sampler=sampler, num_workers=num_workers
        )
        return zip(mine, loader, strict=True), len(mine)

    def gather(
        self, parts: list[tuple[int, torch.Tensor, torch.Tensor | None]]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Rows of every process in one-process order.

        ``parts``: this process's ``(batch_index, rows (b, D), labels (b,) or None)``. Returns
        ``(rows (N, D) fp32 on the CPU, labels (N,) or None)``, the same on every process.
        """
        dim = parts[0][1].shape[1] if parts else 0
        rows = torch.cat([r.float().cpu() for _, r, _ in parts]) if parts else torch.zeros(0, dim)
        keys = torch.cat(
            [i * _ROWS + torch.arange(r.shape[0]) for i, r, _ in parts]
            or [torch.zeros(0, dtype=torch.long)]
        )
        labelled = [torch.as_tensor(y).long().cpu() for _, _, y in parts if y is not None]
        has_labels = len(labelled) == len(parts)  # (vacuously true for a process with no rows)
        labels = torch.cat(labelled or [torch.zeros(0, dtype=torch.long)]) if has_labels else None
        if self.world == 1:
            return rows, (labels if parts else None)
        return self._gather_across(rows, keys, labels)

    def gather_json(self, parts: list[tuple[int, Any]]) -> list[Any]:
        """Values of every process, ordered by batch index: ``parts`` holds this process's
        ``(batch_index, value)`` with JSON-serialisable values (keys, captions, ...).

        The values travel as UTF-8 JSON in a uint8 tensor through the same gather as the
        embeddings: nothing is pickled.
        """
        if self.world == 1:  # in the order given, like gather()
            return [value for _, value in parts]
        from accelerate import PartialState
        from accelerate.utils import gather, pad_across_processes

        device = PartialState().device
        payload = torch.tensor(list(json.dumps(parts).encode()), dtype=torch.uint8)
        sizes = gather(torch.tensor([payload.numel()], device=device)).cpu().tolist()
        flat = gather(pad_across_processes(payload.to(device), dim=0)).cpu()
        width = max(sizes)
        merged = []
        for rank, size in enumerate(sizes):
            chunk = flat[rank * width : rank * width + size]
            merged += json.loads(bytes(chunk.tolist()).decode())
        return [value for _, value in sorted(merged, key=lambda p: p[0])]

    def _gather_across(self, rows, keys, labels):
        # accelerate's gather needs equal shapes: every process pads to the longest share
        # (padding rows get key -1 and are dropped), on the process group's device (NCCL
        # only moves CUDA tensors).
        from accelerate import PartialState
        from accelerate.utils import gather, pad_across_processes

        device = PartialState().device

        def everywhere(t: torch.Tensor, pad: int = 0) -> torch.Tensor:
            return gather(pad_across_processes(t.to(device), dim=0, pad_index=pad)).cpu()

        dim = int(everywhere(torch.tensor([rows.shape[1]])).max())
        all_labelled = bool(everywhere(torch.tensor([int(labels is not None)])).all())
        keys = everywhere(keys, pad=-1)
        rows = everywhere(rows if rows.shape[0] else torch.zeros(0, dim))
        order = torch.argsort(keys[keys >= 0])
        rows = rows[keys >= 0][order]
        if not all_labelled:
            return rows, None
        labels = everywhere(labels)[keys >= 0][order]
        return (rows, labels) if rows.shape[0] else (rows, None)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def encoding(model, precision: str = "fp32"):
    """Context for the encoder calls: autocast to bf16 / fp16, or nothing for fp32.

    Only the towers run in the lower precision: the lift (alpha, ``exp_map0``) is an fp32
    island, and scores are computed outside this context on fp32 embeddings, so a bf16
    evaluation never ranks by bf16 distances (open_clip's ``--precision amp`` likewise).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(next(model.parameters()).device.type, dtype=dtype)


def progress(items: Iterable, total: int | None, desc: str, shard: Shard):
    from hyvl.progress import progress_bar

    return progress_bar(items, total=total, desc=desc, leave=False, disable=not shard.is_main)


@torch.no_grad()
def embed_images(
    model,
    batches: Iterable,
    total: int | None = None,
    desc: str = "images",
    shard: Shard | None = None,
    precision: str = "fp32",
):
    """Embed batches of ``(images, labels)`` or image tensors -> ((N, D) fp32, labels|None).

    Without ``shard``, ``batches`` yields every batch. With one, it yields ``(batch_index,
    batch)`` pairs (e.g. :meth:`Shard.batches`; pairs of other processes are skipped) and
    the result is gathered over the processes, in batch-index order, on every process.
    """
    indexed = enumerate(batches) if shard is None else batches
    shard = shard or Shard()
    device = next(model.parameters()).device
    parts = []
    for index, item in progress(indexed, total, f"embedding {desc}", shard):
        if not shard.mine(index):
            continue
        images, y = item if isinstance(item, (tuple, list)) else (item, None)
        with encoding(model, precision):
            parts.append((index, model.encode_image(images.to(device)).float().cpu(), y))
    return shard.gather(parts)


@torch.no_grad()
def embed_texts(
    model,
    tokenizer,
    texts: list[str],
    batch_size: int = 256,
    desc: str = "texts",
    shard: Shard | None = None,
    precision: str = "fp32",
):
    """(N, D) fp32 embeddings of ``texts`` (batches split over ``shard``'s processes)."""
    shard = shard or Shard()
    device = next(model.parameters()).device
    starts = range(0, len(texts), batch_size)
    mine = [(i, s) for i, s in enumerate(starts) if shard.mine(i)]
    parts = []
    for i, s in progress(mine, len(mine), f"embedding {desc}", shard):
        tokens = tokenizer(texts[s : s + batch_size]).to(device)
        with encoding(model, precision):
            parts.append((i, model.encode_text(tokens).float().cpu(), None))
    return shard.gather(parts)[0]


def similarity(model, queries: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """(Q, N) scores of images (queries) against texts (items), higher = closer: -Lorentz
    distance, cosine for CLIP, ATMG's angle at the image for ``model.score: atmg_angle``."""
    return model.pairwise_score(queries, items)
