"""Saving and loading models: safetensors + JSON config, and the published MERU / HyCoCLIP weights.

Export layout (``hyvl.save(model, DIR)``)::

    DIR/model.safetensors   weights (no pickle)
    DIR/config.json         {"format": "hyvl", "hyvl_version": ..., "model": <ModelConfig>}

``hyvl.load(path)`` accepts an export directory, a training output directory (its ``export/``,
refreshed at every checkpoint), or a MERU / HyCoCLIP ``.pth`` file. Pickles are only ever read
with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch

from hyvl.config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig, from_dict, to_dict
from hyvl.errors import CheckpointError

log = logging.getLogger(__name__)

FORMAT = "hyvl"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save(model, directory: str | Path) -> Path:
    """Write ``model`` as DIR/model.safetensors + DIR/config.json; returns DIR."""
    from safetensors.torch import save_model

    import hyvl

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model)  # unwrap DDP
    save_model(model, str(directory / WEIGHTS))
    config = to_dict(model.config)
    # The weights are in the file: an export must not depend on the init files it started from.
    config["openclip_init"] = None
    config["vision"]["pretrained"] = None
    meta = {"format": FORMAT, "hyvl_version": hyvl.__version__, "model": config}
    (directory / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
    return directory


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors from a .safetensors file or a weights-only torch pickle (never unsafe unpickling)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path))
        except Exception as err:  # safetensors raises its own SafetensorError
            raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(
            f"{path}: cannot be read as a weights-only torch checkpoint ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}); hyvl never unpickles arbitrary "
            "objects. Re-save the state dict with torch.save(model.state_dict(), ...) or as "
            "safetensors."
        ) from err
    for key in ("model", "state_dict"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: holds no state dict of tensors")
    return obj


def _resolve_export(path: Path) -> Path:
    """The export directory behind ``path`` (an export, or a training output directory)."""
    if (path / CONFIG).is_file() and (path / WEIGHTS).is_file():
        return path
    if (path / "export" / CONFIG).is_file():
        return path / "export"
    raise CheckpointError(
        f"{path}: neither a hyvl export (model.safetensors + config.json) nor a training output "
        "directory with export/ in it"
    )


def _load_export(directory: Path):
    from safetensors.torch import load_model as st_load_model

    from hyvl.models.model import HyvlModel

    try:
        meta = json.loads((directory / CONFIG).read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{directory / CONFIG}: not valid JSON ({err})") from err
    if meta.get("format") != FORMAT or "model" not in meta:
        raise CheckpointError(f"{directory / CONFIG}: not a hyvl export config (format != 'hyvl')")
    config = from_dict(ModelConfig, meta["model"], "model")
    model = HyvlModel(config)
    try:
        missing, unexpected = st_load_model(model, str(directory / WEIGHTS), strict=False)
    except Exception as err:
        raise CheckpointError(f"{directory / WEIGHTS}: {err}") from err
    if missing or unexpected:
        raise CheckpointError(
            f"{directory / WEIGHTS}: weights do not match config.json; missing {sorted(missing)[:5]}"
            f", unexpected {sorted(unexpected)[:5]}"
        )
    return model


# ------------------------------------------------------------------------------------------
# open_clip CLIP weights as the starting point (hyperbolic fine-tuning of a pretrained CLIP)
# ------------------------------------------------------------------------------------------

# open_clip's VisionTransformer names -> timm's (the CLIP ViTs in timm: "vit_*_clip_*", which
# have timm's pre-norm); order matters ("ln_pre" before "ln_").
_OPENCLIP_VISION_SWAPS = [
    ("conv1.", "patch_embed.proj."),
    ("positional_embedding", "pos_embed"),
    ("transformer.resblocks.", "blocks."),
    ("ln_pre.", "norm_pre."),
    ("ln_post.", "norm."),
    (".ln_1.", ".norm1."),
    (".ln_2.", ".norm2."),
    ("attn.in_proj_", "attn.qkv."),
    ("attn.out_proj.", "attn.proj."),
    ("mlp.c_fc.", "mlp.fc1."),
    ("mlp.c_proj.", "mlp.fc2."),
]


def _openclip_to_hyvl(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if any(k.startswith("text.") for k in state):  # open_clip's CustomTextCLIP
        state = {(k[5:] if k.startswith("text.") else k): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "visual.proj":
            out["visual_proj.weight"] = value.t()
        elif key == "text_projection":
            out["textual_proj.weight"] = value.t()
        elif key == "logit_scale":
            out["log_logit_scale"] = value.reshape(())
        elif key.startswith("visual."):
            new = key[len("visual.") :]
            for old, repl in _OPENCLIP_VISION_SWAPS:
                new = new.replace(old, repl)
            if new == "class_embedding":
                new, value = "cls_token", value.view(1, 1, -1)
            elif new == "pos_embed":
                value = value.unsqueeze(0)
            out["visual.vit." + new] = value
        elif key in ("attn_mask", "logit_bias"):
            continue  # a causal-mask buffer open_clip rebuilds; SigLIP's bias has no place here
        else:
            out["textual.transformer." + key] = value
    return out


def init_from_openclip(model, path: str | Path) -> None:
    """Load towers, projections and logit scale of ``model`` from a local open_clip CLIP state dict.

    The model's config must describe the same architecture: a timm CLIP ViT
    (e.g. ``vit_base_patch16_clip_224``, or ``..._quickgelu_...`` with ``text.quick_gelu``) with
    open_clip's widths and depths, and ``pixel_mean`` / ``pixel_std`` set to the values the CLIP
    was trained with (open_clip.OPENAI_DATASET_MEAN / _STD for OpenAI weights). Alpha and
    curvature keep their MERU init.
    """
    path = Path(path)
    state = _openclip_to_hyvl(read_state_dict(path))
    if "visual_proj.weight" not in state or "textual_proj.weight" not in state:
        raise CheckpointError(
            f"{path}: not an open_clip CLIP state dict (no visual.proj / text_projection)"
        )
    own = model.state_dict()
    mismatched = [
        f"{k} {tuple(v.shape)} vs {tuple(own[k].shape)}"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    if mismatched:
        raise CheckpointError(
            f"{path}: shapes differ from model config {model.config.name!r}: {mismatched[:4]}"
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Only the geometry's own scalars and the pixel buffers may stay at their init.
    allowed = {"visual_alpha", "textual_alpha", "log_curv", "pixel_mean", "pixel_std"}
    missing = [k for k in missing if k not in allowed]
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: does not fit model config {model.config.name!r} (open_clip init); missing "
            f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )


# ------------------------------------------------------------------------------------------
# MERU / HyCoCLIP checkpoints
# ------------------------------------------------------------------------------------------

# MERU's text encoder names -> open_clip TextTransformer names (same block layout: ln_1, attn,
# ln_2, mlp.c_fc, mlp.c_proj; MERU pools at the EOS token by argmax, as open_clip does).
_TEXT_RENAMES = [
    (r"^textual\.token_embed\.", "textual.transformer.token_embedding."),
    (r"^textual\.posit_embed$", "textual.transformer.positional_embedding"),
    (r"^textual\.resblocks\.", "textual.transformer.transformer.resblocks."),
    (r"^textual\.ln_final\.", "textual.transformer.ln_final."),
]
_TOP_RENAMES = {"curv": "log_curv", "logit_scale": "log_logit_scale"}
_VIT_BY_WIDTH = {
    384: "vit_small_mocov3_patch16_224",
    768: "vit_base_patch16_224",
    1024: "vit_large_patch16_224",
}


def _convert_meru(state: dict[str, torch.Tensor], path: Path) -> tuple[ModelConfig, dict]:
    """Map a MERU / HyCoCLIP / MERU-CLIP state dict onto HyvlModel's names and config."""
    needed = ["visual_proj.weight", "textual_proj.weight", "textual.token_embed.weight"]
    if any(k not in state for k in needed):
        missing = [k for k in needed if k not in state]
        raise CheckpointError(
            f"{path}: not a MERU / HyCoCLIP checkpoint (missing {missing}); known formats: "
            "hyvl export directories, training output directories, MERU / HyCoCLIP .pth files"
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "textual.attn_mask":
            continue  # a causal-mask buffer; open_clip builds its own
        new = _TOP_RENAMES.get(key, key)
        if new.startswith("visual.") and not new.startswith("visual_"):
            new = "visual.vit." + new[len("visual.") :]
        for pattern, repl in _TEXT_RENAMES:
            new = re.sub(pattern, repl, new)
        out[new] = value

    embed_dim, vision_width = state["visual_proj.weight"].shape
    text_width = state["textual_proj.weight"].shape[1]
    vocab, _ = state["textual.token_embed.weight"].shape
    context = state["textual.posit_embed"].shape[0]
    text_layers = 1 + max(
        int(m.group(1)) for k in state if (m := re.match(r"textual\.resblocks\.(\d+)\.", k))
    )
    depth = 1 + max(
        int(m.group(1)) for k in state if (m := re.match(r"visual\.blocks\.(\d+)\.", k))
    )
    patch = state["visual.patch_embed.proj.weight"].shape[-1]
    tokens = state["visual.pos_embed"].shape[1] - 1
    image_size = int(round(tokens**0.5)) * patch
    if vision_width not in _VIT_BY_WIDTH:
        raise CheckpointError(f"{path}: image tower of width {vision_width} is not a known ViT")
    geometry = "lorentz" if "curv" in state else "euclidean"

    mean = tuple(float(v) for v in state.get("pixel_mean", torch.tensor(IMAGENET_MEAN)).flatten())
    std = tuple(float(v) for v in state.get("pixel_std", torch.tensor(IMAGENET_STD)).flatten())
    if max(mean) > 1.0:  # stored on the 0-255 scale
        mean, std = tuple(v / 255 for v in mean), tuple(v / 255 for v in std)
    if all(abs(a - b) < 1e-4 for a, b in zip(mean, IMAGENET_STD, strict=True)):
        # HyCoCLIP's constructor passes (..., entail_weight, pixel_mean, pixel_std) by position
        # to MERU(..., entail_weight, use_boxes, pixel_mean, pixel_std), so its buffer holds the
        # ImageNet std as the mean. Its data pipeline only does ToTensor and the model
        # normalises with these buffers, so the released weights were trained AND evaluated
        # with this mean: keeping it is what reproduces them. Say so, once, loudly.
        log.warning(
            "%s: pixel_mean equals the ImageNet std (%s), the HyCoCLIP constructor bug; kept, "
            "because these weights were trained with it. Fine-tune from them unchanged; models "
            "trained with hyvl use the ImageNet mean %s.",
            path,
            IMAGENET_STD,
            IMAGENET_MEAN,
        )
    out["pixel_mean"] = torch.tensor(mean).view(1, 3, 1, 1)
    out["pixel_std"] = torch.tensor(std).view(1, 3, 1, 1)

    config = from_dict(
        ModelConfig,
        {
            "name": path.stem,
            "geometry": geometry,
            "embed_dim": int(embed_dim),
            "vision": {
                "timm_name": _VIT_BY_WIDTH[vision_width],
                "image_size": image_size,
                "patch_size": int(patch),
                "depth": depth,
                # MERU's build_timm_vit: LayerNorm eps 1e-5, frozen MoCo v3 sin-cos positions.
                "ln_eps": 1e-5,
                "sincos_pos_embed": True,
            },
            "text": {
                "context_length": int(context),
                "vocab_size": int(vocab),
                "width": int(text_width),
                "layers": text_layers,
                "heads": max(1, int(text_width) // 64),  # MERU's default when its arch omits A
            },
            "pixel_mean": list(mean),
            "pixel_std": list(std),
        },
        "model",
    )
    return config, out


def _load_pth(path: Path):
    from hyvl.models.model import HyvlModel

    config, state = _convert_meru(read_state_dict(path), path)
    model = HyvlModel(config)
    if "log_curv" in state:  # MERU stores log c; keep the clamp range centred on it
        c0 = float(state["log_curv"].exp())
        model.config.curv_init = c0
        model._log_curv_bounds = (
            float(torch.tensor(c0 / 10).log()),
            float(torch.tensor(c0 * 10).log()),
        )
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: does not match the converted architecture; missing {sorted(missing)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
    return model


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """A :class:`HyvlModel` in eval mode from an export, a training output dir, or a .pth."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    if path.is_dir():
        model = _load_export(_resolve_export(path))
    elif path.suffix in (".pth", ".pt", ".bin", ".ckpt"):
        model = _load_pth(path)
    else:
        raise CheckpointError(
            f"{path}: unknown checkpoint format; expected a directory (hyvl export or training "
            "output) or a MERU / HyCoCLIP .pth file"
        )
    return model.to(device).eval()


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[Any, Any, Any]:
    """``(model, preprocess, tokenizer)`` ready for ``encode_image`` / ``encode_text``."""
    from hyvl.models.tokenizer import get_tokenizer
    from hyvl.models.transforms import image_transform

    model = load_model(path, device)
    return model, image_transform(model.image_size, train=False), get_tokenizer(model.config.text)
