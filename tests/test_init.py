"""model.init: towers from an open_clip name (read from the Hub cache), a Hugging Face CLIPModel
folder, a hyvl export and a MERU .pth, with the report of what was loaded, new and dropped."""

import pytest
import torch

import hyvl
from hyvl.errors import CheckpointError
from tests.test_checkpoint import _inputs, _reference_pth, _small_openclip

# The architecture of test_checkpoint's small open_clip CLIP (embed 32, one block per tower).
SMALL = {
    "embed_dim": 32,
    "vision": {"timm_name": "vit_base_patch16_clip_224", "image_size": 32, "width": 64}
    | {"depth": 1, "heads": 2},
    "text": {"context_length": 8, "vocab_size": 100, "width": 64, "layers": 1, "heads": 1},
}
LIFT = ["visual_alpha", "textual_alpha", "log_curv"]


def test_hugging_face_clip_folder_gives_transformers_features(tmp_path):
    from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": 100, "hidden_size": 64, "intermediate_size": 256}
        | {"num_hidden_layers": 1, "num_attention_heads": 1, "max_position_embeddings": 8}
        | {"eos_token_id": 99, "bos_token_id": 98, "pad_token_id": 0},
        vision_config={"hidden_size": 64, "intermediate_size": 256, "num_hidden_layers": 1}
        | {"num_attention_heads": 2, "image_size": 32, "patch_size": 16},
        projection_dim=32,
    )
    hf = CLIPModel(config).eval()
    with torch.no_grad():  # random everything, so a wrongly mapped weight shows
        for p in hf.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    hf.save_pretrained(tmp_path / "hf")
    spec = SMALL | {
        "geometry": "euclidean",
        "init": str(tmp_path / "hf"),
        "pixel_mean": list(OPENAI_DATASET_MEAN),
        "pixel_std": list(OPENAI_DATASET_STD),
        "vision": SMALL["vision"] | {"timm_name": "vit_base_patch16_clip_quickgelu_224"},
        "text": SMALL["text"] | {"quick_gelu": True},  # CLIPConfig's hidden_act
    }
    model = hyvl.create_model(spec).eval()
    images, tokens = _inputs()  # EOS = 99, the largest id, once per row
    norm = (images - torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        OPENAI_DATASET_STD
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        img = hf.visual_projection(hf.vision_model(pixel_values=norm).pooler_output)
        txt = hf.text_projection(hf.text_model(input_ids=tokens).pooler_output)
        want_img = torch.nn.functional.normalize(img, dim=-1)
        want_txt = torch.nn.functional.normalize(txt, dim=-1)
        torch.testing.assert_close(model.encode_image(images), want_img, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.encode_text(tokens), want_txt, atol=1e-5, rtol=1e-5)
    report = model.init_report
    assert report.kind == "Hugging Face CLIPModel" and report.new == [] and report.dropped == []
    assert "visual.vit.blocks.0.attn.qkv.weight" in report.loaded
    # into MERU: the lift is new, at MERU's init
    meru = hyvl.create_model(spec | {"geometry": "lorentz"})
    assert meru.init_report.new == LIFT
    assert torch.equal(meru.visual_alpha, torch.tensor(32**-0.5).log())
    assert "3 new" not in meru.init_report.describe()  # names them, with their init
    assert "visual_alpha (alpha = embed_dim^-0.5 (MERU))" in meru.init_report.describe()


def test_hyvl_clip_export_and_meru_pth_start_a_meru_model(tmp_path):
    torch.manual_seed(1)
    clip = hyvl.create_model(SMALL | {"geometry": "euclidean", "pixel_mean": [0.5] * 3})
    hyvl.save(clip, tmp_path / "clip")
    meru = hyvl.create_model(SMALL | {"init": str(tmp_path / "clip")})
    assert meru.init_report.new == LIFT and meru.init_report.dropped == []
    for name, value in clip.state_dict().items():
        assert torch.equal(meru.state_dict()[name], value), name
    assert meru.config.pixel_mean == (0.5, 0.5, 0.5)  # the source's statistics, kept
    hyvl.save(meru, tmp_path / "meru")
    assert hyvl.load(tmp_path / "meru")[0].config.init is None  # the export needs no source

    # a MERU .pth: its lift is loaded too; into a CLIP the lift is dropped
    _reference_pth(tmp_path / "meru.pth")
    ref = hyvl.load(tmp_path / "meru.pth")[0]
    pth = str(tmp_path / "meru.pth")
    from_pth = hyvl.create_model(ref.config.model_copy(update={"init": pth}))
    assert from_pth.init_report.new == [] and from_pth.init_report.kind.startswith("MERU")
    assert torch.equal(from_pth.log_curv, ref.log_curv)
    as_clip = hyvl.create_model(
        ref.config.model_copy(update={"init": pth, "geometry": "euclidean"})
    )
    assert as_clip.init_report.dropped == sorted(LIFT)

    # another width: a one-line error naming the tensor
    with pytest.raises(CheckpointError, match=r"shapes differ .*visual_proj\.weight is \(32, 64\)"):
        hyvl.create_model(SMALL | {"embed_dim": 16, "init": str(tmp_path / "clip")})
    with pytest.raises(CheckpointError, match=r"towers do not fit .*blocks\.1"):
        hyvl.create_model(
            SMALL | {"vision": SMALL["vision"] | {"depth": 2}} | {"init": str(tmp_path / "clip")}
        )


def _cache_openclip(cache, repo_id, state):
    """An open_clip file laid out in a Hugging Face cache as hf_hub_download writes it."""
    from safetensors.torch import save_file

    folder = cache / f"models--{repo_id.replace('/', '--')}"
    (folder / "refs").mkdir(parents=True)
    (folder / "refs" / "main").write_text("0" * 40)
    snap = folder / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, snap / "open_clip_model.safetensors")


def test_openclip_name_is_read_from_the_hub_cache_and_offline_misses_are_one_line(
    tmp_path, monkeypatch
):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing here may touch the network
    clip = _small_openclip(False)
    # ViT-B-16:openai lives at timm/vit_base_patch16_clip_224.openai in open_clip's table; the
    # test puts a small CLIP there (the model config, not the name, sets the architecture)
    _cache_openclip(tmp_path / "hub", "timm/vit_base_patch16_clip_224.openai", clip.state_dict())
    model = hyvl.create_model(SMALL | {"init": "ViT-B-16:openai"})
    assert torch.equal(model.visual_proj.weight, clip.state_dict()["visual.proj"].t())
    assert model.init_report.kind == "open_clip checkpoint (open_clip ViT-B-16:openai)"
    _cache_openclip(tmp_path / "hub", "someone/tiny-clip", clip.state_dict())
    model = hyvl.create_model(SMALL | {"init": "hf-hub:someone/tiny-clip"})
    assert torch.equal(model.textual_proj.weight, clip.state_dict()["text_projection"].t())

    with pytest.raises(CheckpointError) as err:
        hyvl.create_model(SMALL | {"init": "ViT-L-14:openai"})
    message = str(err.value)
    assert (
        "\n" not in message and "not in the Hugging Face cache and HF_HUB_OFFLINE is set" in message
    )
    assert message.startswith("model.init=ViT-L-14:openai: ")
    with pytest.raises(CheckpointError, match="no pretrained 'ViT-B-16' tagged 'nope' .*openai"):
        hyvl.create_model(SMALL | {"init": "ViT-B-16:nope"})
    with pytest.raises(CheckpointError, match="no such file or directory"):
        hyvl.create_model(SMALL | {"init": str(tmp_path / "missing.pt")})
