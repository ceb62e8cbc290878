"""Typed configuration: YAML files and dotted ``key=value`` overrides, validated into dataclasses.

An unknown key is an error naming the key, where it was found, and the nearest valid key,
so a typo (``train.max_step=10``) fails at start instead of being ignored.

Every numeric default taken from a paper names its source once, here.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

from hyvl.errors import ConfigError

# --------------------------------------------------------------------------------------
# Generic machinery
# --------------------------------------------------------------------------------------


def _nearest(key: str, valid: list[str], where: str = "") -> str:
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.0)
    if not close:
        return ""
    return f"; did you mean {(where + '.' if where else '') + close[0]!r}?"


def _check_type(value: Any, tp: Any, where: str) -> Any:
    """Check (and gently coerce) ``value`` against the annotation ``tp``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        errors = []
        for arg in typing.get_args(tp):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_type(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(f"{where}: {value!r} does not fit {tp}")
    if origin is Literal:
        if isinstance(value, bool):
            # YAML 1.1 reads no / off / false (yes / on / true) as booleans, so
            # `train.mixed_precision=no` arrives as False: take the one choice spelled that way.
            spellings = ("yes", "on", "true") if value else ("no", "off", "false")
            spelled = [c for c in typing.get_args(tp) if isinstance(c, str) and c in spellings]
            if len(spelled) == 1:
                return spelled[0]
        if value not in typing.get_args(tp):
            choices = ", ".join(repr(a) for a in typing.get_args(tp))
            raise ConfigError(f"{where}: {value!r} is not one of {choices}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(
                _check_type(v, a, f"{where}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=False))
            )
        item = args[0] if args else Any
        out = [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(out) if origin is tuple else out
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """Build dataclass ``cls`` from a mapping; unknown keys raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls) if f.init]
    kwargs = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            raise ConfigError(f"unknown config key {path!r}{_nearest(str(key), names, where)}")
        kwargs[key] = _check_type(value, hints[key], path)
    try:
        obj = cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where or 'config'}: {err}") from err
    return obj


def to_dict(obj: Any) -> Any:
    """Dataclass -> plain dict of YAML/JSON-safe values (tuples become lists)."""
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, dict):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"train.max_steps=10"`` -> (["train", "max_steps"], 10); the value is parsed as YAML."""
    import yaml

    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err})") from err
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    """Apply dotted overrides to a raw (not yet validated) config mapping, in place."""
    for text in overrides:
        keys, value = parse_override(text)
        node = data
        for i, key in enumerate(keys[:-1]):
            child = node.get(key)
            if isinstance(child, str) and key == "model" and i == 0:
                # `model: meru_tiny` plus `model.embed_dim=64` -> a named base with overrides.
                child = {"base": child}
            if child is None:
                child = {}
            if not isinstance(child, dict):
                raise ConfigError(f"override {text!r}: {'.'.join(keys[: i + 1])} is not a mapping")
            node[key] = child
            node = child
        node[keys[-1]] = value
    return data


def load_yaml(path: str | Path) -> dict:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {str(path)!r} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {str(path)!r} is not valid YAML: {err}") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(path)!r}: top level must be a mapping")
    return data


# --------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------

# ImageNet statistics, used by MERU and HyCoCLIP for their timm ViTs.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class VisionConfig:
    """Image tower: any timm ViT by name, with optional architecture overrides."""

    timm_name: str = "vit_small_mocov3_patch16_224"
    image_size: int = 224
    # Architecture overrides passed to timm (None = the named model's own value).
    patch_size: int | None = None
    width: int | None = None
    depth: int | None = None
    heads: int | None = None
    mlp_ratio: float | None = None
    # Local file with timm weights for the tower (never downloaded).
    pretrained: str | None = None
    drop_path_rate: float = 0.0
    timm_kwargs: dict = field(default_factory=dict)
    # LayerNorm eps (None = timm's 1e-6). MERU / HyCoCLIP build every ViT with eps 1e-5.
    ln_eps: float | None = None
    # Fixed (frozen) 2-D sin-cos position embedding of MoCo v3 (Chen et al. 2021), which MERU /
    # HyCoCLIP use for every ViT; False = timm's learned position embedding.
    sincos_pos_embed: bool = False


