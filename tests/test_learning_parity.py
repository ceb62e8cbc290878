"""tools/learning_parity.py's pieces: the open_clip model built from its config is hyvl's clip_tiny
(same parameter shapes, same decay groups), and open_clip_train's checkpoint converts into a
hyvl model that embeds exactly as the open_clip model did."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

TOOLS = Path(__file__).resolve().parents[1] / "tools"


@pytest.fixture(scope="module")
def parity(tmp_path_factory):
    import sys

    sys.path.insert(0, str(TOOLS))
    try:
        import learning_parity as module
    finally:
        sys.path.remove(str(TOOLS))
    from hyvl.models.registry import get_model_config

    folder = tmp_path_factory.mktemp("open_clip_config")
    module.write_openclip_config(get_model_config("clip_tiny"), folder)
    cfg = module.load_openclip_registry(folder)
    return module, cfg


def test_open_clip_model_from_the_config_has_clip_tiny_shapes_and_decay_groups(parity):
    import open_clip

    from hyvl.models.convert import openclip_to_hyvl
    from hyvl.models.registry import create_model
    from hyvl.train.optim import is_no_decay

    module, cfg = parity
    oc = open_clip.create_model(module.OPENCLIP_NAME)
    hy = create_model(cfg)
    oc_params = dict(oc.named_parameters())
    hy_params = dict(hy.named_parameters())
    assert sum(p.numel() for p in oc_params.values()) == sum(p.numel() for p in hy_params.values())
    renamed = openclip_to_hyvl({k: v.detach() for k, v in oc_params.items()})
    assert {k: tuple(v.shape) for k, v in renamed.items()} == {
        k: tuple(v.shape) for k, v in hy_params.items()
    }
    assert oc.visual.trunk.patch_embed.proj.kernel_size == (8, 8)  # the recipe's patches

    # open_clip_train's weight-decay rule on its names == hyvl's rule on the same tensors
    def oc_excluded(n, p):
        return p.ndim < 2 or "bn" in n or "ln" in n or "bias" in n or "logit_scale" in n

    oc_rule = {k: oc_excluded(n, oc_params[n]) for n, k in zip(oc_params, renamed, strict=True)}
    assert oc_rule == {k: is_no_decay(k, p) for k, p in hy_params.items()}
    assert sum(oc_rule.values()) > 10  # norms, biases and the logit scale are there


def test_open_clip_train_checkpoint_converts_to_the_same_embeddings(parity, tmp_path):
    import open_clip

    module, cfg = parity
    torch.manual_seed(0)
    oc = open_clip.create_model(module.OPENCLIP_NAME).eval()
    with torch.no_grad():  # trained-looking weights, not the init open_clip and hyvl share
        for p in oc.parameters():
            p.add_(0.02 * torch.randn_like(p))
        oc.logit_scale.fill_(3.1)
    opt = torch.optim.AdamW(oc.parameters())
    path = tmp_path / "epoch_1.pt"  # what open_clip_train's main() saves
    torch.save(
        {"epoch": 1, "name": "x", "state_dict": oc.state_dict(), "optimizer": opt.state_dict()},
        path,
    )

    hy = module.openclip_to_hyvl_model(path, cfg)
    images = torch.rand(3, 3, 64, 64)
    mean = torch.tensor(cfg.pixel_mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.pixel_std).view(1, 3, 1, 1)
    tokens = open_clip.get_tokenizer(module.OPENCLIP_NAME)(["a handwritten three", "brick", ""])
    assert tokens.shape == (3, cfg.text.context_length)
    with torch.no_grad():
        oc_img = F.normalize(oc.encode_image((images - mean) / std), dim=-1)
        oc_txt = F.normalize(oc.encode_text(tokens), dim=-1)
        torch.testing.assert_close(hy.encode_image(images), oc_img, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(hy.encode_text(tokens), oc_txt, atol=1e-5, rtol=1e-4)
    assert float(hy.logit_scale) == pytest.approx(3.1)
    # hyvl's tokenizer gives the ids open_clip_train trained on
    from hyvl.models.tokenizer import get_tokenizer

    assert torch.equal(get_tokenizer(cfg.text)(["a handwritten three", "brick", ""]), tokens)


def test_open_clip_train_log_lines_give_step_loss_and_scale(parity):
    module, _ = parity
    text = (
        "2026-12-03,13:30:01 | INFO | Train Epoch: 0 [  64/1280 (5%)] Data (t): 0.5 Batch (t): "
        "2.1, 30.1/s, 30.1/s/gpu LR: 0.000500 Logit Scale: 14.286 Contrastive_loss: 4.1589 "
        "(4.1589) Loss: 4.1589 (4.1589)\n"
        "2026-12-03,13:30:31 | INFO | Train Epoch: 0 [1280/1280 (100%)] Data (t): 0.5 Batch (t): "
        "2.1, 30.1/s, 30.1/s/gpu LR: 0.000000 Logit Scale: 15.002 Contrastive_loss: 3.0012 "
        "(3.5) Loss: 3.0012 (3.5)\n"
    )
    assert module.parse_openclip_log(text, batch=64) == [(1, 4.1589, 14.286), (20, 3.0012, 15.002)]
    # a run whose loss returns to ln B and stays there is named, one that learns is not
    ln_b = 4.1589
    collapsed = [(10, 3.9, 14.0), (20, 4.158, 14.0), (30, 4.159, 14.0), (40, 4.157, 14.0)]
    assert module.stuck_from(collapsed, batch=64) == 20
    assert module.stuck_from([(10, ln_b, 14.0), (20, 3.5, 14.0)], batch=64) is None
