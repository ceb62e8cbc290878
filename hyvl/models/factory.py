"""open_clip-shaped entry points: ``create_model_and_transforms``, ``get_tokenizer``, ``similarity``.

They take what open_clip's take: a registry name (``hyvl.list_models()``), a checkpoint path
(export directory, training output directory, MERU / HyCoCLIP ``.pth``) or a Hugging Face Hub
id ``hf-hub:ORG/NAME`` (downloaded once into the hub cache, or read from it when
``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from hyvl.config import ModelConfig, TextConfig, to_dict
from hyvl.errors import CheckpointError
from hyvl.hub import HF_HUB_PREFIX, local_path

# Config fields a checkpoint may set differently from the registry config it is loaded into:
# names and init-only settings, and the pixel statistics it was trained with (loaded as buffers).
_NOT_ARCHITECTURE = (
    "name",
    "init",
    "openclip_init",
    "curv_init",
    "pixel_mean",
    "pixel_std",
    "score",
)


def _is_checkpoint(spec: Any) -> bool:
    if isinstance(spec, Path):
        return True
    return isinstance(spec, str) and (spec.startswith(HF_HUB_PREFIX) or Path(spec).exists())


def _differences(a: dict, b: dict, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        if not prefix and key in _NOT_ARCHITECTURE or key == "pretrained":
            continue
        va, vb = a.get(key), b.get(key)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += _differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}: {va!r} vs {vb!r}")
    return out


def create_model_and_transforms(
    name_or_path: str | Path,
    pretrained: str | Path | None = None,
    device: str | torch.device = "cpu",
    normalize: bool = False,
    **overrides: Any,
):
    """``(model, preprocess_train, preprocess_val)`` as open_clip's function of the same name.

    ``name_or_path``: a registry name (random init unless ``pretrained`` is given), or a
    checkpoint path / ``hf-hub:ORG/NAME`` (then ``pretrained`` must be None).
    ``pretrained``: a checkpoint path or ``hf-hub:`` id whose architecture must equal the named
    config's (a mismatch raises :class:`~hyvl.errors.CheckpointError` listing the fields).
    ``overrides`` change fields of a named config (``create_model``'s keyword arguments).

    The model is returned in eval mode when weights were loaded, in train mode when randomly
    initialised (open_clip returns train mode; call ``model.eval()`` for inference).
    ``preprocess_train``: RandomResizedCrop(scale 0.5-1, MERU's) -> tensor; ``preprocess_val``:
    resize + center crop -> tensor; both give (3, H, W) in [0, 1] and the model normalises. With
    ``normalize=True`` both end with ``Normalize(model pixel mean, std)`` as open_clip's do and
    the model's ``normalize_inside`` is switched off, so images prepared by open_clip-style
    pipelines are normalised exactly once.
    """
    from hyvl.models.checkpoint import load_model
    from hyvl.models.registry import create_model, resolve_model_config
    from hyvl.models.transforms import image_transform

    if _is_checkpoint(name_or_path):
        if pretrained is not None:
            raise CheckpointError(
                f"{name_or_path}: is a checkpoint already; pass pretrained= only with a model name"
            )
        if overrides:
            raise CheckpointError(f"{name_or_path}: config overrides apply to model names only")
        model = load_model(local_path(name_or_path), device)
    elif pretrained is not None:
        want = resolve_model_config({"base": str(name_or_path), **overrides})
        model = load_model(local_path(pretrained), device)
        diff = _differences(to_dict(want), to_dict(model.config))
        if diff:
            raise CheckpointError(
                f"{pretrained}: is not a {want.name!r} model; differs in {', '.join(diff[:5])}"
            )
    else:
        model = create_model(name_or_path, **overrides).to(device)
    size = model.image_size
    train, val = image_transform(size, train=True), image_transform(size, train=False)
    if normalize:
        from torchvision import transforms as T

        norm = T.Normalize(model.config.pixel_mean, model.config.pixel_std)
        train, val = T.Compose([*train.transforms, norm]), T.Compose([*val.transforms, norm])
        model.normalize_inside = False
    return model, train, val


def get_tokenizer(name_or_path: str | Path | TextConfig | ModelConfig):
    """``tokenizer(list[str]) -> LongTensor (B, context_length)`` for a model name or checkpoint.

    Accepts a registry name, an export / training directory, a ``.pth`` file, an ``hf-hub:``
    id, or a :class:`TextConfig` / :class:`ModelConfig`. Export directories are read from
    their config.json only (no weights are loaded).
    """
    from hyvl.models.registry import get_model_config
    from hyvl.models.tokenizer import get_tokenizer as tokenizer_for

    spec = name_or_path
    if isinstance(spec, ModelConfig):
        return tokenizer_for(spec.text)
    if isinstance(spec, TextConfig):
        return tokenizer_for(spec)
    if not _is_checkpoint(spec):
        return tokenizer_for(get_model_config(str(spec)).text)
    return tokenizer_for(_checkpoint_config(local_path(spec)).text)


def _checkpoint_config(path: Path) -> ModelConfig:
    import json

    from hyvl.config import from_dict
    from hyvl.models.checkpoint import load_model

    for directory in (path, path / "export"):
        config = directory / "config.json"
        if config.is_file() and (directory / "model.safetensors").is_file():
            try:
                return from_dict(ModelConfig, json.loads(config.read_text())["model"], "model")
            except (ValueError, KeyError) as err:
                raise CheckpointError(f"{config}: not a hyvl export config ({err})") from err
    return load_model(path).config  # a .pth: the architecture is read from its tensors


def similarity(image_emb: torch.Tensor, text_emb: torch.Tensor, model) -> torch.Tensor:
    """(B_img, D), (B_txt, D) embeddings -> (B_img, B_txt) fp32 scores, larger = closer.

    Lorentz models: the negative geodesic distance ``-d(x, y)`` at the model's curvature
    (``img @ txt.T`` is NOT a similarity on the hyperboloid). CLIP: the cosine ``img @ txt.T``
    of the unit embeddings. Multiply by ``model.logit_scale_exp`` for the training logits.
    ATMG models (``model.config.score == "atmg_angle"``): ``oxy_angle(image, text)``, the
    exterior angle at the image, ATMG's image -> text logit (the caption lying back towards
    the origin scores higher).
    """
    return model.pairwise_score(image_emb, text_emb)
