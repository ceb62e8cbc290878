"""HyvlModel: shapes, the lift, one-call batching, clamps, precision and the named configs."""

import math

import pytest
import torch

import hyvl
from hyvl import lorentz
from hyvl.errors import ConfigError
from hyvl.models import get_model_config
from hyvl.models.tokenizer import get_tokenizer


@pytest.fixture(scope="module")
def meru():
    torch.manual_seed(0)
    return hyvl.create_model("meru_tiny").eval()


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return hyvl.create_model("clip_tiny").eval()


def tokens(model, texts):
    return get_tokenizer(model.config.text)(texts)


def test_named_configs_cover_the_contract():
    names = hyvl.list_models()
    for family in ("clip", "meru", "hycoclip"):
        for tower in ("vit_s", "vit_b", "vit_l", "tiny"):
            assert f"{family}_{tower}" in names
    with pytest.raises(ConfigError, match="did you mean 'meru_tiny'"):
        hyvl.create_model("meru_tiyn")


def test_mocov3_vit_s_matches_the_papers_tower():
    model = hyvl.create_model("meru_vit_s")
    vit = model.visual.vit
    assert (vit.embed_dim, len(vit.blocks), vit.blocks[0].attn.num_heads) == (384, 12, 12)
    assert vit.norm.eps == 1e-5
    assert not vit.pos_embed.requires_grad  # fixed 2-D sin-cos, MoCo v3's table
    assert torch.equal(vit.pos_embed, _mocov3_pos_embed(14, 14, 384))
    assert model.textual.transformer.context_length == 77
    assert model.textual.transformer.vocab_size == 49408
    assert model.config.text.width == 512 and model.config.text.layers == 12


def test_lorentz_embeddings_lie_on_the_hyperboloid(meru):
    imgs = torch.rand(3, 3, 64, 64)
    emb = meru(imgs, tokens(meru, ["a red circle", "two blue squares", "x"]))
    assert emb.image.shape == (3, 128) and emb.text.dtype == torch.float32
    c = meru.curv
    x = emb.image.double()
    # <x, x>_L = |x|^2 - x_time^2 = -1/c
    x_time = lorentz.time_component(x, c.double())
    assert torch.allclose((x * x).sum(-1) - x_time**2, -1 / c.double().expand(3), atol=1e-6)
    # MERU's alpha init keeps initial embeddings near the origin (norm ~1, not ~sqrt(D))
    assert lorentz.dist0(emb.image, c).max() < 5


def test_clip_embeddings_are_unit_vectors(clip):
    emb = clip(torch.rand(2, 3, 64, 64), tokens(clip, ["a", "b"]))
    assert torch.allclose(emb.image.norm(dim=-1), torch.ones(2), atol=1e-6)
    assert clip.curv is None and emb.curv is None


@pytest.mark.parametrize(
    "mode,calls_per_tower", [(None, 1), ("fused", 1), ("split", 2), ("auto", 2)]
)
def test_box_towers_fused_or_split_give_the_same_embeddings(
    meru, monkeypatch, mode, calls_per_tower
):
    """fused (the default): whole + box rows in one tower call; split (and auto on the CPU):
    two calls."""
    imgs, boxes = torch.rand(2, 3, 64, 64), torch.rand(4, 3, 64, 64)
    tok, box_tok = tokens(meru, ["a", "b"]), tokens(meru, ["c", "d", "e", "f"])
    calls = {"visual": 0, "textual": 0}
    for name in calls:
        tower = getattr(meru, name)
        original = tower.forward

        def counted(x, _name=name, _original=original):
            calls[_name] += 1
            return _original(x)

        monkeypatch.setattr(tower, "forward", counted)
    with torch.no_grad():
        mode_arg = {} if mode is None else {"box_towers": mode}  # None: the default
        emb = meru(imgs, tok, box_images=boxes, box_tokens=box_tok, **mode_arg)
    assert calls == {"visual": calls_per_tower, "textual": calls_per_tower}
    assert emb.box_image.shape == (4, 128) and emb.boxes_per_sample == 2
    with torch.no_grad():
        assert torch.allclose(emb.image, meru.encode_image(imgs), atol=1e-5)
        assert torch.allclose(emb.box_image, meru.encode_image(boxes), atol=1e-5)
        assert torch.allclose(emb.text, meru.encode_text(tok), atol=1e-5)
        assert torch.allclose(emb.box_text, meru.encode_text(box_tok), atol=1e-5)
        with pytest.raises(ValueError, match="box_towers"):
            meru(imgs, tok, box_towers="both")


