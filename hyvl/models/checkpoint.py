"""Saving and loading models: safetensors + JSON config, and the published MERU / HyCoCLIP weights.

Export layout (``hyvl.save(model, DIR)``)::

    DIR/model.safetensors   weights (no pickle)
    DIR/config.json         {"format": "hyvl", "hyvl_version": ..., "model": <ModelConfig>}

``hyvl.load(path)`` accepts an export directory, a training output directory (its ``export/``,
refreshed at every checkpoint), or a MERU / HyCoCLIP ``.pth`` file (converted by
:mod:`hyvl.models.convert`). Pickles are only ever read with ``torch.load(weights_only=True)``
(:mod:`hyvl.models.weights`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from hyvl.config import ModelConfig, from_dict, to_dict
from hyvl.errors import CheckpointError
from hyvl.models.convert import convert_meru
from hyvl.models.model import HyvlModel
from hyvl.models.weights import read_state_dict

FORMAT = "hyvl"
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def save(
    model, directory: str | Path, run_dir: str | Path | None = None, repo_id: str | None = None
) -> Path:
    """Write ``model`` into DIR as model.safetensors, config.json and README.md; returns DIR.

    README.md is the model card (:func:`hyvl.hub.model_card`): geometry, curvature, config, and
    for an export of a training run (``run_dir``, its output directory) the training data and
    the last evaluation of its eval.jsonl. ``repo_id`` goes into the card's loading example.
    Atomic (:func:`hyvl.io.atomic_dir`): a failure or a kill mid-write leaves the previous
    export in DIR whole; other files in DIR are kept.
    """
    from safetensors.torch import save_model

    import hyvl
    from hyvl.hub import model_card
    from hyvl.io import atomic_dir

    directory = Path(directory)
    model = getattr(model, "module", model)  # unwrap DDP
    config = to_dict(model.config)
    # The weights are in the file: an export must not depend on the init files it started from.
    config["openclip_init"] = None
    config["init"] = None
    config["vision"]["pretrained"] = None
    meta = {"format": FORMAT, "hyvl_version": hyvl.__version__, "model": config}
    with atomic_dir(directory, last=CONFIG) as tmp:
        save_model(model, str(tmp / WEIGHTS))
        (tmp / CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
        (tmp / "README.md").write_text(model_card(model, run_dir, repo_id))
    return directory


def fingerprint(model) -> str:
    """A short hex digest of the model's weights (names, shapes, dtypes and bytes of its state
    dict, in order): two checkpoints have the same one only when their weights are equal, so
    an index or a result can say which model made it. BLAKE2 from hashlib, over every byte
    (a ViT-B takes about a second, less than embedding its first batch)."""
    import hashlib

    digest = hashlib.blake2b(digest_size=8)
    model = getattr(model, "module", model)
    for name, tensor in model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def _resolve_export(path: Path) -> Path:
    """The export directory behind ``path`` (an export, or a training output directory)."""
    from hyvl.io import recover_dir

    recover_dir(path)  # an export swap killed between its two renames
    recover_dir(path / "export")
    if (path / CONFIG).is_file() and (path / WEIGHTS).is_file():
        return path
    if (path / "export" / CONFIG).is_file():
        return path / "export"
    for name in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
        if (path / name).is_file():  # an open_clip model folder (as on the Hugging Face Hub)
            raise CheckpointError(
                f"{path}: an open_clip model folder, not a trained hyvl model: start a run from "
                f"its towers with `hyvl train --config RECIPE --output-dir RUN "
                f"model.openclip_init={path / name}`"
            )
    if (path / "checkpoints").is_dir():
        raise CheckpointError(
            f"{path}: a training output directory without export/ yet (it is written at the "
            f"first checkpoint); or load a step checkpoint: {path / 'checkpoints' / 'step_*'}"
        )
    raise CheckpointError(
        f"{path}: neither a hyvl export (model.safetensors + config.json), a training output "
        "directory with export/ in it, nor a step checkpoint (RUN/checkpoints/step_*)"
    )


def _is_step_checkpoint(path: Path) -> bool:
    return (path / "meta.json").is_file() and (
        (path / "state.safetensors").is_file() or (path / "accelerate").is_dir()
    )


def _load_step_checkpoint(path: Path, merge: bool = True):
    """The model of a training checkpoint ``RUN/checkpoints/step_N`` (state.safetensors holds
    the train module: the model's tensors under ``model.``, the loss's under ``objective.``;
    its meta.json the run's settings). A LoRA run's adapters (train.lora) are folded into the
    weights (``merge``, a plain model), or kept as peft layers (``merge=False``, needs peft)."""
    from safetensors.torch import load_file

    from hyvl.config import RunConfig
    from hyvl.models.named import resolve_model_config

    try:
        meta = json.loads((path / "meta.json").read_text())
        settings = from_dict(RunConfig, meta["config"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CheckpointError(
            f"{path / 'meta.json'}: not a readable checkpoint meta ({err})"
        ) from err
    if not (path / "state.safetensors").is_file():
        raise CheckpointError(
            f"{path}: a sharded (FSDP) checkpoint, whose weights only accelerate can gather; "
            f"load the run's export instead: {path.parent.parent}"
        )
    config = resolve_model_config(settings.model)
    config.openclip_init = config.init = None  # the weights are in the checkpoint
    config.vision.pretrained = None
    model = HyvlModel(config)
    lora = settings.train.lora.rank > 0
    if lora:
        from hyvl.models.lora import add_adapters

        with torch.random.fork_rng(devices=[]):  # their random init is overwritten next
            add_adapters(model, settings.train.lora)
    try:
        saved = load_file(str(path / "state.safetensors"))
    except Exception as err:  # safetensors raises its own error types
        raise CheckpointError(f"{path / 'state.safetensors'}: unreadable ({err})") from err
    state = {k[len("model.") :]: v for k, v in saved.items() if k.startswith("model.")}
    missing, unexpected = model.load_state_dict(state, strict=False)
    # safetensors' save_model stores a tensor shared by two names once
    own = model.state_dict()
    missing = [
        k
        for k in missing
        if not any(own[k].data_ptr() == own[j].data_ptr() for j in state if j in own)
    ]
    if missing or unexpected:
        raise CheckpointError(
            f"{path / 'state.safetensors'}: does not match the run's model config; missing "
            f"{sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}"
        )
    if lora and merge:
        from hyvl.models.lora import merged

        model = merged(model)
    return model


def _load_export(directory: Path):
    from safetensors.torch import load_model as st_load_model

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


def _load_pth(path: Path):
    config, state = convert_meru(read_state_dict(path), path)
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


def _name_hint(text: str) -> str:
    """For a missing path that is a model or recipe name: what builds that model."""
    from hyvl.models.named import list_models
    from hyvl.recipes import list_recipes

    if text in list_models() or text in list_recipes():
        return (
            f"; {text!r} names a model architecture, not a trained checkpoint: "
            f"hyvl.create_model({text!r}) builds it with random weights "
            f"(hyvl.create_model_and_transforms({text!r}) with its preprocess and tokenizer), "
            f"`hyvl train --config {text}` trains it"
        )
    return ""


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """A :class:`HyvlModel` in eval mode from an export, a training output dir, a .pth, or a
    Hugging Face Hub id ``hf-hub:ORG/NAME[@REVISION]`` (an export, downloaded or read from the
    hub cache; ``HF_HUB_OFFLINE=1`` reads only the cache)."""
    from hyvl.hub import local_path

    path = local_path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory{_name_hint(str(path))}")
    if path.is_dir() and _is_step_checkpoint(path):
        model = _load_step_checkpoint(path)
    elif path.is_dir():
        model = _load_export(_resolve_export(path))
    elif path.suffix in (".pth", ".pt", ".bin", ".ckpt", ".safetensors"):
        model = _load_pth(path)
    else:
        raise CheckpointError(
            f"{path}: unknown checkpoint format; expected a directory (hyvl export, training "
            "output or step checkpoint) or a MERU / HyCoCLIP .pth file"
        )
    return model.to(device).eval()


def load(path: str | Path, device: str | torch.device = "cpu") -> tuple[Any, Any, Any]:
    """``(model, preprocess, tokenizer)`` ready for ``encode_image`` / ``encode_text``."""
    from hyvl.models.tokenizer import get_tokenizer
    from hyvl.models.transforms import image_transform

    model = load_model(path, device)
    return model, image_transform(model.image_size, train=False), get_tokenizer(model.config.text)
