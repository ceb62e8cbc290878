"""ONNX export of the two towers: ``image.onnx`` (images -> embeddings), ``text.onnx`` (tokens -> embeddings).

Each graph holds the whole encoder: pixel normalisation, tower, projection and the lift (alpha
and ``exp_map0`` for Lorentz models, L2 normalisation for CLIP), with a dynamic batch axis, so
onnxruntime gives what ``model.encode_image`` / ``encode_text`` give. Inputs: ``images`` float32
(B, 3, H, W) in [0, 1] and ``tokens`` int64 (B, L) from the model's tokenizer.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from hyvl.lorentz import EXP_MAP_CAP

OPSET = 17


def _sinhc(r: torch.Tensor) -> torch.Tensor:
    # sinh(r) / r written with exp: the TorchScript ONNX exporter has no aten::sinh. Above
    # r = 1e-3 the exp difference loses at most ~1e-7 absolute in sinh, i.e. ~1e-7 / sqrt(c) in
    # the embedding; below, the Taylor series of hyvl.lorentz (exact there, no 0 / 0).
    small = r < 1e-3
    safe = torch.where(small, torch.ones_like(r), r)
    r2 = r * r
    series = 1.0 + r2 / 6.0 + r2 * r2 / 120.0
    return torch.where(small, series, (torch.exp(safe) - torch.exp(-safe)) / (2.0 * safe))


class _Encoder(nn.Module):
    """One tower of ``model`` with its lift, written without sinh and without autocast."""

    def __init__(self, model, modality: str):
        super().__init__()
        self.model, self.modality = model, modality

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        if self.modality == "image":
            if m.normalize_inside:
                x = (x - m.pixel_mean) / m.pixel_std
            feats, log_alpha = m.visual_proj(m.visual(x)), getattr(m, "visual_alpha", None)
        else:
            feats, log_alpha = m.textual_proj(m.textual(x)), getattr(m, "textual_alpha", None)
        feats = feats.float()
        if not m.space.hyperbolic:
            return F.normalize(feats, dim=-1)
        v = feats * log_alpha.clamp(max=0.0).exp()
        r = m.curv.sqrt() * v.norm(dim=-1, keepdim=True)
        # MERU's overflow cap, as hyvl.lorentz.exp_map0: sinh at min(r, cap), direction kept.
        ratio = torch.where(r > EXP_MAP_CAP, EXP_MAP_CAP / r.clamp(min=1e-30), torch.ones_like(r))
        return v * _sinhc(r.clamp(max=EXP_MAP_CAP)) * ratio


def export_onnx(model, out: str | Path) -> dict[str, str]:
    """Write ``out/image.onnx``, ``out/text.onnx`` and ``out/onnx.json``; returns the paths.

    Exported with torch's TorchScript-based exporter: on this project's CPU it took ~5 s for a
    tiny model where the dynamo exporter took ~45 s, and both agree with torch within 3e-7.
    """
    from hyvl.geometry import require_single_space

    require_single_space(getattr(model, "module", model), "ONNX export (one hyperboloid's lift)")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model = getattr(model, "module", model).float().eval()
    size, context = model.image_size, model.context_length
    examples = {
        "image": torch.rand(2, 3, size, size),
        "text": torch.zeros(2, context, dtype=torch.long),
    }
    names = {"image": "images", "text": "tokens"}
    paths = {}
    for modality, example in examples.items():
        path = out / f"{modality}.onnx"
        with warnings.catch_warnings(), torch.no_grad():
            # The legacy exporter is deprecated (the notice is not for our users) and timm's
            # image-size assert is traced as a constant: the size is fixed in the graph anyway.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                _Encoder(model, modality),
                (example,),
                str(path),
                input_names=[names[modality]],
                output_names=["embeddings"],
                dynamic_axes={names[modality]: {0: "batch"}, "embeddings": {0: "batch"}},
                opset_version=OPSET,
                dynamo=False,
            )
        paths[modality] = str(path)
    meta = {
        "geometry": model.geometry,
        "curv": None if model.curv is None else model.curv.item(),
        "image_size": size,
        "context_length": context,
        "inputs": {"image": "images float32 (B, 3, H, W) in [0, 1]", "text": "tokens int64 (B, L)"},
        "output": "embeddings float32 (B, D)",
        "opset": OPSET,
    }
    (out / "onnx.json").write_text(json.dumps(meta, indent=2) + "\n")
    return paths


def check_onnx(model, out: str | Path, batch: int = 3) -> dict[str, float]:
    """Max |onnxruntime - torch| of each graph in ``out`` on a batch of ``batch`` (not the
    exported batch size of 2, so the dynamic axis is exercised)."""
    import onnxruntime as ort

    from hyvl.models.tokenizer import get_tokenizer

    out = Path(out)
    model = getattr(model, "module", model).float().eval()
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(batch, 3, model.image_size, model.image_size, generator=gen)
    if not model.normalize_inside:
        images = (images - model.pixel_mean) / model.pixel_std
    texts = [f"a photo of {i} things" for i in range(batch)]
    tokens = get_tokenizer(model.config.text)(texts)
    with torch.no_grad():
        want = {"image": model.encode_image(images), "text": model.encode_text(tokens)}
    feeds = {"image": {"images": images.numpy()}, "text": {"tokens": tokens.numpy()}}
    diffs = {}
    for modality in ("image", "text"):
        session = ort.InferenceSession(str(out / f"{modality}.onnx"))
        got = torch.from_numpy(session.run(None, feeds[modality])[0])
        diffs[modality] = float((got - want[modality]).abs().max())
    return diffs
