"""Hugging Face Hub: loading from a hub cache laid out here (offline), pushing to a fake HfApi,
the model card of every export, and torch.hub from the checkout. No network."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

import hyvl
from hyvl.errors import CheckpointError

REV = "0123456789abcdef0123456789abcdef01234567"
SMALL = {"vision": {"depth": 1}, "text": {"layers": 1}}  # the tiny towers, one block each (fast)


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    torch.manual_seed(0)
    return hyvl.save(
        hyvl.create_model("meru_tiny", **SMALL), tmp_path_factory.mktemp("h") / "export"
    )


@pytest.fixture
def offline_cache(tmp_path, monkeypatch, export):
    """A hub cache with ``hyvl-test/meru-tiny`` at REV, as huggingface_hub lays it out."""
    import huggingface_hub.constants as hf

    cache = tmp_path / "hub"
    repo = cache / "models--hyvl-test--meru-tiny"
    snapshot = repo / "snapshots" / REV
    snapshot.mkdir(parents=True)
    for name in ("model.safetensors", "config.json", "README.md"):
        shutil.copy(export / name, snapshot / name)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REV)
    for key, value in {"HF_HOME": tmp_path, "HF_HUB_CACHE": cache, "HF_HUB_OFFLINE": "1"}.items():
        monkeypatch.setenv(key, str(value))
    # huggingface_hub reads these variables once, at import; this process imported it already.
    monkeypatch.setattr(hf, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf, "HF_HUB_OFFLINE", True)
    return cache


def test_hf_hub_ids_load_from_the_offline_cache(offline_cache, export):
    ref, _, tok = hyvl.load(export)
    model, preprocess, tokenizer = hyvl.load("hf-hub:hyvl-test/meru-tiny")
    same, _, val = hyvl.create_model_and_transforms(f"hf-hub:hyvl-test/meru-tiny@{REV}")
    named, _, _ = hyvl.create_model_and_transforms(
        "meru_tiny", pretrained="hf-hub:hyvl-test/meru-tiny", **SMALL
    )
    ids = hyvl.get_tokenizer("hf-hub:hyvl-test/meru-tiny")(["a red square"])
    assert torch.equal(ids, tok(["a red square"]))
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        want = ref.encode_image(images)
        for m in (model, same, named):
            assert torch.equal(m.encode_image(images), want)
    with pytest.raises(CheckpointError, match="hf-hub:hyvl-test/absent: cannot be downloaded"):
        hyvl.load("hf-hub:hyvl-test/absent")


def test_every_export_carries_a_model_card(export):
    card = (export / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: hyvl\n")
    assert "| lorentz | 1.0000 | 128 | 64 |" in card  # geometry, curvature, embed dim, size
    assert '"name": "meru_tiny"' in card  # the config
    assert "written directly with `hyvl.save`" in card


def test_export_hub_folder_from_a_training_run_has_its_data_and_metrics(export, tmp_path):
    from hyvl.cli.main import main

    run = tmp_path / "run"
    shutil.copytree(export, run / "export")
    (run / "config.yaml").write_text(
        "data:\n  train_shards: shards/train-{000..009}.tar\ntrain:\n  max_steps: 40\n"
    )
    per_class = {f"class {i}": 10.0 * i for i in range(8)}  # not listed on the card
    last = {"top1": 31.25, "per_class": per_class, "per_family": {"things": 31.25}}
    evals = [{"step": 20, "zeroshot": {"top1": 10.0}}, {"step": 40, "zeroshot": last}]
    (run / "eval.jsonl").write_text("".join(json.dumps(e) + "\n" for e in evals))
    out = tmp_path / "hub"
    assert main(["export", "hub", "--checkpoint", str(run), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "config.json",
        "model.safetensors",
    ]
    card = (out / "README.md").read_text()
    assert "- training shards: `shards/train-{000..009}.tar`" in card
    assert "| zeroshot/top1 | 31.25 |" in card and "| step | 40 |" in card
    assert "| zeroshot/per_family/things | 31.25 |" in card and "class 7" not in card
    model, _, _ = hyvl.load(out)
    assert model.geometry == "lorentz"
    assert main(["export", "hub", "--checkpoint", str(run), "--out", str(out)]) == 2  # not empty


def test_push_to_hub_uploads_the_export_and_card(export, monkeypatch):
    import huggingface_hub

    calls = []

    class FakeApi:
        def __init__(self, token=None):
            self.token = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            calls.append(("create", repo_id, exist_ok))

        def upload_folder(self, repo_id, folder_path, commit_message):
            files = {p.name: p.read_bytes() for p in Path(folder_path).iterdir()}
            calls.append(("upload", repo_id, files))
            return "commit-info"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    model, _, _ = hyvl.load(export)
    assert hyvl.push_to_hub(model, "me/meru") == "commit-info"
    assert hyvl.push_to_hub(str(export), "me/meru2") == "commit-info"
    assert [c[:2] for c in calls] == [
        ("create", "me/meru"),
        ("upload", "me/meru"),
        ("create", "me/meru2"),
        ("upload", "me/meru2"),
    ]
    for _, _, files in (calls[1], calls[3]):
        assert set(files) == {"model.safetensors", "config.json", "README.md"}
    assert 'hyvl.load("hf-hub:me/meru")' in calls[1][2]["README.md"].decode()


def test_torch_hub_loads_from_a_local_clone():
    repo = Path(__file__).resolve().parents[1]
    torch.manual_seed(0)
    model = torch.hub.load(str(repo), "meru_tiny", source="local", **SMALL)
    assert model.curv is not None and model.image_size == 64
    model, preprocess, tokenizer = torch.hub.load(
        str(repo), "meru_tiny", source="local", with_transforms=True, **SMALL
    )
    assert tokenizer(["x"]).shape == (1, 32)
