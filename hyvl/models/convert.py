"""State dicts of other projects -> HyvlModel's names (as open_clip keeps its convert.py).

- open_clip CLIP weights in hyvl's names (the starting point of ``model.init``,
  :mod:`hyvl.models.init`), and
- published MERU / HyCoCLIP (and MERU's CLIP baselines) ``.pth`` files: the config is inferred
  from keys and shapes.

Nothing here builds a model: :func:`openclip_to_hyvl` renames, :func:`convert_meru` returns ``(ModelConfig, state_dict)`` for :mod:`hyvl.models.checkpoint` to build from.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import torch

from hyvl.config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig, from_dict
from hyvl.errors import CheckpointError

log = logging.getLogger(__name__)

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


def _strip_module(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """open_clip's training saves ``epoch_N.pt`` from its DDP wrapper: ``module.`` names."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module.") :]: v for k, v in state.items()}
    return state


def is_openclip_state(state: dict[str, torch.Tensor]) -> bool:
    """An open_clip CLIP state dict (or open_clip's ``epoch_N.pt`` state_dict): its text
    projection and a ``visual.`` tower (``text.`` for CustomTextCLIP)."""
    keys = set(_strip_module(state))
    text = "text_projection" in keys or "text.text_projection" in keys
    return text and any(k.startswith("visual.") for k in keys)


def openclip_to_hyvl(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    state = _strip_module(state)
    if any(k.startswith("text.") for k in state):  # open_clip's CustomTextCLIP
        state = {(k[5:] if k.startswith("text.") else k): v for k, v in state.items()}
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if key == "visual.proj":
            out["visual_proj.weight"] = value.t()
        elif key == "text_projection":
            out["textual_proj.weight"] = value.t()
        elif key == "logit_scale":
            out["logit_scale"] = value.reshape(())  # both hold the log
        elif key == "visual.head.proj.weight":  # a timm tower's (open_clip TimmModel) projection
            out["visual_proj.weight"] = value
        elif key.startswith("visual.trunk."):  # a timm tower: timm's names already, as hyvl's
            out["visual.vit." + key[len("visual.trunk.") :]] = value
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
_TOP_RENAMES = {"curv": "log_curv"}  # MERU's logit_scale is a log, as hyvl's
_VIT_BY_WIDTH = {
    384: "vit_small_mocov3_patch16_224",
    768: "vit_base_patch16_224",
    1024: "vit_large_patch16_224",
}


def convert_meru(state: dict[str, torch.Tensor], path: Path) -> tuple[ModelConfig, dict]:
    """Map a MERU / HyCoCLIP / MERU-CLIP state dict onto HyvlModel's names and config."""
    needed = ["visual_proj.weight", "textual_proj.weight", "textual.token_embed.weight"]
    if any(k not in state for k in needed) and is_openclip_state(state):
        raise CheckpointError(
            f"{path}: an open_clip CLIP checkpoint, not a trained hyvl / MERU / HyCoCLIP model: "
            f"start a run from its towers with `hyvl train --config RECIPE --output-dir RUN "
            f"model.openclip_init={path}` (in Python: hyvl.create_model(NAME, "
            f"openclip_init={str(path)!r})), with a model config of the same architecture"
        )
    if any(k not in state for k in needed) and any(k.startswith("visual.vit.") for k in state):
        raise CheckpointError(
            f"{path}: the weights file of a hyvl model; load the folder it belongs to "
            "(model.safetensors + config.json: an export, or RUN/checkpoints/step_* of a run)"
        )
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
