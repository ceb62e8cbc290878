"""Low-rank adapters on the towers (``train.lora``), through peft, and folding them back in.

peft's ``LoraModel`` injects its LoRA layers into the model in place: the model stays a
:class:`~hyvl.models.model.HyvlModel` (same forward, same checkpoints), an adapted linear
``...attn.qkv`` becomes ``...attn.qkv.base_layer`` plus ``...attn.qkv.lora_A.default`` /
``lora_B.default``. peft freezes every other parameter; hyvl gives the lift (projections,
alphas, curvature, logit scale) its trainability back: it is new and must learn.
:func:`merged` folds the adapters into the weights (peft's ``merge_and_unload``) and returns a
plain model that saves and loads without peft.
"""

from __future__ import annotations

import copy
import re

import torch
from torch import nn

from hyvl.config import LoraConfig
from hyvl.errors import ConfigError

TOWERS = ("visual", "textual")
# The block index in a tower's module names: timm ``blocks.N``, open_clip ``resblocks.N``,
# Hugging Face ``layer.N``.
# What peft can adapt here: linears, and open_clip's attention (nn.MultiheadAttention, whose
# q/k/v and output weights its forward reads directly, past any wrapper of its out_proj).
ADAPTABLE = (nn.Linear, nn.MultiheadAttention)
BLOCK = re.compile(r"\.(?:blocks|resblocks|layer)\.(\d+)\.")


def _peft():
    try:
        import peft
    except ImportError as err:
        raise ConfigError(
            "train.lora.rank > 0 needs peft: pip install 'hyvl[lora]' (or pip install peft)"
        ) from err
    return peft


def block_count(names: list[str]) -> int:
    """Blocks of a tower, from its module or parameter names."""
    found = [int(m.group(1)) for n in names if (m := BLOCK.search(n + "."))]
    return max(found) + 1 if found else 0


def target_names(model: nn.Module, cfg: LoraConfig) -> list[str]:
    """Full names of the linears ``cfg`` adapts: in ``cfg.towers``, in ``cfg.blocks``, whose
    name is a target or ends with ``.TARGET``. ConfigError when none does."""
    linears = [n for n, m in model.named_modules() if isinstance(m, ADAPTABLE)]
    chosen = []
    for tower in cfg.towers:
        inside = [n for n in linears if n.startswith(tower + ".")]
        blocks = None
        if cfg.blocks is not None:
            count = block_count(inside)
            bad = [b for b in cfg.blocks if not -count <= b < count]
            if bad:
                raise ConfigError(
                    f"train.lora.blocks={cfg.blocks}: the {tower} tower has {count} blocks "
                    f"(indices 0..{count - 1} or -{count}..-1), not {bad}"
                )
            blocks = {b % count for b in cfg.blocks}
        for name in inside:
            if not any(name == t or name.endswith("." + t) for t in cfg.targets):
                continue
            match = BLOCK.search(name + ".")
            if blocks is not None and (match is None or int(match.group(1)) not in blocks):
                continue
            chosen.append(name)
    if not chosen:
        example = next((n for n in linears if BLOCK.search(n + ".")), "none")
        raise ConfigError(
            f"train.lora.targets={cfg.targets} matched no linear layer of the towers "
            f"{cfg.towers} (blocks {cfg.blocks}); names look like {example!r}"
        )
    return chosen


def add_adapters(model: nn.Module, cfg: LoraConfig) -> nn.Module:
    """Inject LoRA adapters into ``model`` in place (returns it). The adapters draw their
    initial values from torch's global generator (seeded by the caller); everything outside
    the towers keeps the trainability it had."""
    peft = _peft()
    names = target_names(model, cfg)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    config = peft.LoraConfig(
        r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=names
    )
    peft.tuners.lora.LoraModel(_Holder(model), config, "default")
    model.lora_config = config  # what merged() wraps a copy with
    for name, param in model.named_parameters():
        if not name.startswith(tuple(t + "." for t in TOWERS)) and name in trainable:
            param.requires_grad_(True)  # the lift: new, so it trains
    return model


def has_adapters(model: nn.Module) -> bool:
    return any(".lora_A." in n for n, _ in model.named_parameters())


def merged(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with its adapters folded into the weights (peft's
    ``merge_and_unload``): a plain model whose state dict has the keys of one built without
    LoRA. ``model`` itself is left as it is (training goes on with it)."""
    peft = _peft()
    plain = copy.deepcopy(model)
    # Wrapping again re-creates the adapters (drawing random values): keep the caller's
    # random streams as they were, then put the trained adapters back.
    with torch.random.fork_rng(devices=[]):
        tuner = peft.tuners.lora.LoraModel(_Holder(plain), model.lora_config, "default")
    plain.load_state_dict(model.state_dict())
    out = tuner.merge_and_unload().model
    del out.lora_config
    return out


class _Holder(nn.Module):
    """What peft wraps instead of the model itself: peft reads ``model.config`` as a
    transformers config, and HyvlModel's is hyvl's own. Module names gain a ``model.``
    prefix, which peft's suffix matching of the target names ignores."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
