"""Fine-tuning: LoRA adapters (peft), train.freeze / unfreeze_at, lift lr and layer decay,
the parameter report, exact resume of a LoRA run and its merged export."""

import json
import shutil
import sys

import pytest
import torch

import hyvl
from hyvl.config import LoraConfig, TrainConfig, load_run_config
from hyvl.errors import ConfigError
from hyvl.models.checkpoint import _load_step_checkpoint
from hyvl.models.lora import add_adapters, has_adapters, merged, target_names
from hyvl.train import checkpoint as ckpt
from hyvl.train.finetune import freeze, parameter_report
from hyvl.train.optim import build_optimizer
from hyvl.train.step import TrainModule
from tests import test_train
from tests.test_train import read_metrics, tiny_overrides

demo_data = test_train.demo_data  # the same tiny world, as a fixture of this module

TINY = {"vision": {"depth": 2, "image_size": 32}, "text": {"layers": 2}}


def tiny_model():
    torch.manual_seed(0)
    return hyvl.create_model("meru_tiny", **TINY)


def test_lora_targets_the_attention_and_mlp_linears_of_the_chosen_blocks():
    model = tiny_model()
    names = target_names(model, LoraConfig(rank=4))
    assert "visual.vit.blocks.1.attn.qkv" in names and "visual.vit.blocks.0.mlp.fc2" in names
    # open_clip's attention is adapted whole (q, k, v and output), with its MLP linears
    assert "textual.transformer.transformer.resblocks.0.attn" in names
    assert "textual.transformer.transformer.resblocks.1.mlp.c_proj" in names
    last_visual = target_names(model, LoraConfig(rank=4, towers=["visual"], blocks=[-1]))
    assert last_visual == [f"visual.vit.blocks.1.{n}" for n in ("attn.qkv", "attn.proj",
                                                                  "mlp.fc1", "mlp.fc2")]  # fmt: skip
    with pytest.raises(ConfigError, match="matched no linear layer"):
        target_names(model, LoraConfig(rank=4, targets=["q_proj"]))
    with pytest.raises(ConfigError, match="has 2 blocks"):
        target_names(model, LoraConfig(rank=4, blocks=[5]))


def test_lora_trains_adapters_and_the_lift_and_merges_to_the_same_embeddings():
    model = add_adapters(tiny_model(), LoraConfig(rank=4))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert {"visual_proj.weight", "textual_proj.weight", "log_curv", "logit_scale"} <= trainable
    assert {"visual_alpha", "textual_alpha"} <= trainable
    towers = {n for n in trainable if n.startswith(("visual.", "textual."))}
    assert towers and all(".lora_" in n for n in towers)  # tower weights stay as they were
    with torch.no_grad():  # trained adapters (lora_B starts at 0: the merge would be trivial)
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    model.eval()
    images, tokens = torch.rand(3, 3, 32, 32), hyvl.get_tokenizer(model.config)(["a", "b c"])
    plain = merged(model).eval()
    assert not has_adapters(plain) and has_adapters(model)
    assert set(plain.state_dict()) == set(tiny_model().state_dict())
    torch.testing.assert_close(plain.encode_image(images), model.encode_image(images),
                               atol=1e-5, rtol=0)  # fmt: skip
    torch.testing.assert_close(plain.encode_text(tokens), model.encode_text(tokens),
                               atol=1e-5, rtol=0)  # fmt: skip
    assert (plain.encode_text(tokens) - tiny_model().eval().encode_text(tokens)).abs().max() > 1e-3
    # under bf16 CPU autocast (train.mixed_precision=bf16) the adapters run in bf16, the lift
    # in fp32, and the adapters get finite gradients
    model.train()
    seen = []
    layer = next(m for n, m in model.named_modules() if n.endswith("blocks.0.mlp.fc1"))
    hook = layer.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        emb = model.encode_image(images)
    hook.remove()
    assert seen == [torch.bfloat16] and emb.dtype == torch.float32
    emb.square().sum().backward()
    grads = [p.grad for n, p in model.named_parameters() if "lora_A" in n and "visual" in n]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