def test_clamps_on_curvature_alpha_and_logit_scale():
    model = hyvl.create_model("meru_tiny", curv_init=2.0).eval()
    assert math.isclose(model.curv.item(), 2.0, rel_tol=1e-6)
    with torch.no_grad():
        model.log_curv.fill_(10.0)
        model.logit_scale.fill_(10.0)
        model.visual_alpha.fill_(3.0)
    assert math.isclose(model.curv.item(), 20.0, rel_tol=1e-5)  # 10 c0
    assert math.isclose(model.logit_scale_exp.item(), 100.0, rel_tol=1e-5)
    feats = torch.randn(2, 128)
    # alpha is clamped at exp(0) = 1: the lift equals exp_map0 of the raw features
    assert torch.allclose(model.lift_image(feats), lorentz.exp_map0(feats, model.curv), atol=1e-5)
    with torch.no_grad():
        model.log_curv.fill_(-10.0)
    assert math.isclose(model.curv.item(), 0.2, rel_tol=1e-5)  # c0 / 10


def test_clamp_scalars_puts_the_parameters_themselves_back_in_bounds():
    model = hyvl.create_model("meru_tiny", curv_init=2.0)
    with torch.no_grad():
        model.log_curv.fill_(10.0)
        model.logit_scale.fill_(10.0)
        model.visual_alpha.fill_(3.0)
        model.textual_alpha.fill_(-0.5)
    model.clamp_scalars_()
    assert math.isclose(model.log_curv.item(), math.log(20.0), rel_tol=1e-6)
    assert math.isclose(model.logit_scale.item(), math.log(100.0), rel_tol=1e-6)
    assert model.visual_alpha.item() == 0.0 and model.textual_alpha.item() == -0.5
    # weights loaded past a bound (an older export, a MERU file) come back clamped
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["log_curv"].fill_(-10.0)
    state["visual_alpha"].fill_(1.0)
    model.load_state_dict(state)
    assert math.isclose(model.curv.item(), 0.2, rel_tol=1e-5) and model.visual_alpha.item() == 0


def test_alpha_pushed_to_its_bound_comes_back_when_the_gradient_turns():
    # issue 23: with the clamp inside the computation, alpha stuck at exactly 1.000 once it
    # got there (zero gradient at the bound). Clamped in place after each AdamW step (what
    # hyvl train does), it leaves the bound as soon as the gradient pulls it back.
    torch.manual_seed(0)
    model = hyvl.create_model("meru_tiny")
    feats = torch.randn(8, 128)
    optimizer = torch.optim.AdamW([model.visual_alpha], lr=0.1, weight_decay=0.0)

    def norm_of_lift() -> torch.Tensor:
        return lorentz.dist0(model.lift_image(feats), model.curv).mean()

    for direction in (-1.0, 1.0):  # first push the embeddings out, then pull them in
        for _ in range(40):
            optimizer.zero_grad()
            (direction * norm_of_lift()).backward()
            optimizer.step()
            model.clamp_scalars_()
        if direction < 0:
            assert model.visual_alpha.exp().item() == 1.0  # pushed to its bound
    assert model.visual_alpha.exp().item() < 0.5  # came back