@dataclass
class TextConfig:
    """Text tower: the CLIP text transformer (open_clip) or a Hugging Face model."""

    kind: Literal["openclip", "hf"] = "openclip"
    # CLIP text transformer (Radford et al. 2021): vocab 49408, context 77, width 512,
    # 12 layers, 8 heads, causal mask, EOS (argmax token) pooling.
    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    layers: int = 12
    heads: int = 8
    mlp_ratio: float = 4.0
    # Hugging Face text tower: a local directory or hub name (only loaded when kind == "hf").
    hf_name: str | None = None
    hf_pooling: Literal["cls", "mean", "eos"] = "cls"
    # QuickGELU activations, as OpenAI's CLIP weights need (open_clip's "-quickgelu" models).
    quick_gelu: bool = False


@dataclass
class ModelConfig:
    name: str = "custom"
    geometry: Literal["lorentz", "euclidean"] = "lorentz"
    embed_dim: int = 512
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    # MERU (Desai et al. 2023), Sec. 3: curvature init c0 = 1, learnable, clamped to [c0/10, 10 c0].
    curv_init: float = 1.0
    learn_curv: bool = True
    # MERU: learnable scalar alpha per modality, init embed_dim^-0.5, stored as log, clamped <= 0.
    learn_alpha: bool = True
    # CLIP (Radford et al. 2021): logit scale init 1/0.07, clamped at 100.
    logit_scale_init: float = 1 / 0.07
    logit_scale_max: float = 100.0
    pixel_mean: tuple[float, float, float] = IMAGENET_MEAN
    pixel_std: tuple[float, float, float] = IMAGENET_STD
    grad_checkpointing: bool = False
    # A local open_clip CLIP state dict (.pt/.bin/.safetensors) to initialise both towers, both
    # projections and the logit scale from (hyperbolic fine-tuning of a pretrained CLIP). Only
    # read when the model is built; exports store the weights and drop the path.
    openclip_init: str | None = None

    def __post_init__(self) -> None:
        if self.embed_dim <= 0:
            raise ConfigError(f"model.embed_dim must be positive, got {self.embed_dim}")
        if self.curv_init <= 0:
            raise ConfigError(f"model.curv_init must be positive, got {self.curv_init}")


# --------------------------------------------------------------------------------------
# Objective
# --------------------------------------------------------------------------------------