def test_freeze_towers_leaves_only_the_lift_in_the_optimizer():
    core = TrainModule(tiny_model(), torch.nn.Module())
    tcfg = TrainConfig(freeze="towers")
    frozen = freeze(core, tcfg)
    assert frozen and all(n.startswith(("model.visual.", "model.textual.")) for n in frozen)
    optimizer = build_optimizer(core, tcfg)
    names = sorted(n for g in optimizer.param_groups for n in g["names"])
    assert names == sorted(["model.visual_proj.weight", "model.textual_proj.weight",
                            "model.logit_scale", "model.visual_alpha", "model.textual_alpha",
                            "model.log_curv"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"\['visul.'\] name no parameter"):
        freeze(core, TrainConfig(freeze=["visul."]))


def test_lift_lr_and_layer_decay_give_each_group_its_own_lr():
    core = TrainModule(tiny_model(), torch.nn.Module())
    tcfg = TrainConfig(lr=1e-4, lift_lr=1e-3, layer_decay=0.5)
    lr_of = {n: g["lr"] for g in build_optimizer(core, tcfg).param_groups for n in g["names"]}
    assert lr_of["model.visual_proj.weight"] == pytest.approx(1e-3)
    assert lr_of["model.log_curv"] == pytest.approx(1e-3)
    assert lr_of["model.visual.vit.norm.weight"] == pytest.approx(1e-4)  # after the last block
    assert lr_of["model.visual.vit.blocks.1.attn.qkv.weight"] == pytest.approx(0.5e-4)
    assert lr_of["model.visual.vit.blocks.0.attn.qkv.weight"] == pytest.approx(0.25e-4)
    assert lr_of["model.visual.vit.patch_embed.proj.weight"] == pytest.approx(0.125e-4)
    assert lr_of["model.textual.transformer.token_embedding.weight"] == pytest.approx(0.125e-4)


def test_optimizer_state_size_is_what_adamw_allocates_at_its_first_step():
    model = add_adapters(tiny_model(), LoraConfig(rank=2))
    core = TrainModule(model, torch.nn.Module())
    optimizer = build_optimizer(core, TrainConfig())
    report = parameter_report(core, optimizer)
    assert report["trainable_params"] < report["total_params"] / 5
    for param in core.parameters():
        if param.requires_grad:
            param.grad = torch.ones_like(param)
    optimizer.step()
    allocated = sum(t.numel() * t.element_size() for s in optimizer.state.values()
                    for t in s.values())  # fmt: skip
    assert report["optimizer_state_bytes"] == allocated


def test_lora_run_resumes_bitwise_and_exports_a_merged_plain_model(tmp_path, demo_data, capsys,
                                                                    monkeypatch):  # fmt: skip
    from hyvl.cli.main import main

    overrides = tiny_overrides(
        demo_data,
        **{"model.vision.depth": 1, "model.text.layers": 1, "train.max_steps": 4,
           "train.keep_last": 0, "train.box_towers": "split", "train.lora.rank": 4,
           "train.lora.dropout": 0.1, "train.lift_lr": 2e-3, "train.freeze": "[visual_proj.]",
           "train.unfreeze_at": 3, "train.mixed_precision": "bf16"},
    )  # fmt: skip
    # the towers start from a hyvl CLIP export of the same architecture (model.init)
    torch.manual_seed(7)
    clip = hyvl.create_model("clip_tiny", vision={"depth": 1, "image_size": 32}, text={"layers": 1})
    hyvl.save(clip, tmp_path / "clip")
    overrides.append(f"model.init={tmp_path / 'clip'}")
    config = "meru_tiny_ft"  # the packaged fine-tuning recipe
    reference = tmp_path / "reference"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert main(["train", "--config", config, "--output-dir", str(reference), *overrides]) == 0
        err = capsys.readouterr().err
        runtime = json.loads((reference / ".hyvl-run").read_text())["runtime"]
        assert f"{runtime['trainable_params']:,} of {runtime['total_params']:,} parameters" in err
        assert "LoRA rank 4" in err and "optimizer state" in err
        assert runtime["precision"] == "bf16"  # CPU autocast: adapters under bf16 too
        assert runtime["init"]["new"] == ["visual_alpha", "textual_alpha", "log_curv"]
        assert f"hyvl init: {tmp_path / 'clip'} (hyvl model): {runtime['init']['loaded']} " in err
        assert "step 3: train.freeze ends" in err
        # the run killed after step 2's checkpoint: its later steps never happened
        resumed = tmp_path / "resumed"
        shutil.copytree(reference, resumed)
        shutil.rmtree(resumed / "checkpoints" / "step_0000004")
        shutil.rmtree(resumed / "export")
        assert main(["train", "--config", config, "--output-dir", str(resumed), *overrides]) == 0
    finally:
        torch.set_num_threads(threads)
    assert "resuming from" in capsys.readouterr().err
    ref, got = read_metrics(reference), read_metrics(resumed)
    assert [r["step"] for r in got] == [1, 2, 3, 4]
    for a, b in zip(ref, got, strict=True):
        for key in ("loss", "lr", "curv", "logit_scale", "grad_norm"):
            assert a[key] == b[key], (a["step"], key)  # bitwise
    # visual_proj was frozen until step 3, then trained
    step2 = _load_step_checkpoint(reference / "checkpoints" / "step_0000002", merge=False)
    step4 = _load_step_checkpoint(reference / "checkpoints" / "step_0000004", merge=False)
    assert torch.equal(step2.visual_proj.weight, clip.visual_proj.weight)  # model.init's
    assert not torch.equal(step4.visual_proj.weight, step2.visual_proj.weight)

    out = tmp_path / "merged"
    assert main(["export", "merge", "--checkpoint", str(reference), "--out", str(out)]) == 0
    # a step checkpoint of a LoRA run (adapters kept apart, so it needs peft) merges on load
    on_load, _, _ = hyvl.load(reference / "checkpoints" / "step_0000004")
    monkeypatch.setitem(sys.modules, "peft", None)  # the merged exports load without peft
    plain, _, tokenizer = hyvl.load(out)
    own, _, _ = hyvl.load(reference)  # the run's export/ is merged as well
    step4.eval()
    tokens, images = tokenizer(["a red square", "a cat"]), torch.rand(2, 3, 32, 32)
    for model in (plain, own, on_load):
        assert not has_adapters(model)
        torch.testing.assert_close(model.encode_text(tokens), step4.encode_text(tokens),
                                   atol=1e-5, rtol=0)  # fmt: skip
        torch.testing.assert_close(model.encode_image(images), step4.encode_image(images),
                                   atol=1e-5, rtol=0)  # fmt: skip
    assert load_run_config(reference / "config.yaml").train.lora.rank == 4
    assert ckpt.read_meta(reference / "checkpoints" / "step_0000004")["runtime"][
        "optimizer_state_bytes"] == runtime["optimizer_state_bytes"]  # fmt: skip


def test_export_merge_of_a_folder_without_checkpoints_is_a_one_line_error(tmp_path, capsys):
    from hyvl.cli.main import main

    assert main(["export", "merge", "--checkpoint", str(tmp_path), "--out", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nor a step checkpoint" in err and str(tmp_path) in err
    assert not (tmp_path / "m").exists()


def test_fsdp_is_a_one_line_error_naming_the_scalars_it_cannot_shard():
    """torch's FSDP (1 and 2) refuses 0-dim parameters, which every hyvl model has: the run
    says so before any process wraps the model."""
    from hyvl.train.state import check_fsdp

    expected = (
        r"train.fsdp=true is not supported: .* has 4 "
        r"\(logit_scale, visual_alpha, textual_alpha, log_curv\); train with DDP"
    )
    with pytest.raises(ConfigError, match=expected) as err:
        check_fsdp(tiny_model())
    assert len(str(err.value).splitlines()) == 1
