"""``model.init``: where a model's towers start, from any pretrained CLIP a user has.

Sources (:func:`read_source`):

- ``NAME:TAG`` (``ViT-B-16:openai``): an open_clip pretrained model, found through open_clip's
  own table of pretrained weights (``open_clip.get_pretrained_cfg``) and read from the Hugging
  Face Hub cache, or downloaded when online;
- ``hf-hub:ORG/NAME``: an open_clip model on the Hub (``open_clip_model.safetensors`` /
  ``open_clip_pytorch_model.bin``), or a hyvl export there;
- a local open_clip checkpoint (``.pt`` / ``.bin`` / ``.safetensors`` state dict, open_clip's
  ``epoch_N.pt``) or an open_clip model folder;
- a Hugging Face ``CLIPModel`` folder (``config.json`` with ``model_type: clip``; its
  safetensors or weights-only ``pytorch_model.bin``, read directly);
- a hyvl export, training output directory or step checkpoint (a CLIP run's as well; a LoRA
  run's adapters folded in);
- a MERU / HyCoCLIP ``.pth`` (the mapping of :func:`hyvl.models.convert.convert_meru`).

Every source becomes a state dict in hyvl's names, and :func:`initialise` copies it into a
model whose config describes the same towers. What the source does not have starts as the
papers start it (the lift of a Euclidean CLIP: alphas ``embed_dim^-0.5`` and curvature
``curv_init``, MERU Sec. 3.2); what the model has no place for is dropped; both are reported.
A tensor of another shape, or a tower tensor on one side only, is an error naming it.
Nothing is unpickled unsafely: ``torch.load(weights_only=True)`` or safetensors.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hyvl.errors import CheckpointError

log = logging.getLogger(__name__)

HF_HUB_PREFIX = "hf-hub:"
TOWERS = ("visual.", "textual.")
# open_clip's file names on the Hub, safetensors first (open_clip's own preference).
OPENCLIP_HUB_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
# How the papers start what a Euclidean CLIP does not have.
_NEW_INIT = {
    "visual_alpha": "alpha = embed_dim^-0.5 (MERU)",
    "textual_alpha": "alpha = embed_dim^-0.5 (MERU)",
    "log_curv": "c = model.curv_init (MERU)",
    "logit_scale": "1/0.07 (CLIP)",
    "visual_proj.weight": "normal, std width^-0.5 (MERU)",
    "textual_proj.weight": "normal, std width^-0.5 (MERU)",
}


@dataclass
class InitReport:
    """What :func:`initialise` did: the source, and the tensors loaded, new and dropped."""

    source: str
    kind: str
    location: str
    loaded: list[str] = field(default_factory=list)
    new: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "source": self.source,
            "kind": self.kind,
            "location": self.location,
            "loaded": len(self.loaded),
            "new": list(self.new),
            "dropped": list(self.dropped),
        }

    def describe(self) -> str:
        """One line: ``hyvl init: ViT-B-16:openai (open_clip, PATH): 296 tensors loaded; new:
        visual_alpha (...), ...; dropped: none``."""
        new = ", ".join(f"{k} ({_NEW_INIT.get(k, 'its own init')})" for k in self.new) or "none"
        dropped = ", ".join(self.dropped) or "none"
        where = f", {self.location}" if self.location != self.source else ""
        return (
            f"hyvl init: {self.source} ({self.kind}{where}): {len(self.loaded)} tensors loaded; "
            f"new: {new}; dropped: {dropped}"
        )


# ------------------------------------------------------------------------------ sources
def _offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return bool(constants.HF_HUB_OFFLINE) or flag


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0]}" if text else type(err).__name__


def hub_file(label: str, repo_id: str, names: tuple[str, ...]) -> Path:
    """The first of ``names`` in Hub repository ``repo_id``: from the cache, else downloaded
    (unless ``HF_HUB_OFFLINE``). One line naming the source when neither works."""
    from huggingface_hub import hf_hub_download

    last: BaseException | None = None
    for local_only in (True, False):
        if not local_only and _offline():
            break
        for name in names:
            try:
                return Path(hf_hub_download(repo_id, name, local_files_only=local_only))
            except Exception as err:  # huggingface_hub: offline, 404, auth, HTTP, ...
                last = err
    how = "HF_HUB_OFFLINE is set" if _offline() else "the download failed"
    raise CheckpointError(
        f"{label}: not in the Hugging Face cache and {how} ({repo_id}: {', '.join(names)}; "
        f"{_first_line(last) if last else 'no file'}); run once online, or give a local file"
    )


def _openclip_name(label: str, spec: str) -> Path:
    """``NAME:TAG`` through open_clip's table of pretrained weights."""
    import open_clip

    name, _, tag = spec.partition(":")
    cfg = open_clip.get_pretrained_cfg(name, tag)
    if not cfg:
        tags = open_clip.list_pretrained_tags_by_model(name)
        known = f"its tags: {', '.join(tags)}" if tags else "no open_clip model has that name"
        raise CheckpointError(
            f"{label}: open_clip has no pretrained {name!r} tagged {tag!r} ({known})"
        )
    if cfg.get("file"):
        return Path(cfg["file"])
    if cfg.get("hf_hub"):
        hub = cfg["hf_hub"]
        if hub.endswith("/"):  # open_clip: "org/name/" means its default file names
            repo_id, names = hub[:-1], OPENCLIP_HUB_FILES
        else:
            repo_id, filename = os.path.split(hub)
            safe = filename.replace("open_clip_pytorch_model.bin", "open_clip_model.safetensors")
            names = tuple(dict.fromkeys((safe, filename)))
        return hub_file(label, repo_id, names)
    if _offline():
        raise CheckpointError(f"{label}: open_clip has it only by URL and HF_HUB_OFFLINE is set")
    from open_clip.pretrained import download_pretrained_from_url

    try:
        return Path(download_pretrained_from_url(cfg["url"]))
    except Exception as err:
        raise CheckpointError(f"{label}: download failed ({_first_line(err)})") from err


