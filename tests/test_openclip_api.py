"""The open_clip-shaped API against open_clip's own conventions (a tiny open_clip model, no download)."""

from __future__ import annotations

import json
import logging
import math
import sys

import pytest
import torch
from PIL import Image

import hyvl
from hyvl.errors import CheckpointError

SMALL = {"vision": {"depth": 1}, "text": {"layers": 1}}  # the tiny towers, one block each (fast)


@pytest.fixture(scope="module")
def open_clip_tiny(tmp_path_factory):
    import open_clip

    folder = tmp_path_factory.mktemp("oc_cfg")
    cfg = {
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
        "text_cfg": {
            "context_length": 77,
            "vocab_size": 49408,
            "width": 64,
            "heads": 2,
            "layers": 1,
        },
    }
    (folder / "hyvl-test-tiny.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(folder)
    logging.getLogger().setLevel(logging.ERROR)  # "no pretrained weights loaded": intended
    model, train, val = open_clip.create_model_and_transforms("hyvl-test-tiny", pretrained=None)
    return model, train, val, open_clip.get_tokenizer("hyvl-test-tiny")


@pytest.fixture(scope="module")
def meru_export(tmp_path_factory):
    torch.manual_seed(0)
    model = hyvl.create_model("meru_tiny", **SMALL)
    return hyvl.save(model, tmp_path_factory.mktemp("exp") / "meru_tiny")


def test_create_model_and_transforms_matches_open_clip_shapes(open_clip_tiny):
    oc_model, oc_train, oc_val, oc_tok = open_clip_tiny
    torch.manual_seed(0)
    model, train, val = hyvl.create_model_and_transforms("meru_tiny", **SMALL)
    picture = Image.new("RGB", (96, 70), "red")
    # the same triple, in the same modes, with the same output shapes per image
    assert model.training == oc_model.training
    assert val(picture).shape == (3, 64, 64) and train(picture).shape == (3, 64, 64)
    assert oc_val(picture).shape == (3, 32, 32)
    # logit_scale: a parameter holding the log, exp() = 1/0.07 at init in both
    assert isinstance(model.logit_scale, torch.nn.Parameter)
    assert math.isclose(
        model.logit_scale.exp().item(), oc_model.logit_scale.exp().item(), rel_tol=1e-6
    )
    assert math.isclose(model.logit_scale_exp.item(), 1 / 0.07, rel_tol=1e-5)
    # the tokenizer: same call, same ids as open_clip's at the same context length
    tok = hyvl.get_tokenizer("meru_tiny")
    texts = ["a red square", "a photo of a cat"]
    ids = tok(texts)
    assert ids.dtype == oc_tok(texts).dtype == torch.long
    assert ids.shape == (2, 32)
    assert torch.equal(ids[:, :10], oc_tok(texts)[:, :10])
    images = torch.stack([val(picture), val(Image.new("RGB", (64, 64), "blue"))])
    with torch.no_grad():
        img, txt = model.encode_image(images), model.encode_text(ids)
    assert img.shape == (2, 128) and txt.shape == (2, 128)


def test_similarity_is_larger_for_closer_in_both_geometries(open_clip_tiny):
    oc_model, _, oc_val, oc_tok = open_clip_tiny
    torch.manual_seed(0)
    models = {name: hyvl.create_model(name, **SMALL).eval() for name in ("meru_tiny", "clip_tiny")}
    for name, model in models.items():
        with torch.no_grad():
            emb = model.encode_text(hyvl.get_tokenizer(name)(["a", "b c", "d e f"]))
        sim = hyvl.similarity(emb, emb, model)
        assert sim.shape == (3, 3)
        assert torch.equal(sim.argmax(dim=1), torch.arange(3))  # each is nearest to itself
        if name == "meru_tiny":
            want = -hyvl.lorentz.pairwise_dist(emb, emb, model.curv)
            torch.testing.assert_close(sim, want)
            assert not torch.allclose(sim, emb @ emb.T)  # the dot product would be wrong here
    # CLIP: the same as open_clip's convention, normalised features and a dot product
    with torch.no_grad():
        a = oc_model.encode_text(oc_tok(["a", "b"]), normalize=True)
    torch.testing.assert_close(hyvl.similarity(a, a, models["clip_tiny"]), a @ a.T)


def test_normalize_true_moves_normalisation_into_the_transform():
    torch.manual_seed(0)
    model, _, val = hyvl.create_model_and_transforms("meru_tiny", **SMALL)
    model.eval()
    torch.manual_seed(0)
    normed, _, normed_val = hyvl.create_model_and_transforms("meru_tiny", normalize=True, **SMALL)
    normed.eval()
    assert type(normed_val.transforms[-1]).__name__ == "Normalize"
    assert not normed.normalize_inside and model.normalize_inside
    picture = Image.new("RGB", (80, 64), (30, 200, 90))
    with torch.no_grad():
        want = model.encode_image(val(picture)[None])
        got = normed.encode_image(normed_val(picture)[None])
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
        # normalised pixels into a model that normalises: refused, not silently shifted
        with pytest.raises(ValueError, match="normalised already"):
            model.encode_image(normed_val(picture)[None])


def test_pretrained_path_and_architecture_check(meru_export):
    model, _, val = hyvl.create_model_and_transforms(
        "meru_tiny", pretrained=str(meru_export), **SMALL
    )
    direct, _, _ = hyvl.create_model_and_transforms(meru_export)
    ref, _, tok = hyvl.load(meru_export)
    assert not model.training  # weights loaded: ready for inference
    ids = hyvl.get_tokenizer(meru_export)(["x"])
    assert torch.equal(ids, tok(["x"]))
    with torch.no_grad():
        for m in (model, direct):
            torch.testing.assert_close(m.encode_text(ids), ref.encode_text(ids))
    with pytest.raises(CheckpointError, match="is not a 'clip_tiny' model; differs in geometry"):
        hyvl.create_model_and_transforms("clip_tiny", pretrained=meru_export, **SMALL)
    with pytest.raises(CheckpointError, match="pass pretrained= only with a model name"):
        hyvl.create_model_and_transforms(str(meru_export), pretrained=str(meru_export))


def test_exports_with_the_old_parameter_name_still_load(meru_export, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    old = tmp_path / "old"
    shutil.copytree(meru_export, old)
    state = load_file(str(old / "model.safetensors"))
    state["log_logit_scale"] = state.pop("logit_scale") + 0.5
    save_file(state, str(old / "model.safetensors"))
    model, _, _ = hyvl.load(old)
    ref, _, _ = hyvl.load(meru_export)
    assert math.isclose(model.logit_scale.item(), ref.logit_scale.item() + 0.5, rel_tol=1e-6)
    assert model.log_logit_scale is model.logit_scale  # the old attribute name still works


def test_models_submodules_are_lazy_attributes(monkeypatch):
    import hyvl.models

    monkeypatch.delitem(sys.modules, "hyvl.models.tokenizer")
    monkeypatch.delattr(hyvl.models, "tokenizer")
    assert callable(hyvl.models.tokenizer.get_tokenizer)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        hyvl.models.nonexistent  # noqa: B018


def test_training_outputs_keep_the_multiplier():
    # forward()'s Embeddings and the objective's diagnostic (metrics.jsonl's logit_scale) are the
    # multiplier exp(model.logit_scale), as open_clip's forward returns logit_scale.exp()
    from hyvl.config import ObjectiveConfig
    from hyvl.objectives import compute_objective

    torch.manual_seed(0)
    model = hyvl.create_model("meru_tiny", **SMALL)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(20.0))
        emb = model(torch.rand(2, 3, 64, 64), hyvl.get_tokenizer("meru_tiny")(["a", "b"]))
        out = compute_objective(
            emb, ObjectiveConfig(kind="meru"), "lorentz", distributed_gather=False
        )
    assert math.isclose(emb.logit_scale.item(), 20.0, rel_tol=1e-5)
    assert math.isclose(out["logit_scale"].item(), 20.0, rel_tol=1e-5)


def test_atmg_models_are_scored_by_the_angle_at_the_image():
    # ATMG trains angles only and its authors evaluate by oxy_angle(image, text)
    # (samgregoost/atmg atmg/evaluation/classification.py); the distance can rank the other way.
    from hyvl.config import ModelConfig
    from hyvl.evaluation.embed import similarity as eval_similarity
    from hyvl.evaluation.retrieval import retrieval_metrics

    atmg = hyvl.create_model("atmg_tiny", **SMALL).eval()
    e = torch.eye(atmg.config.embed_dim)
    images = torch.stack([2.0 * e[0], 2.0 * e[2]])
    # text 0 lies back towards the origin from image 0 (large exterior angle at the image),
    # text 1 just beyond image 0 on its ray (small angle, but the nearer point)
    texts = torch.stack([0.2 * e[1], 2.1 * e[0] + 0.05 * e[1]])
    want = hyvl.lorentz.pairwise_oxy_angle(images, texts, atmg.curv)
    for scores in (hyvl.similarity(images, texts, atmg), eval_similarity(atmg, images, texts)):
        torch.testing.assert_close(scores, want)
    assert want[0, 0] > want[0, 1]
    distance = -hyvl.lorentz.pairwise_dist(images, texts, atmg.curv)
    assert distance[0, 1] > distance[0, 0]  # -distance (a MERU model's score) ranks them reversed
    r_at_1 = retrieval_metrics(images, texts, [0, 1], atmg)["image_to_text"]["R@1"]
    meru = hyvl.create_model("meru_tiny", curv_init=0.1, **SMALL).eval()
    assert r_at_1 > retrieval_metrics(images, texts, [0, 1], meru)["image_to_text"]["R@1"]
    assert atmg.config.score == "atmg_angle"  # what the named atmg_* models set
    with pytest.raises(hyvl.errors.ConfigError, match="atmg_angle"):
        ModelConfig(geometry="euclidean", score="atmg_angle")


def test_atmg_models_refuse_distance_ordered_search(monkeypatch, tmp_path):
    # an index or a geodesic walk ordered by distance would rank by what ATMG never trains
    from argparse import Namespace

    from hyvl.cli import traverse as traverse_cli
    from hyvl.errors import HyvlError
    from hyvl.search import index as index_mod

    atmg = hyvl.create_model("atmg_tiny", **SMALL).eval()
    monkeypatch.setattr(hyvl, "load", lambda *a, **k: (atmg, None, None))
    (tmp_path / "t.txt").write_text("a dog\n")
    one_line = r"^hyvl index \(search by inner products\) orders by the distance, [^\n]*'atmg_angle'[^\n]*$"
    with pytest.raises(HyvlError, match=one_line):
        index_mod.build_index("ckpt", texts=tmp_path / "t.txt")
    args = Namespace(index=None, checkpoint="ckpt", texts=str(tmp_path / "t.txt"))
    with pytest.raises(HyvlError, match=r"^hyvl traverse \(geodesics of one hyperboloid\) orders"):
        traverse_cli.run(args)
