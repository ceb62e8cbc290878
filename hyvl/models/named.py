"""Named model configurations (``hyvl.list_models()``); :mod:`hyvl.models.registry` builds them.

Names are ``{clip,meru,hycoclip,uncha,atmg,phyclip}_{vit_s,vit_b,vit_l,tiny}``. CLIP is the euclidean geometry;
MERU and HyCoCLIP share the Lorentz model and differ only in their objective (and data: HyCoCLIP
needs boxes), so ``meru_vit_s`` and ``hycoclip_vit_s`` build the same architecture.
"""

from __future__ import annotations

import copy
from typing import Any

from hyvl.config import FAMILIES, ModelConfig, from_dict, to_dict
from hyvl.errors import ConfigError

# Image towers of the papers (MERU Table 1, HyCoCLIP Sec. 4): MoCo-v3 ViT-S/16, ViT-B/16, ViT-L/16,
# all built as MERU's build_timm_vit does: LayerNorm eps 1e-5 and a frozen 2-D sin-cos position
# embedding (CLIP baselines of both papers too).
_PAPER_VIT = {"image_size": 224, "ln_eps": 1e-5, "sincos_pos_embed": True}
_TOWERS: dict[str, dict[str, Any]] = {
    "vit_s": {"vision": {"timm_name": "vit_small_mocov3_patch16_224", **_PAPER_VIT}},
    "vit_b": {"vision": {"timm_name": "vit_base_patch16_224", **_PAPER_VIT}},
    "vit_l": {"vision": {"timm_name": "vit_large_patch16_224", **_PAPER_VIT}},
    # Trains on 2 CPU cores: 64 px images in 8 px patches, 4-layer towers of width 128.
    "tiny": {
        "embed_dim": 128,
        "vision": {
            "timm_name": "vit_tiny_patch16_224",
            "image_size": 64,
            "patch_size": 8,
            "width": 128,
            "depth": 4,
            "heads": 4,
        },
        "text": {"context_length": 32, "width": 128, "layers": 4, "heads": 4},
    },
}


# What a family changes in the model besides its geometry.
_FAMILY_MODEL: dict[str, dict[str, Any]] = {
    # ATMG (Ramasinghe et al. 2024; samgregoost/atmg configs/train_atmg_vit_l.py): curvature
    # fixed at 0.1 (curv_init=0.1, learn_curv=False); evaluated by the angle at the image, as
    # its authors' atmg/evaluation/classification.py does (model.score, config.py).
    "atmg": {"curv_init": 0.1, "learn_curv": False, "score": "atmg_angle"},
    # PHyCLIP (tksmatsubara/PHyCLIP configs/train_phyclip_vit_l.py): factors of dimension 8
    # (subspace_dim=8), curvature init 1 per factor, learned.
    "phyclip": {"factor_dim": 8},
}


def _merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _named() -> dict[str, dict]:
    configs = {}
    for family, recipe in FAMILIES.items():
        for tower, spec in _TOWERS.items():
            name = f"{family}_{tower}"
            base = {"name": name, "geometry": recipe.geometry, **_FAMILY_MODEL.get(family, {})}
            configs[name] = _merge(base, spec)
    return configs


_CONFIGS = _named()


def list_models() -> list[str]:
    """Names accepted by :func:`create_model`, sorted."""
    return sorted(_CONFIGS)


def get_model_config(name: str) -> ModelConfig:
    if name not in _CONFIGS:
        import difflib

        close = difflib.get_close_matches(name, list(_CONFIGS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown model {name!r}{hint} (hyvl.list_models() lists them)")
    return from_dict(ModelConfig, copy.deepcopy(_CONFIGS[name]), "model")


def resolve_model_config(spec: str | dict | ModelConfig) -> ModelConfig:
    """A ModelConfig from a name, a dict (optionally ``{"base": NAME, ...overrides}``) or itself."""
    if isinstance(spec, ModelConfig):
        return spec
    if isinstance(spec, str):
        return get_model_config(spec)
    if isinstance(spec, dict):
        spec = dict(spec)
        base = spec.pop("base", None)
        data = to_dict(get_model_config(base)) if base else {}
        return from_dict(ModelConfig, _merge(data, spec), "model")
    raise ConfigError(
        f"model must be a name, a mapping or a ModelConfig, got {type(spec).__name__}"
    )
