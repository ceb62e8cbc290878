"""hyvl.save / hyvl.load: exports, training dirs, MERU / HyCoCLIP .pth files, and clear errors."""

import pickle
import re

import pytest
import torch

import hyvl
from hyvl.config import IMAGENET_MEAN, IMAGENET_STD
from hyvl.errors import CheckpointError


def test_round_trip_is_bitwise(tmp_path):
    torch.manual_seed(0)
    model = hyvl.create_model("hycoclip_tiny").eval()
    hyvl.save(model, tmp_path / "export")
    loaded, preprocess, tokenizer = hyvl.load(tmp_path / "export")
    assert not loaded.training
    from PIL import Image

    image = preprocess(Image.new("RGB", (80, 70), (200, 30, 30))).unsqueeze(0)
    assert image.shape == (1, 3, 64, 64) and image.min() >= 0 and image.max() <= 1
    tok = tokenizer(["a red circle"])
    with torch.no_grad():
        assert torch.equal(model.encode_image(image), loaded.encode_image(image))
        assert torch.equal(model.encode_text(tok), loaded.encode_text(tok))
    assert torch.equal(model.curv, loaded.curv)


def test_training_output_dir_resolves_to_its_export(tmp_path):
    model = hyvl.create_model("clip_tiny")
    hyvl.save(model, tmp_path / "run" / "export")
    loaded, _, _ = hyvl.load(tmp_path / "run")
    assert loaded.geometry == "euclidean" and loaded.curv is None


def _meru_state(model):
    """The model's weights under MERU's / HyCoCLIP's key names and conventions."""
    out = {}
    for key, value in model.state_dict().items():
        new = key
        new = new.replace("visual.vit.", "visual.")
        new = new.replace("textual.transformer.transformer.resblocks.", "textual.resblocks.")
        new = new.replace("textual.transformer.token_embedding.", "textual.token_embed.")
        new = new.replace("textual.transformer.positional_embedding", "textual.posit_embed")
        new = new.replace("textual.transformer.ln_final.", "textual.ln_final.")
        new = {"log_curv": "curv", "log_logit_scale": "logit_scale"}.get(new, new)
        out[new] = value.clone()
    out["textual.attn_mask"] = torch.ones(8, 8, dtype=torch.bool).triu(1)
    out["pixel_mean"] = out["pixel_mean"].view(3, 1, 1)
    out["pixel_std"] = out["pixel_std"].view(3, 1, 1)
    return out


def _small_meru_like(curv=0.7):
    torch.manual_seed(1)
    return hyvl.create_model(
        {
            "geometry": "lorentz",
            "embed_dim": 32,
            "curv_init": curv,
            "vision": {"timm_name": "vit_small_mocov3_patch16_224", "image_size": 32, "depth": 1},
            "text": {"context_length": 8, "vocab_size": 100, "width": 64, "layers": 1, "heads": 1},
        }
    ).eval()


def test_meru_pth_is_converted(tmp_path):
    model = _small_meru_like()
    torch.save({"model": _meru_state(model), "iteration": 10}, tmp_path / "meru.pth")
    loaded, _, _ = hyvl.load(tmp_path / "meru.pth")
    assert loaded.geometry == "lorentz"
    assert loaded.config.vision.depth == 1 and loaded.config.embed_dim == 32
    images = torch.rand(2, 3, 32, 32)
    tokens = torch.randint(1, 99, (2, 8))
    with torch.no_grad():
        assert torch.allclose(loaded.encode_image(images), model.encode_image(images), atol=1e-6)
        assert torch.allclose(loaded.encode_text(tokens), model.encode_text(tokens), atol=1e-6)
    assert abs(loaded.curv.item() - 0.7) < 1e-6


def test_hycoclip_pixel_mean_bug_is_repaired(tmp_path, caplog):
    state = _meru_state(_small_meru_like())
    state["pixel_mean"] = torch.tensor(IMAGENET_STD).view(3, 1, 1)  # as released
    torch.save({"model": state}, tmp_path / "hycoclip.pth")
    with caplog.at_level("WARNING"):
        loaded, _, _ = hyvl.load(tmp_path / "hycoclip.pth")
    assert torch.allclose(loaded.pixel_mean.flatten(), torch.tensor(IMAGENET_MEAN))
    assert "HyCoCLIP bug" in caplog.text


def test_errors_name_the_file_and_the_problem(tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        hyvl.load(tmp_path / "missing.pth")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=re.escape(str(tmp_path / "empty"))):
        hyvl.load(tmp_path / "empty")
    (tmp_path / "weights.npz").write_bytes(b"x")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        hyvl.load(tmp_path / "weights.npz")
    torch.save({"model": {"foo.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="not a MERU / HyCoCLIP checkpoint"):
        hyvl.load(tmp_path / "other.pth")


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_arbitrary_pickles_are_refused(tmp_path):
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"model": Evil()}, f)
    with pytest.raises(CheckpointError, match="weights-only"):
        hyvl.load(tmp_path / "evil.pth")


def test_export_with_mismatched_weights_is_an_error(tmp_path):
    hyvl.save(hyvl.create_model("meru_tiny"), tmp_path / "a")
    hyvl.save(hyvl.create_model("clip_tiny"), tmp_path / "b")
    (tmp_path / "b" / "model.safetensors").replace(tmp_path / "a" / "model.safetensors")
    with pytest.raises(CheckpointError, match="do not match config.json"):
        hyvl.load(tmp_path / "a")