@dataclass
class ObjectiveConfig:
    """Which loss terms, with which weights. ``kind`` picks the paper's recipe."""

    kind: Literal["clip", "meru", "hycoclip"] = "meru"
    # Logits: "distance" = scale * -Lorentz distance (cosine for euclidean);
    # "angle" = scale * -exterior angle (ATMG, Ramasinghe et al. 2024), lorentz only.
    logits: Literal["distance", "angle"] = "distance"
    # "softmax" = symmetric InfoNCE (CLIP); "sigmoid" = pairwise sigmoid (SigLIP, Zhai et al. 2023).
    loss: Literal["softmax", "sigmoid"] = "softmax"
    # MERU Sec. 3.3 and HyCoCLIP Sec. 3: entailment weight 0.2.
    entail_weight: float = 0.2
    # HyCoCLIP Sec. 3.2: aperture scale k = 0.7 for inter-modality (text->image, box text->box image)
    # and k = 1.2 for intra-modality (box image->image, box text->text); the four terms are
    # summed and halved (0.5) before the weight.
    inter_aperture_scale: float = 0.7
    intra_aperture_scale: float = 1.2
    hycoclip_entail_factor: float = 0.5
    # MERU Eq. 9: half-aperture constant K = 0.1 (min_radius).
    min_radius: float = 0.1
    # Not in the papers (0 = their recipe: full weight from the first step): the entailment
    # weight ramps linearly from 0 to entail_weight over this many steps, so the contrastive
    # terms spread the embeddings out before the cones pull them in (docs/learning.md).
    entail_warmup_steps: int = 0
    # SigLIP init: logit bias -10 (only used with loss == "sigmoid").
    sigmoid_bias_init: float = -10.0
    # Distributed: gather embeddings from all processes with gradients, loss over local rows.
    gather_with_grad: bool = True


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    # Shard spec(s): brace expansion, globs, local paths, pipe: and http(s) URLs.
    train_shards: str | list[str] = ""
    val_shards: str | list[str] = ""
    layout: Literal["auto", "plain", "grit", "hycoclip", "grounded"] = "auto"
    resampled: bool = True
    shuffle_buffer: int = 1000
    workers: int = 2
    # Box crops per training sample (HyCoCLIP: one, chosen at random); 0 = plain image-text.
    boxes_per_sample: int = 1
    # HyCoCLIP drops boxes smaller than 32x32 pixels.
    min_box_size: int = 32
    # Random resized crop scale for training (MERU/HyCoCLIP: (0.5, 1.0)).
    rrc_scale: tuple[float, float] = (0.5, 1.0)
    # Log every Nth skipped sample (counts are always kept exactly).
    skip_log_every: int = 100


# --------------------------------------------------------------------------------------
# Training and evaluation
# --------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    max_steps: int = 1000
    batch_size: int = 64  # global batch (summed over processes)
    # MERU/HyCoCLIP recipe: AdamW lr 5e-4, betas (0.9, 0.98), weight decay 0.2
    # (norms, biases, curvature, alphas and logit scale excluded), 4000 warmup steps, cosine to 0.
    lr: float = 5e-4
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-8
    weight_decay: float = 0.2
    warmup_steps: int = 4000
    min_lr: float = 0.0
    seed: int = 0
    checkpoint_every: int = 1000
    keep_last: int = 2
    log_every: int = 10
    eval_every: int = 0
    mixed_precision: Literal["no", "bf16", "fp16"] = "no"
    grad_accum: int = 1
    grad_clip: float = 0.0
    compile: bool = False
    fsdp: bool = False
    cpu: bool = False
    # Box crops / box texts: one tower call with the whole images / texts ("fused"), or their
    # own ("split", 3-9% faster on 2 CPU cores); "auto" fuses on CUDA only.
    box_towers: Literal["auto", "fused", "split"] = "fused"
    # A non-finite loss skips the step; this many in a row stop the run.
    max_nonfinite: int = 10
    # Training health (hyvl/train/health.py): a collapse only warns, or stops the run with a
    # non-zero exit (keeping the checkpoints written so far); a problem must hold this many
    # steps before it is reported.
    on_collapse: Literal["warn", "stop"] = "warn"
    health_patience: int = 20
    trackers: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "grad_accum", "checkpoint_every", "log_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"train.{name} must be positive, got {getattr(self, name)}")


@dataclass
class EvalConfig:
    zeroshot: str = ""  # ImageFolder dir (with classnames.txt / templates.txt) or shards
    retrieval: str = ""  # COCO captions JSON
    batch_size: int = 64
    templates: str = ""  # "" = templates.txt beside the data, else a file or a built-in set name


@dataclass
class RunConfig:
    # A registered model name (hyvl.list_models()), or a mapping: {base: NAME, ...overrides}
    # or a full model config.
    model: str | dict = "meru_tiny"
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def load_run_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read a run config (a packaged recipe name or a YAML path), apply dotted overrides, validate."""
    from hyvl.recipes import resolve_recipe

    data = load_yaml(resolve_recipe(path)) if path else {}
    if "model" not in data and any(o.startswith("model.") for o in overrides or []):
        data["model"] = {"base": RunConfig.model}
    apply_overrides(data, list(overrides or []))
    return from_dict(RunConfig, data)
