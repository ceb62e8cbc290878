"""ONNX export: both towers run in onnxruntime within 1e-4 of torch, at any batch size."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

import hyvl
from hyvl.cli.main import main


@pytest.mark.parametrize("name", ["meru_tiny", "clip_tiny"])
def test_onnx_towers_match_torch(name, tmp_path):
    torch.manual_seed(0)
    model = hyvl.create_model(name, vision={"depth": 1}, text={"layers": 1})
    hyvl.save(model, tmp_path / "ckpt")
    out = tmp_path / "onnx"
    args = ["export", "onnx", "--checkpoint", str(tmp_path / "ckpt"), "--out", str(out)]
    assert main([*args, "--check", "--json", str(tmp_path / "r.json")]) == 0
    result = json.loads((tmp_path / "r.json").read_text())
    assert set(result["files"]) == {"image", "text"}
    assert max(result["max_abs_diff"].values()) < 1e-4
    meta = json.loads((out / "onnx.json").read_text())
    assert (meta["curv"] is None) == (name == "clip_tiny")
    # a batch size other than the exported one, and real tokens
    model.eval()
    images = torch.rand(5, 3, 64, 64)
    tokens = hyvl.get_tokenizer(name)(["a red square", "two blue circles", "x", "", "shape"])
    got_img = ort.InferenceSession(str(out / "image.onnx")).run(None, {"images": images.numpy()})
    got_txt = ort.InferenceSession(str(out / "text.onnx")).run(None, {"tokens": tokens.numpy()})
    with torch.no_grad():
        np.testing.assert_allclose(got_img[0], model.encode_image(images).numpy(), atol=1e-4)
        np.testing.assert_allclose(got_txt[0], model.encode_text(tokens).numpy(), atol=1e-4)
