"""One optimizer step's loss and gradients: the train module and GradCache accumulation.

Read with :mod:`hyvl.train.loop` (the run: build, resume, loop, logging, export). This module
knows nothing about files, schedules or logging; it turns a batch into gradients in ``.grad``
and returns the loss terms plus detached per-step embeddings (for health checks).
"""

from __future__ import annotations

from collections import Counter
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hyvl.models.embeddings import Embeddings

EMB_FIELDS = ("image", "text", "box_image", "box_text")
# The model's learnable scalars that enter the loss directly (not through an embedding row).
# Written once: GradCache adds their gradient on the last micro-batch, the loop logs them.
SCALARS = ("curv", "logit_scale")


class TrainModule(nn.Module):
    """Model + objective as one module: one DDP/FSDP wrapper, one parameter list.

    ``forward(images, tokens, box_images, box_tokens, box_towers=...)`` returns
    ``(losses, emb)``: the objective's loss dict and the model's :class:`Embeddings`.
    With ``cached_grads`` (GradCache second pass) the loss is the surrogate scalar
    ``sum(<embedding, dLoss/dembedding>)`` whose backward gives exactly the gradient of the
    full-batch loss for this micro-batch's rows.
    """

    def __init__(self, model: nn.Module, objective: nn.Module):
        super().__init__()
        self.model = model
        self.objective = objective

    @torch.no_grad()
    def clamp_scalars_(self) -> None:
        """The model's bounded scalars and the objective's (``objective.learn_entail_weight``)
        clamped in place, after each optimizer step (``HyvlModel.clamp_scalars_`` says why
        there). An objective without a ``clamp_scalars_`` (one of the user's own, a wrapper)
        has nothing clamped."""
        self.model.clamp_scalars_()
        clamp = getattr(self.objective, "clamp_scalars_", None)
        if clamp is not None:
            clamp()

    def objective_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters of the loss itself (a SigLIP bias); empty for most recipes."""
        return [p for p in self.objective.parameters() if p.requires_grad]

    def forward(
        self,
        images,
        tokens,
        box_images=None,
        box_tokens=None,
        box_towers: str = "fused",
        cached_grads: dict | None = None,
    ):
        emb = self.model(
            images, tokens, box_images=box_images, box_tokens=box_tokens, box_towers=box_towers
        )
        if cached_grads is None:
            return self.objective(emb), emb
        surrogate = torch.zeros((), device=images.device, dtype=torch.float32)
        # Scalars and objective parameters enter the loss directly; their gradient is passed
        # once (on the last micro-batch, the one that synchronises across processes).
        for name in (*EMB_FIELDS, *SCALARS):
            grad = cached_grads.get(name)
            if grad is not None and getattr(emb, name) is not None:
                surrogate = surrogate + (getattr(emb, name).float() * grad).sum()
        if "objective" in cached_grads:
            params = self.objective_parameters()
            for param, grad in zip(params, cached_grads["objective"], strict=True):
                if grad is not None:
                    surrogate = surrogate + (param * grad).sum()
        return {"loss": surrogate}, emb


@dataclass
class StepResult:
    """What one forward/backward produced.

    ``losses``: the loss and every term, mean over processes. ``finite``: False when the
    loss was non-finite on any process (no gradient was computed). ``embeddings``: this
    process's whole batch, detached fp32 (B, D) / (B*k, D) rows plus the scalars, for
    statistics (norms, spread) that cost nothing extra to compute from them.
    """

    losses: dict[str, float]
    finite: bool
    embeddings: Embeddings | None = field(default=None, repr=False)


def batch_tensors(batch: Any) -> tuple:
    """(images, tokens, box_images, box_tokens) of a :class:`~hyvl.data.batch.Batch`."""
    return batch.images, batch.tokens, batch.box_images, batch.box_tokens


def split_micro(tensors: tuple, parts: int) -> list[tuple]:
    """Split (images, tokens, box_images, box_tokens) into ``parts`` micro-batches.

    Box rows are sample-major (k per sample), so splitting them into the same number of
    equal chunks keeps each sample's boxes with it.
    """
    chunks = [t.chunk(parts) if t is not None else [None] * parts for t in tensors]
    return [tuple(c[i] for c in chunks) for i in range(parts)]


def all_finite(accelerator: Any, value: torch.Tensor) -> bool:
    """True when the loss is finite on EVERY process (all must skip together under DDP)."""
    bad = (~torch.isfinite(value.detach())).float().reshape(1)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    return bool(bad.item() == 0)


def from_every_process(accelerator: Any, value: Any) -> list:
    """``[value of process 0, value of process 1, ...]`` on every process (collective).

    For small plain values (counts by reason, positions): accelerate's ``gather_object``, since
    the keys differ between processes and a tensor reduction needs one fixed key set.
    """
    if accelerator.num_processes == 1:
        return [value]
    from accelerate.utils import gather_object

    return gather_object([value])


def sum_counts(per_process: list[dict[str, int]]) -> dict[str, int]:
    """``{reason: count}`` dicts added up (each process reads, and skips in, its own shards)."""
    total: Counter = Counter()
    for counts in per_process:
        total.update(counts)
    return dict(total)


def mean_over_processes(accelerator: Any, losses: dict[str, torch.Tensor]) -> dict[str, float]:
    names = sorted(losses)
    values = torch.stack([losses[n].detach().float().reshape(()) for n in names])
    if accelerator.num_processes > 1:
        values = accelerator.reduce(values, reduction="mean")
    return {n: float(v) for n, v in zip(names, values.tolist(), strict=True)}


def detached(emb: Embeddings) -> Embeddings:
    """A copy of ``emb`` cut from the graph, in fp32."""

    def cut(t):
        return None if t is None else t.detach().float()

    out = Embeddings(**{name: cut(getattr(emb, name)) for name in (*EMB_FIELDS, *SCALARS)})
    out.box_text_ids = emb.box_text_ids
    return out


def forward_backward(
    accelerator: Any,
    module: nn.Module,
    batch: Any,
    *,
    grad_accum: int = 1,
    box_towers: str = "fused",
) -> StepResult:
    """Loss and gradients of one (per-process) batch; gradients are left in ``.grad``.

    ``module`` is the :class:`TrainModule` as ``accelerator.prepare`` returned it (DDP/FSDP
    wrapped or not). grad_accum == 1: one forward, then backward. grad_accum > 1 (GradCache):
    (1) embed every micro-batch without autograd, (2) compute the loss of the whole batch on
    those cached embeddings and its gradient with respect to them, (3) re-embed each
    micro-batch with autograd and backpropagate the cached gradient. The result equals the
    full-batch gradient (dropout aside: towers must be deterministic between the two
    passes, as in open_clip). Only the last micro-batch synchronises.
    """
    tensors = batch_tensors(batch)
    if grad_accum == 1:
        losses, emb = module(*tensors, box_towers=box_towers)
        finite = all_finite(accelerator, losses["loss"])
        if finite:
            accelerator.backward(losses["loss"])
        return StepResult(mean_over_processes(accelerator, losses), finite, detached(emb))

    inner = accelerator.unwrap_model(module, keep_torch_compile=False)
    micro = split_micro(tensors, grad_accum)
    with torch.no_grad(), accelerator.autocast():
        embs = [inner.model(*m, box_towers=box_towers) for m in micro]
    leaves: dict[str, torch.Tensor] = {}
    for name in EMB_FIELDS:
        if getattr(embs[0], name) is not None:
            leaves[name] = torch.cat([getattr(e, name).float() for e in embs]).requires_grad_(True)
    for name in SCALARS:
        if getattr(embs[0], name) is not None:
            leaves[name] = getattr(embs[0], name).detach().float().requires_grad_(True)
    full = Embeddings(**leaves)
    if embs[0].box_text_ids is not None:
        full.box_text_ids = torch.cat([e.box_text_ids for e in embs])
    losses = inner.objective(full)
    finite = all_finite(accelerator, losses["loss"])
    if finite:
        obj_params = inner.objective_parameters()
        grads = torch.autograd.grad(
            losses["loss"], [*leaves.values(), *obj_params], allow_unused=True
        )
        leaf_grads = dict(zip(leaves, grads[: len(leaves)], strict=True))
        sizes = {n: [getattr(e, n).shape[0] for e in embs] for n in EMB_FIELDS if n in leaf_grads}
        split_grads = {n: leaf_grads[n].split(sizes[n]) for n in sizes}
        for i, m in enumerate(micro):
            last = i == len(micro) - 1
            cached = {n: split_grads[n][i] for n in split_grads}
            if last:
                cached.update({n: leaf_grads[n] for n in SCALARS if n in leaf_grads})
                cached["objective"] = list(grads[len(leaves) :])
            with nullcontext() if last else accelerator.no_sync(module):
                surrogate, _ = module(*m, box_towers=box_towers, cached_grads=cached)
                accelerator.backward(surrogate["loss"])
    return StepResult(mean_over_processes(accelerator, losses), finite, detached(full))
