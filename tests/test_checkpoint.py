"""hyvl.save / hyvl.load: exports, training dirs, MERU / HyCoCLIP .pth files, and clear errors."""

import math
import pickle
import re
from collections import OrderedDict

import pytest
import torch
from torch import nn

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


class _MeruBlock(nn.Module):
    """MERU's text block, under its key names (meru/encoders/text_encoders.py)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, 4 * width)),
                    ("gelu", nn.GELU()),
                    ("c_proj", nn.Linear(4 * width, width)),
                ]
            )
        )
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x, mask):
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.ln_2(x))


class _MeruText(nn.Module):
    def __init__(self, vocab: int, context: int, width: int, layers: int):
        super().__init__()
        self.token_embed = nn.Embedding(vocab, width)
        self.posit_embed = nn.Parameter(torch.randn(context, width) * 0.1)
        self.resblocks = nn.ModuleList(_MeruBlock(width, width // 64) for _ in range(layers))
        self.ln_final = nn.LayerNorm(width)
        self.register_buffer("attn_mask", torch.ones(context, context, dtype=torch.bool).triu(1))

    def forward(self, tokens):
        n = tokens.shape[1]
        x = self.token_embed(tokens) + self.posit_embed[:n]
        for block in self.resblocks:
            x = block(x, self.attn_mask[:n, :n])
        return self.ln_final(x)


class _MeruReference(nn.Module):
    """An independent MERU / HyCoCLIP / MERU-CLIP model with the published key layout."""

    def __init__(self, lorentz: bool, pixel_mean=IMAGENET_MEAN, curv=0.7, width=384):
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        self.lorentz = lorentz
        self.visual = VisionTransformer(
            img_size=32,
            patch_size=16,
            embed_dim=width,
            depth=1,
            num_heads=12,
            num_classes=0,
            norm_layer=nn.LayerNorm,
        )
        self.textual = _MeruText(vocab=100, context=8, width=64, layers=2)
        self.visual_proj = nn.Linear(width, 32, bias=False)
        self.textual_proj = nn.Linear(64, 32, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(1 / 0.07).log())
        if lorentz:
            self.curv = nn.Parameter(torch.tensor(curv).log())
            self.visual_alpha = nn.Parameter(torch.tensor(-1.5))
            self.textual_alpha = nn.Parameter(torch.tensor(-1.2))
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1))
        self.register_buffer("pixel_std", torch.tensor(IMAGENET_STD).view(-1, 1, 1))
        with torch.no_grad():  # random everything, so a wrongly mapped weight shows
            for name, p in self.named_parameters():
                if name not in ("curv", "visual_alpha", "textual_alpha", "logit_scale"):
                    p.copy_(
                        torch.randn_like(p) * 0.2 + (1.0 if name.endswith("ln_1.weight") else 0)
                    )

    def _lift(self, x, log_alpha):
        if not self.lorentz:
            return x / x.norm(dim=-1, keepdim=True)
        x = x.double() * log_alpha.double().exp()
        rc = self.curv.double().exp().sqrt() * x.norm(dim=-1, keepdim=True)
        return torch.sinh(rc) * x / rc  # exp_map0, space components

    def encode_image(self, images):
        feats = self.visual((images - self.pixel_mean) / self.pixel_std)
        return self._lift(self.visual_proj(feats), getattr(self, "visual_alpha", None))

    def encode_text(self, tokens):
        feats = self.textual(tokens)[torch.arange(tokens.shape[0]), tokens.argmax(-1)]
        return self._lift(self.textual_proj(feats), getattr(self, "textual_alpha", None))


def _reference_pth(
    path, lorentz=True, pixel_mean=IMAGENET_MEAN, curv=0.7, pixel_scale=1.0, width=384
):
    """Write a reference model as a published .pth; ``pixel_scale=255`` stores the pixel
    mean / std on the 0-255 scale (the model then expects 0-255 images, as such files do)."""
    torch.manual_seed(3)
    ref = _MeruReference(lorentz, pixel_mean, curv, width).eval()
    state = ref.state_dict()
    state["pixel_mean"] = state["pixel_mean"] * pixel_scale
    state["pixel_std"] = state["pixel_std"] * pixel_scale
    torch.save({"model": state, "iteration": 10}, path)
    return ref


def _inputs():
    torch.manual_seed(4)
    images = torch.rand(3, 3, 32, 32)
    tokens = torch.zeros(3, 8, dtype=torch.long)
    for i, n in enumerate((3, 8, 5)):  # EOS (the largest id, 99) last, zero padding after
        tokens[i, : n - 1] = torch.randint(1, 98, (n - 1,))
        tokens[i, n - 1] = 99
    return images, tokens


@pytest.mark.parametrize("lorentz", [True, False], ids=["meru", "meru_clip"])
def test_published_pth_reproduces_the_reference_model(tmp_path, lorentz):
    ref = _reference_pth(tmp_path / "ref.pth", lorentz)
    loaded, _, _ = hyvl.load(tmp_path / "ref.pth")
    assert loaded.geometry == ("lorentz" if lorentz else "euclidean")
    assert loaded.config.vision.depth == 1 and loaded.config.text.layers == 2
    assert loaded.config.embed_dim == 32 and loaded.visual.vit.norm.eps == 1e-5
    images, tokens = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.encode_image(images).double(),
            ref.encode_image(images).double(),
            atol=1e-6,
            rtol=1e-6,
        )
        torch.testing.assert_close(
            loaded.encode_text(tokens).double(),
            ref.encode_text(tokens).double(),
            atol=1e-6,
            rtol=1e-6,
        )
    if lorentz:
        assert abs(loaded.curv.item() - 0.7) < 1e-6
    # and it survives a round trip through hyvl's own format
    hyvl.save(loaded, tmp_path / "export")
    again, _, _ = hyvl.load(tmp_path / "export")
    with torch.no_grad():
        assert torch.equal(again.encode_image(images), loaded.encode_image(images))


def test_pth_keeps_its_pixel_statistics_on_the_0_1_scale(tmp_path):
    # Stored for 0-255 images: hyvl's preprocess gives [0, 1], so mean and std are rescaled.
    ref = _reference_pth(tmp_path / "ref255.pth", pixel_scale=255.0)
    loaded, _, _ = hyvl.load(tmp_path / "ref255.pth")
    torch.testing.assert_close(loaded.pixel_mean.flatten(), torch.tensor(IMAGENET_MEAN))
    torch.testing.assert_close(loaded.pixel_std.flatten(), torch.tensor(IMAGENET_STD))
    images, _ = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.encode_image(images).double(), ref.encode_image(images).double(),
            atol=1e-6, rtol=1e-6,
        )  # fmt: skip


def test_pth_curvature_clamp_is_centred_on_its_stored_curvature(tmp_path):
    # MERU clamps log c to [c0/10, 10 c0] around its init; a loaded file's c0 is its value,
    # even outside the range a fresh model would allow (c = 30 > 10 = 10 x the default 1).
    _reference_pth(tmp_path / "ref.pth", curv=30.0)
    loaded, _, _ = hyvl.load(tmp_path / "ref.pth")
    assert loaded.curv.item() == pytest.approx(30.0, rel=1e-6)
    for pushed, clamped in ((1e6, 300.0), (1e-6, 3.0)):
        with torch.no_grad():
            loaded.log_curv.fill_(math.log(pushed))
        assert loaded.curv.item() == pytest.approx(clamped, rel=1e-6), pushed
    # the range travels with the model through hyvl's own format
    hyvl.save(loaded, tmp_path / "export")
    again, _, _ = hyvl.load(tmp_path / "export")
    assert again.curv.item() == pytest.approx(3.0, rel=1e-6)
    with torch.no_grad():
        again.log_curv.fill_(math.log(1e6))
    assert again.curv.item() == pytest.approx(300.0, rel=1e-6)


@pytest.mark.parametrize("width", [384, 768], ids=["vit_s", "vit_b"])
def test_pth_sincos_position_embedding_stays_frozen(tmp_path, width):
    # MERU's ViTs (MoCo v3's ViT-S and timm's ViT-B / L alike) keep a fixed sin-cos table:
    # loading the file must not make the positions trainable (fine-tuning would move them).
    ref = _reference_pth(tmp_path / "ref.pth", width=width)
    loaded, _, _ = hyvl.load(tmp_path / "ref.pth")
    pos = loaded.visual.vit.pos_embed
    assert not pos.requires_grad
    assert torch.equal(pos, ref.visual.pos_embed)  # the file's values, not a fresh table
    trainable = {n for n, p in loaded.named_parameters() if p.requires_grad}
    assert "visual.vit.pos_embed" not in trainable and "visual.vit.cls_token" in trainable


def test_hycoclip_pixel_mean_bug_is_detected_and_the_trained_values_kept(tmp_path, caplog):
    # HyCoCLIP's released weights store the ImageNet std as the pixel mean and were trained so.
    ref = _reference_pth(tmp_path / "hycoclip.pth", pixel_mean=IMAGENET_STD)
    with caplog.at_level("WARNING"):
        loaded, _, _ = hyvl.load(tmp_path / "hycoclip.pth")
    assert "HyCoCLIP constructor bug" in caplog.text and "hycoclip.pth" in caplog.text
    assert torch.allclose(loaded.pixel_mean.flatten(), torch.tensor(IMAGENET_STD))
    images, _ = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(
            loaded.encode_image(images).double(),
            ref.encode_image(images).double(),
            atol=1e-6,
            rtol=1e-6,
        )


def test_pth_with_mismatched_keys_lists_them(tmp_path):
    ref = _MeruReference(lorentz=True)
    state = ref.state_dict()
    state.pop("textual.ln_final.weight")
    state["textual.extra.weight"] = torch.zeros(2)
    torch.save({"model": state}, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match=r"broken\.pth.*ln_final\.weight.*extra\.weight"):
        hyvl.load(tmp_path / "broken.pth")


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


def _small_openclip(quick_gelu):
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(5)
    clip = CLIP(
        embed_dim=32,
        vision_cfg=CLIPVisionCfg(layers=1, width=64, head_width=32, patch_size=16, image_size=32),
        text_cfg=CLIPTextCfg(context_length=8, vocab_size=100, width=64, heads=1, layers=1),
        quick_gelu=quick_gelu,
    ).eval()
    with torch.no_grad():  # random everything, so a wrongly mapped weight shows
        for p in clip.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return clip


@pytest.mark.parametrize("quick_gelu", [False, True], ids=["gelu", "quickgelu"])
def test_openclip_weights_initialise_the_towers(tmp_path, quick_gelu):
    from open_clip import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
    from safetensors.torch import save_file

    clip = _small_openclip(quick_gelu)
    save_file(
        {k: v.contiguous() for k, v in clip.state_dict().items()}, tmp_path / "oc.safetensors"
    )
    timm_name = "vit_base_patch16_clip_quickgelu_224" if quick_gelu else "vit_base_patch16_clip_224"
    spec = {
        "geometry": "euclidean",
        "embed_dim": 32,
        "openclip_init": str(tmp_path / "oc.safetensors"),
        "pixel_mean": list(OPENAI_DATASET_MEAN),
        "pixel_std": list(OPENAI_DATASET_STD),
        "vision": {"timm_name": timm_name, "image_size": 32, "width": 64, "depth": 1, "heads": 2},
        "text": {"context_length": 8, "vocab_size": 100, "width": 64, "layers": 1, "heads": 1}
        | {"quick_gelu": quick_gelu},
    }
    model = hyvl.create_model(spec).eval()
    images, tokens = _inputs()
    mean = torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        want_img = clip.encode_image((images - mean) / std, normalize=True)
        want_txt = clip.encode_text(tokens, normalize=True)
        torch.testing.assert_close(model.encode_image(images), want_img, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.encode_text(tokens), want_txt, atol=1e-5, rtol=1e-5)
    assert torch.allclose(model.logit_scale, clip.logit_scale)  # both hold the log
    # hyperbolic fine-tuning starts from the same towers; the export no longer needs the file
    meru = hyvl.create_model(spec | {"geometry": "lorentz"})
    assert torch.equal(meru.visual_proj.weight, model.visual_proj.weight)
    hyvl.save(meru, tmp_path / "export")
    (tmp_path / "oc.safetensors").unlink()
    loaded, _, _ = hyvl.load(tmp_path / "export")
    assert loaded.config.openclip_init is None
    assert torch.equal(loaded.visual_proj.weight, meru.visual_proj.weight)


def test_openclip_init_with_the_wrong_architecture_is_an_error(tmp_path):
    torch.save(_small_openclip(False).state_dict(), tmp_path / "oc.pt")
    with pytest.raises(CheckpointError, match=r"oc\.pt: shapes differ"):
        hyvl.create_model("clip_tiny", openclip_init=str(tmp_path / "oc.pt"))


def test_openclip_checkpoint_is_recognised_with_the_command_that_uses_it(tmp_path):
    """An open_clip state dict, or open_clip's own epoch_N.pt (DDP names under state_dict):
    hyvl.load says what it is and how a run starts from it; model.openclip_init reads both."""
    clip = _small_openclip(False)
    state = clip.state_dict()
    torch.save(state, tmp_path / "open_clip_pytorch_model.bin")
    module = {f"module.{k}": v for k, v in state.items()}
    torch.save({"epoch": 1, "name": "run", "state_dict": module}, tmp_path / "epoch_1.pt")
    for name in ("open_clip_pytorch_model.bin", "epoch_1.pt"):
        with pytest.raises(CheckpointError, match="an open_clip CLIP checkpoint") as err:
            hyvl.load(tmp_path / name)
        assert f"model.openclip_init={tmp_path / name}" in str(err.value)
    (tmp_path / "hub").mkdir()  # an open_clip folder as the Hugging Face Hub holds it
    (tmp_path / "open_clip_pytorch_model.bin").rename(
        tmp_path / "hub" / "open_clip_pytorch_model.bin"
    )
    with pytest.raises(CheckpointError, match="an open_clip model folder") as err:
        hyvl.load(tmp_path / "hub")
    assert f"model.openclip_init={tmp_path / 'hub' / 'open_clip_pytorch_model.bin'}" in str(
        err.value
    )
    spec = {
        "geometry": "lorentz",
        "embed_dim": 32,
        "openclip_init": str(tmp_path / "epoch_1.pt"),
        "vision": {"timm_name": "vit_base_patch16_clip_224", "image_size": 32, "width": 64}
        | {"depth": 1, "heads": 2},
        "text": {"context_length": 8, "vocab_size": 100, "width": 64, "layers": 1, "heads": 1},
    }
    model = hyvl.create_model(spec)
    assert torch.equal(model.visual_proj.weight, state["visual.proj"].t())


def test_load_of_a_recipe_name_points_to_create_model():
    for name in ("meru_tiny", "hycoclip_vit_b"):
        with pytest.raises(CheckpointError, match="no such file or directory") as err:
            hyvl.load(name)
        assert f"hyvl.create_model('{name}')" in str(err.value)
    with pytest.raises(CheckpointError) as err:
        hyvl.load("runs/nothing_here")
    assert "create_model" not in str(err.value)


def test_item10_pth_zip_bomb_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    """A .pth is a zip: one compressed entry of 32 MiB of zeros in a ~35 kB file (the issue's
    2 MB -> 2 GiB bomb at a test's scale) is refused from the zip's directory alone."""
    import zipfile

    bomb = tmp_path / "model.pth"
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("archive/data/0", "w", force_zip64=True) as entry:
            chunk = bytes(2**20)
            for _ in range(32):
                entry.write(chunk)
        archive.writestr("archive/data.pkl", pickle.dumps({}))
    assert bomb.stat().st_size < 2**20

    def never(*args, **kwargs):
        raise AssertionError("torch.load was called on the bomb")

    monkeypatch.setattr(torch, "load", never)
    with pytest.raises(CheckpointError, match=r"inflate to 32 MiB from 0\.\d MiB .*zip bomb"):
        hyvl.load(bomb)
