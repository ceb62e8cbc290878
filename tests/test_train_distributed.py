"""Two processes (torchrun, gloo, Accelerator(cpu=True)) compute the same gradients as one
process on the combined batch, with and without GradCache accumulation: LoRA adapters (peft,
train.lora) in the text tower (the image tower, without adapters, is frozen as LoRA freezes
every tower weight), the lift training but the image projection frozen (train.freeze).

This file is also the worker: ``tests/test_train_distributed.py OUT`` under torchrun
(``accelerate launch --cpu --num_processes 2`` starts only one process, see docs/pitfalls.md).
"""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

GLOBAL_BATCH = 8
FROZEN = ("visual_proj.",)
ACCUMS = (1, 2)
# hycoclip_tiny exercises every embedding kind (images, texts, box crops, box texts).
OVERRIDES = [
    "model=hycoclip_tiny",
    "model.vision.image_size=32",
    "objective.kind=hycoclip",
    "train.cpu=true",
    f"train.batch_size={GLOBAL_BATCH}",
    # LoRA under DDP: adapters in the text tower (its nn.MultiheadAttention and MLP), and the
    # lift (projections, alphas, curvature, logit scale) in full, so both kinds of gradient
    # are compared
    "train.lora.rank=4",
    "train.lora.towers=[textual]",
    "train.lora.dropout=0",
    # train.freeze under DDP: the frozen parameters are left out of the reduction
    f"train.freeze=[{','.join(FROZEN)}]",
]


def global_batch(model, tokenizer, k=1):
    """A fixed batch every process can rebuild: (images, tokens, box_images, box_tokens)."""
    g = torch.Generator().manual_seed(0)
    size = model.image_size
    images = torch.rand(GLOBAL_BATCH, 3, size, size, generator=g)
    box_images = torch.rand(GLOBAL_BATCH * k, 3, size, size, generator=g)
    tokens = tokenizer([f"a photo of object number {i} on a table" for i in range(GLOBAL_BATCH)])
    box_tokens = tokenizer([f"object {i}" for i in range(GLOBAL_BATCH * k)])
    return images, tokens, box_images, box_tokens


def worker(out_dir: Path) -> None:
    from types import SimpleNamespace

    from safetensors.torch import save_file

    from hyvl.config import load_run_config
    from hyvl.train.finetune import freeze
    from hyvl.train.state import build_model_and_objective, make_accelerator
    from hyvl.train.step import TrainModule, forward_backward

    cfg = load_run_config(None, OVERRIDES)
    accelerator = make_accelerator(cfg, out_dir)
    model, tokenizer, objective = build_model_and_objective(cfg)
    core = TrainModule(model, objective)
    assert freeze(core, cfg.train) == ["model.visual_proj.weight"]  # as build_state does
    module = accelerator.prepare(core)
    rank, world = accelerator.process_index, accelerator.num_processes
    per = GLOBAL_BATCH // world
    images, tokens, box_images, box_tokens = global_batch(model, tokenizer)
    rows = slice(rank * per, (rank + 1) * per)
    local = SimpleNamespace(
        images=images[rows],
        tokens=tokens[rows],
        box_images=box_images[rows],
        box_tokens=box_tokens[rows],
    )
    for accum in ACCUMS:
        result = forward_backward(accelerator, module, local, grad_accum=accum)
        grads = {
            n: p.grad.detach().clone().contiguous()
            for n, p in core.named_parameters()
            if p.grad is not None
        }
        if accelerator.is_main_process:
            save_file(grads, str(out_dir / f"grads_w{world}_k{accum}.safetensors"))
            (out_dir / f"loss_w{world}_k{accum}.json").write_text(json.dumps(result.losses))
        core.zero_grad(set_to_none=True)
    accelerator.wait_for_everyone()


def test_two_processes_match_one_process_on_the_combined_batch(tmp_path):
    from safetensors.torch import load_file

    script = str(Path(__file__).resolve())
    worker(tmp_path)  # the one-process reference needs no process of its own
    double = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            script,
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert double.returncode == 0, double.stderr[-3000:]

    reference = load_file(str(tmp_path / "grads_w1_k1.safetensors"))
    ref_loss = json.loads((tmp_path / "loss_w1_k1.json").read_text())
    assert len(reference) > 10 and all(torch.isfinite(g).all() for g in reference.values())
    adapters = [n for n in reference if "lora_B" in n]
    assert adapters and all(n.startswith("model.textual.") for n in adapters)
    assert any(reference[n].abs().sum() > 0 for n in adapters)  # B starts at 0, its grad not
    assert not any(n.startswith("model.textual.") and "lora_" not in n for n in reference)
    assert not any(n.startswith(tuple("model." + f for f in FROZEN)) for n in reference)
    assert "model.visual_alpha" in reference and "model.textual_proj.weight" in reference
    assert not any(n.startswith("model.visual.") for n in reference)  # no adapters there
    for world, accum in [(1, 2), (2, 1), (2, 2)]:
        grads = load_file(str(tmp_path / f"grads_w{world}_k{accum}.safetensors"))
        assert grads.keys() == reference.keys(), (world, accum)
        for name, grad in grads.items():
            torch.testing.assert_close(
                grad, reference[name], rtol=1e-4, atol=1e-6, msg=f"{name} w{world} k{accum}"
            )
        losses = json.loads((tmp_path / f"loss_w{world}_k{accum}.json").read_text())
        assert losses["loss"] == pytest.approx(ref_loss["loss"], rel=1e-5)


if __name__ == "__main__":
    worker(Path(sys.argv[1]))