def test_lift_stays_fp32_under_bf16_autocast(meru):
    imgs = torch.rand(2, 3, 64, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = meru.image_features(imgs)
        emb = meru.lift_image(feats)
    assert feats.dtype == torch.bfloat16  # the tower did run in bf16
    assert emb.dtype == torch.float32
    assert torch.isfinite(emb).all()
    # the lift itself was computed in fp32: same bits as lifting the bf16 features outside autocast
    assert torch.equal(emb, meru.lift_image(feats.float()))


def test_init_follows_meru():
    torch.manual_seed(0)
    model = hyvl.create_model("meru_tiny")
    d = model.config.embed_dim
    assert math.isclose(model.visual_alpha.item(), math.log(d**-0.5), rel_tol=1e-6)
    assert math.isclose(model.textual_alpha.item(), math.log(d**-0.5), rel_tol=1e-6)
    assert math.isclose(
        model.logit_scale.exp().item(), 1 / 0.07, rel_tol=1e-5
    )  # a log, as open_clip
    assert math.isclose(model.curv.item(), 1.0, rel_tol=1e-6)
    for proj, width in ((model.visual_proj, model.visual.width), (model.textual_proj, 128)):
        assert proj.bias is None
        assert abs(proj.weight.std().item() - width**-0.5) < 0.1 * width**-0.5


def _mocov3_pos_embed(h, w, dim):
    """MoCo v3 / MERU build_timm_vit, transcribed: meshgrid(w, h), [sin w, cos w, sin h, cos h]."""
    grid_w, grid_h = torch.meshgrid(
        torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32), indexing="ij"
    )
    omega = 1.0 / (10000.0 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4)))
    out_w = torch.einsum("m,d->md", grid_w.flatten(), omega)
    out_h = torch.einsum("m,d->md", grid_h.flatten(), omega)
    table = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], dim=1)
    return torch.cat([torch.zeros(1, dim), table])[None]


def test_paper_towers_use_merus_vit_settings():
    for name in ("meru_vit_b", "hycoclip_vit_l", "clip_vit_s"):
        vision = get_model_config(name).vision
        assert vision.ln_eps == 1e-5 and vision.sincos_pos_embed and vision.image_size == 224
    model = hyvl.create_model(
        "meru_tiny", vision={"ln_eps": 1e-5, "sincos_pos_embed": True, "image_size": 32}
    )
    vit = model.visual.vit
    assert vit.norm.eps == 1e-5 and vit.blocks[0].norm1.eps == 1e-5
    assert not vit.pos_embed.requires_grad
    assert torch.equal(vit.pos_embed, _mocov3_pos_embed(4, 4, 128))


def test_pixel_normalisation_happens_inside(meru):
    # An image equal to the pixel mean is the zero input of the tower.
    mean_img = meru.pixel_mean.expand(1, 3, 64, 64).clone()
    with torch.no_grad():
        expected = meru.visual_proj(meru.visual(torch.zeros(1, 3, 64, 64)))
        assert torch.allclose(meru.image_features(mean_img), expected, atol=1e-5)


def test_gradients_reach_every_trainable_parameter():
    torch.manual_seed(0)
    model = hyvl.create_model("meru_tiny")
    emb = model(torch.rand(2, 3, 64, 64), tokens(model, ["a b", "c"]))
    loss = lorentz.pairwise_dist(emb.image, emb.text, emb.curv).mean() * emb.logit_scale
    loss.backward()
    frozen = {n for n, p in model.named_parameters() if p.requires_grad and p.grad is None}
    # token rows of unused words get zero gradient, not None; nothing trainable is disconnected
    assert frozen == set()


def test_tokenizer_pads_and_truncates_to_context_length(meru):
    tok = get_tokenizer(meru.config.text)
    out = tok(["a " * 100, "short"])
    assert out.shape == (2, 32) and out.dtype == torch.long
    assert out[0, -1] == 49407  # EOT kept last after truncation, so EOS pooling finds it


def test_hf_text_tower_from_a_local_directory(tmp_path):
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "red", "circle", "blue", "square", "a"]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt")).save_pretrained(tmp_path)
    cfg = BertConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
    )
    BertModel(cfg).save_pretrained(tmp_path)
    model = hyvl.create_model(
        "meru_tiny", text={"kind": "hf", "hf_name": str(tmp_path), "context_length": 8}
    )
    tok = get_tokenizer(model.config.text)
    ids = tok(["a red circle", "blue square"])
    assert ids.shape == (2, 8)
    emb = model.encode_text(ids)
    assert emb.shape == (2, 128) and torch.isfinite(emb).all()