def is_name(spec: str) -> bool:
    """``hf-hub:ORG/NAME`` or open_clip's ``NAME:TAG`` (when no such local path exists)."""
    if spec.startswith(HF_HUB_PREFIX):
        return True
    return bool(re.fullmatch(r"[\w.\-]+:[\w.\-]+", spec)) and not Path(spec).exists()


def hf_clip_to_openclip(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A transformers ``CLIPModel`` state dict in open_clip's names (same layout: pre-norm
    blocks, CLS pooling after ``post_layernorm``, EOS pooling of the text; q, k and v
    projections stacked into open_clip's ``in_proj``)."""
    out: dict[str, torch.Tensor] = {}
    stacked: dict[str, dict[str, torch.Tensor]] = {}
    towers = {"vision_model.": "visual.", "text_model.": ""}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue  # a buffer of arange(n)
        if key == "visual_projection.weight":
            out["visual.proj"] = value.t()
            continue
        if key == "text_projection.weight":
            out["text_projection"] = value.t()
            continue
        if key == "logit_scale":
            out["logit_scale"] = value
            continue
        prefix = next((p for p in towers if key.startswith(p)), None)
        if prefix is None:
            out[key] = value  # reported as dropped (or as a tower mismatch) downstream
            continue
        to, rest = towers[prefix], key[len(prefix) :]
        if m := re.match(r"encoder\.layers\.(\d+)\.(.*)", rest):
            block, part = m.groups()
            base = f"{to}transformer.resblocks.{block}."
            if qkv := re.match(r"self_attn\.([qkv])_proj\.(weight|bias)", part):
                stacked.setdefault(f"{base}attn.in_proj_{qkv.group(2)}", {})[qkv.group(1)] = value
                continue
            for old, new in (
                ("self_attn.out_proj.", "attn.out_proj."),
                ("layer_norm1.", "ln_1."),
                ("layer_norm2.", "ln_2."),
                ("mlp.fc1.", "mlp.c_fc."),
                ("mlp.fc2.", "mlp.c_proj."),
            ):
                part = part.replace(old, new)
            out[base + part] = value
            continue
        for old, new in (
            ("embeddings.class_embedding", "class_embedding"),
            ("embeddings.patch_embedding.", "conv1."),
            ("embeddings.position_embedding.weight", "positional_embedding"),
            ("embeddings.token_embedding.", "token_embedding."),
            ("pre_layrnorm.", "ln_pre."),
            ("post_layernorm.", "ln_post."),
            ("final_layer_norm.", "ln_final."),
        ):
            if rest.startswith(old):
                rest = new + rest[len(old) :]
                break
        out[to + rest] = value
    for name, parts in stacked.items():
        out[name] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


def _hyvl_state(path: Path) -> dict[str, torch.Tensor]:
    from hyvl.models.checkpoint import load_model

    return dict(load_model(path).state_dict())


def _state_of_file(label: str, path: Path) -> tuple[str, dict[str, torch.Tensor]]:
    from hyvl.models.convert import convert_meru, is_openclip_state, openclip_to_hyvl
    from hyvl.models.weights import read_state_dict

    state = read_state_dict(path)
    if is_openclip_state(state):
        return "open_clip checkpoint", openclip_to_hyvl(state)
    if "textual.token_embed.weight" in state:
        kind = "MERU / HyCoCLIP checkpoint" if "curv" in state else "MERU CLIP checkpoint"
        return kind, convert_meru(state, path)[1]
    if any(k.startswith("vision_model.") for k in state):
        return "Hugging Face CLIP weights", openclip_to_hyvl(hf_clip_to_openclip(state))
    if any(k.startswith("visual.vit.") for k in state):
        return "hyvl weights", state
    raise CheckpointError(
        f"{label}: {path} is none of the known pretrained formats (an open_clip, Hugging Face "
        "CLIP, MERU / HyCoCLIP or hyvl state dict)"
    )


def _hf_weights(label: str, path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a transformers ``save_pretrained`` folder: ``model.safetensors``, its
    shards (``model.safetensors.index.json``) or ``pytorch_model.bin`` (weights only). Read
    directly rather than through ``CLIPModel.from_pretrained``: the same tensors without
    building a second model, and transformers is not needed."""
    from hyvl.models.weights import read_state_dict

    index = path / "model.safetensors.index.json"
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as err:
            raise CheckpointError(f"{label}: {index} is not a shard index ({err})") from err
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(read_state_dict(path / shard))
        return state
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (path / name).is_file():
            return read_state_dict(path / name)
    raise CheckpointError(
        f"{label}: a Hugging Face CLIP folder without weights (model.safetensors, its shard "
        "index or pytorch_model.bin)"
    )


def _state_of_dir(label: str, path: Path) -> tuple[str, dict[str, torch.Tensor]]:
    config = path / "config.json"
    meta = {}
    if config.is_file():
        try:
            meta = json.loads(config.read_text())
        except (OSError, ValueError) as err:
            raise CheckpointError(f"{label}: {config} is not readable JSON ({err})") from err
    if isinstance(meta, dict) and meta.get("model_type") == "clip":
        from hyvl.models.convert import openclip_to_hyvl

        return "Hugging Face CLIPModel", openclip_to_hyvl(
            hf_clip_to_openclip(_hf_weights(label, path))
        )
    for name in OPENCLIP_HUB_FILES:
        if (path / name).is_file():
            return _state_of_file(label, path / name)
    return "hyvl model", _hyvl_state(path)


def read_source(spec: str, key: str = "model.init") -> tuple[str, str, dict[str, torch.Tensor]]:
    """``(kind, location, state dict in hyvl's names)`` of a ``model.init`` value."""
    label = f"{key}={spec}"
    path = Path(spec).expanduser()
    if path.is_dir():
        kind, state = _state_of_dir(label, path)
        return kind, str(path), state
    if path.is_file():
        kind, state = _state_of_file(label, path)
        return kind, str(path), state
    if spec.startswith(HF_HUB_PREFIX):
        repo = spec[len(HF_HUB_PREFIX) :]
        try:
            file = hub_file(label, repo, OPENCLIP_HUB_FILES)
        except CheckpointError as err:
            from hyvl.hub import download

            try:  # a hyvl export on the Hub
                folder = download(repo)
            except CheckpointError:
                raise err from None
            return "hyvl model (Hub)", str(folder), _hyvl_state(folder)
        kind, state = _state_of_file(label, file)
        return f"{kind} (Hub)", str(file), state
    if is_name(spec):
        file = _openclip_name(label, spec)
        kind, state = _state_of_file(label, file)
        return f"{kind} (open_clip {spec})", str(file), state
    raise CheckpointError(
        f"{label}: no such file or directory, and not an open_clip NAME:TAG (ViT-B-16:openai) "
        "or hf-hub:ORG/NAME"
    )


# ------------------------------------------------------------------------------ loading
def init_spec(config) -> tuple[str | None, str]:
    """``(value, key)`` of a model config's init source: ``model.init``, or its older name
    ``model.openclip_init`` (the same loader; both at once must agree)."""
    if config.init and config.openclip_init and config.init != config.openclip_init:
        from hyvl.errors import ConfigError

        raise ConfigError(
            f"model.init={config.init!r} and model.openclip_init={config.openclip_init!r} "
            "disagree: give model.init only (openclip_init is its older name)"
        )
    if config.init:
        return config.init, "model.init"
    return config.openclip_init, "model.openclip_init"


def initialise(model, spec: str, key: str = "model.init") -> InitReport:
    """Copy the towers (and whatever of the lift the source has) of ``spec`` into ``model``."""
    kind, location, state = read_source(spec, key)
    label = f"{key}={spec}"
    own = model.state_dict()
    name = model.config.name
    mismatched = [
        f"{k} is {tuple(v.shape)} there, {tuple(own[k].shape)} in the model"
        for k, v in state.items()
        if k in own and own[k].shape != v.shape
    ]
    if mismatched:
        more = f" (and {len(mismatched) - 1} more)" if len(mismatched) > 1 else ""
        raise CheckpointError(
            f"{label}: shapes differ from model config {name!r}: {mismatched[0]}{more}; the model "
            "config must describe the source's towers"
        )
    absent = [k for k in own if k.startswith(TOWERS) and k not in state]
    extra = [k for k in state if k.startswith(TOWERS) and k not in own]
    if absent or extra:
        raise CheckpointError(
            f"{label}: its towers do not fit model config {name!r} (a different depth or kind "
            f"of tower?): the model's {sorted(absent)[:3]} are not in it, its "
            f"{sorted(extra)[:3]} are not in the model"
        )
    loadable = {k: v for k, v in state.items() if k in own}
    report = InitReport(
        source=spec,
        kind=kind,
        location=location,
        loaded=sorted(loadable),
        # the pixel statistics are the model config's when the source has none: not weights
        new=[k for k in own if k not in state and k not in ("pixel_mean", "pixel_std")],
        dropped=sorted(k for k in state if k not in own),
    )
    model.load_state_dict(loadable, strict=False)
    if "pixel_mean" in loadable:  # the statistics the source was trained with
        model.config.pixel_mean = tuple(float(v) for v in loadable["pixel_mean"].flatten())
        model.config.pixel_std = tuple(float(v) for v in loadable["pixel_std"].flatten())
    log.info("%s", report.describe())
    log.debug("%s: loaded %s", label, report.loaded)
    return report
