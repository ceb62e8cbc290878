"""Gathering embeddings across processes with gradients, for any local batch sizes.

Contrastive losses want every process's samples as negatives. ``accelerator.gather`` and
``torch.distributed.all_gather`` carry no gradient; ``torch.distributed.nn.functional.all_gather``
does, and its backward SUMS each gathered slice's gradient over all ranks (a reduce-scatter; on
gloo an all-to-all plus a sum) and hands the sum to the rank that owns the slice.

Gradient scaling, stated once (``tests/test_distributed.py`` proves it against one process on
the concatenated batch, including unequal local batch sizes): rank ``r`` computes its loss over
its own ``B_r`` rows against the gathered columns as

    loss_r = (W / B) * sum over its rows of the per-row loss        (B = sum_r B_r, W = world size)

The gather's backward hands rank ``r`` the gradient of ``sum_s loss_s`` for its own embeddings,
and DDP then averages parameter gradients over the ``W`` ranks, so every rank ends up with the
gradient of ``(1/W) sum_s loss_s = (1/B) sum over all B rows``: the loss of one process on the
whole batch. With equal local sizes ``W / B = 1 / B_r``, i.e. the plain local mean (open_clip's
and MERU's convention). Averaging any logged term over ranks likewise gives its global value.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor


def _initialized() -> bool:
    return torch.distributed.is_available() and torch.distributed.is_initialized()


def world_size() -> int:
    """Number of processes in the default group (1 without a process group)."""
    return torch.distributed.get_world_size() if _initialized() else 1


def rank() -> int:
    """This process's rank in the default group (0 without a process group)."""
    return torch.distributed.get_rank() if _initialized() else 0


def gather_sizes(n: int, device: torch.device | str = "cpu") -> list[int]:
    """Every rank's ``n`` (e.g. its local batch size), in rank order. ``[n]`` for one process.

    ``device`` must suit the backend (a CUDA device for NCCL); callers pass their tensors' device.
    """
    if world_size() == 1:
        return [int(n)]
    local = torch.tensor([int(n)], dtype=torch.long, device=device)
    sizes = [torch.zeros_like(local) for _ in range(world_size())]
    torch.distributed.all_gather(sizes, local)
    return [int(s.item()) for s in sizes]


def _padded_to_largest(x: Tensor) -> tuple[Tensor, list[int]]:
    """``x`` padded with zero rows to the largest rank's row count, and every rank's count.

    Collectives need equal shapes on every rank; zero rows get zero gradient back and are
    stripped after the gather.
    """
    sizes = gather_sizes(x.shape[0], device=x.device)
    largest = max(sizes)
    if x.shape[0] < largest:
        x = torch.cat([x, x.new_zeros((largest - x.shape[0], *x.shape[1:]))])
    return x, sizes


def gather_with_grad(x: Tensor) -> tuple[Tensor, int]:
    """Concatenate ``x`` from all ranks along dim 0, keeping gradients to every rank's rows.

    Args:
        x: ``(B_r, ...)`` this rank's rows; ``B_r`` may differ between ranks (sizes are gathered
            first, rows padded to the largest, the padding stripped after the gather).

    Returns:
        ``(x_all, offset)``: ``x_all`` is ``(sum_r B_r, ...)`` in rank order and ``offset`` is
        the index of this rank's first row in it, so local row ``i`` is global row
        ``offset + i``. The local slice of ``x_all`` is ``x`` itself (not a communicated copy),
        so this rank's own loss reaches ``x`` directly. With one process (or no process group)
        returns ``(x, 0)`` without any communication.

    Backward: rank ``r`` receives, for its rows, the SUM over all ranks of the gradient of their
    losses (see the module docstring for how that combines with DDP's averaging).
    """
    world = world_size()
    if world == 1:
        return x, 0
    # Imported here: torch.distributed.nn pulls in RPC pieces we don't need without a group.
    from torch.distributed.nn.functional import all_gather

    me = rank()
    padded, sizes = _padded_to_largest(x)
    with warnings.catch_warnings():
        # torch 2.14 marks it deprecated in favour of the private _functional_collectives; it is
        # still the public autograd all_gather and the one whose backward works on gloo too.
        warnings.filterwarnings(
            "ignore", message=".*all_gather is deprecated", category=FutureWarning
        )
        parts = list(all_gather(padded))
    parts = [part[:size] for part, size in zip(parts, sizes, strict=True)]
    parts[me] = x
    return torch.cat(parts), sum(sizes[:me])


def gather_no_grad(x: Tensor) -> Tensor:
    """Concatenate ``x`` (any dtype, no autograd) from all ranks along dim 0 in rank order;
    ``B_r`` may differ between ranks. ``x`` itself with one process."""
    world = world_size()
    if world == 1:
        return x
    padded, sizes = _padded_to_largest(x)
    parts = [torch.empty_like(padded) for _ in range(world)]
    torch.distributed.all_gather(parts, padded.contiguous())
    return torch.cat([part[:size] for part, size in zip(parts, sizes, strict=True)])
