"""Fine-tuning a pretrained model: adapters, frozen parameters, per-group learning rates.

- ``train.lora.rank > 0``: peft adapters on the towers (:mod:`hyvl.models.lora`);
- ``train.freeze``: parameters by name prefix (or ``towers``) take no gradient, until
  ``train.unfreeze_at`` if set (they are in the optimizer from the start, without state
  until their first gradient);
- ``train.lift_lr`` and ``train.layer_decay``: each parameter's share of the schedule's lr
  (:func:`lr_scale`), applied as AdamW parameter groups.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from hyvl.config import TrainConfig
from hyvl.errors import ConfigError
from hyvl.models.lora import BLOCK, TOWERS, add_adapters, block_count

# What comes before a tower's first block: patch / token embeddings, class token, positions.
EMBEDDINGS = (
    "visual.vit.patch_embed.", "visual.vit.cls_token", "visual.vit.reg_token",
    "visual.vit.pos_embed", "visual.vit.norm_pre.", "textual.transformer.token_embedding.",
    "textual.transformer.positional_embedding", "textual.transformer.embeddings.",
)  # fmt: skip


def prepare_model(model: nn.Module, tcfg: TrainConfig) -> nn.Module:
    """Adapters (train.lora) into ``model``, in place; the caller seeds torch before."""
    if tcfg.lora.rank > 0:
        add_adapters(model, tcfg.lora)
    return model


def freeze_prefixes(tcfg: TrainConfig) -> tuple[str, ...]:
    if tcfg.freeze == "towers":
        return tuple(t + "." for t in TOWERS)
    return tuple(tcfg.freeze)


def freeze(module: nn.Module, tcfg: TrainConfig, prefix: str = "model.") -> list[str]:
    """Stop the gradients of ``train.freeze``'s parameters (names of the model, without the
    train module's ``prefix``); returns the names frozen here. ConfigError for a prefix that
    names no parameter."""
    prefixes = freeze_prefixes(tcfg)
    if not prefixes:
        return []
    params = [(n[len(prefix) :], p) for n, p in module.named_parameters() if n.startswith(prefix)]
    unknown = [f for f in prefixes if not any(n.startswith(f) for n, _ in params)]
    if unknown:
        example = ", ".join(sorted({n.split(".")[0] + "." for n, _ in params}))
        raise ConfigError(
            f"train.freeze: {unknown} name no parameter of the model (names start with {example})"
        )
    frozen = []
    for name, param in params:
        if name.startswith(prefixes) and param.requires_grad:
            param.requires_grad_(False)
            frozen.append(prefix + name)
    return frozen


def unfreeze(module: nn.Module, names: list[str]) -> None:
    wanted = set(names)
    for name, param in module.named_parameters():
        if name in wanted:
            param.requires_grad_(True)


def lr_scale(name: str, tcfg: TrainConfig, blocks: dict[str, int]) -> float:
    """The multiple of train.lr that parameter ``name`` (of the train module) trains with.

    Outside the towers (projections, alphas, curvature, logit scale, the loss's own scalars):
    ``lift_lr / lr``. In a tower of n blocks with decay d: block i gets ``d^(n - i)``, the
    embeddings ``d^(n + 1)``, what follows the last block (final norm) 1.
    """
    name = name.removeprefix("model.")
    tower = next((t for t in TOWERS if name.startswith(t + ".")), None)
    if tower is None:
        return (tcfg.lift_lr or tcfg.lr) / tcfg.lr
    if tcfg.layer_decay == 1.0:
        return 1.0
    n = blocks.get(tower, 0)
    match = BLOCK.search(name)
    if match:
        depth = n - int(match.group(1))
    elif name.startswith(EMBEDDINGS):
        depth = n + 1
    else:
        depth = 0
    return tcfg.layer_decay**depth


def tower_blocks(module: nn.Module) -> dict[str, int]:
    names = [n.removeprefix("model.") for n, _ in module.named_parameters()]
    return {t: block_count([n for n in names if n.startswith(t + ".")]) for t in TOWERS}


def parameter_report(module: nn.Module, optimizer: Any) -> dict[str, int]:
    """``{"trainable_params", "total_params", "optimizer_state_bytes"}``.

    The optimizer state is what AdamW allocates at its first step for each parameter it
    holds: exp_avg and exp_avg_sq of the parameter's shape and dtype, and a 4-byte step.
    """
    seen, trainable, total = set(), 0, 0
    for param in module.parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        trainable += param.numel() if param.requires_grad else 0
    held = [p for g in optimizer.param_groups for p in g["params"]]
    state = sum(2 * p.numel() * p.element_size() + 4 for p in held)
    return {"trainable_params": trainable, "total_params": total, "optimizer_state_bytes": state}


def describe(report: dict[str, int], tcfg: TrainConfig) -> str:
    """``hyvl train: 12,345 of 1,234,567 parameters train (1.00%, LoRA rank 8); optimizer
    state 96.6 KiB``."""
    share = report["trainable_params"] / max(report["total_params"], 1)
    how = []
    if tcfg.lora.rank:
        how.append(f"LoRA rank {tcfg.lora.rank}")
    if tcfg.freeze:
        until = f" until step {tcfg.unfreeze_at}" if tcfg.unfreeze_at else ""
        how.append(f"frozen: {tcfg.freeze}{until}")
    size = report["optimizer_state_bytes"]
    unit = next(u for u, limit in (("B", 2**10), ("KiB", 2**20), ("MiB", 2**30), ("GiB", 0))
                if size < limit or not limit)  # fmt: skip
    scale = {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30}[unit]
    return (
        f"hyvl train: {report['trainable_params']:,} of {report['total_params']:,} parameters "
        f"train ({100 * share:.2f}%{', ' + '; '.join(how) if how else ''}); optimizer state "
        f"{size / scale:.1f} {unit}"
    )
