"""Evaluation and export during training: the full model, zero-shot and retrieval, the export.

Under FSDP no process holds the whole model: :func:`full_model` gathers it (a collective).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hyvl.config import RunConfig


def full_model(state: Any) -> nn.Module | None:
    """The plain model with full weights (gathered from shards under FSDP) for export.

    Under FSDP the gathering is a collective: every process must call this, and only the
    main process gets a model back (None elsewhere; accelerate gathers to rank 0 only).
    """
    if not state.sharded:
        return state.model
    from hyvl.models.registry import create_model

    weights = state.accelerator.get_state_dict(state.module)
    if not state.is_main:
        return None
    model_state = {k[len("model.") :]: v for k, v in weights.items() if k.startswith("model.")}
    from hyvl.train.finetune import prepare_model

    with torch.random.fork_rng(devices=[]):  # the adapters' random init, overwritten next
        model = prepare_model(create_model(state.model.config), state.cfg.train)
    model.load_state_dict(model_state)
    return model


def export_model(model: nn.Module, output_dir: Path) -> Path:
    """Save into OUTPUT/export, swapped in atomically so a kill never leaves half an export.

    A model with LoRA adapters is exported merged (:func:`hyvl.models.lora.merged`): the
    export is a plain model that loads without peft. The previous export is deleted only
    when it holds nothing but files hyvl writes; one with other files (someone put them
    there) is kept as ``export.replaced-N``.
    """
    from safetensors import SafetensorError

    from hyvl.errors import HyvlError
    from hyvl.models.checkpoint import save
    from hyvl.train.checkpoint import disk_full
    from hyvl.train.rundir import record_export

    final = output_dir / "export"
    tmp = output_dir / ".tmp-export"
    old = output_dir / ".old-export"
    from hyvl.models.lora import has_adapters, merged

    shutil.rmtree(tmp, ignore_errors=True)
    if has_adapters(model):
        model = merged(model)
    try:
        save(model, tmp, run_dir=output_dir)  # the model card reads the run's eval.jsonl
    except (OSError, RuntimeError, HyvlError, SafetensorError) as err:
        full = disk_full(err, output_dir)
        shutil.rmtree(tmp, ignore_errors=True)  # now: it holds the space a rerun needs
        cause = "no space left on device" if full else f"{type(err).__name__}: {err}"
        raise HyvlError(
            f"{final}: cannot write the export: {cause}; the partial write was removed and the "
            "previous export is intact"
        ) from err
    written = _files(tmp)
    if final.exists():
        foreign = sorted(set(_files(final)) - set(written))
        if foreign:
            aside = next(
                output_dir / f"export.replaced-{i}"
                for i in range(1, 10**6)
                if not (output_dir / f"export.replaced-{i}").exists()
            )
            final.replace(aside)
            print(
                f"hyvl train: {final} held files hyvl did not write ({', '.join(foreign[:3])}); "
                f"kept it as {aside.name}",
                file=sys.stderr,
            )
        else:
            shutil.rmtree(old, ignore_errors=True)
            final.replace(old)
    tmp.replace(final)
    shutil.rmtree(old, ignore_errors=True)
    record_export(output_dir, written)
    return final


def _files(root: Path) -> list[str]:
    from hyvl.train.rundir import entries

    return entries(root)


def evaluate(model: nn.Module, tokenizer: Any, cfg: RunConfig, shard: Any = None) -> dict[str, Any]:
    """Zero-shot and retrieval on the configured val sets, with the functions of ``hyvl eval``.

    ``shard``: every process calls this with its :class:`~hyvl.evaluation.Shard` and they
    split the work (results identical to one process, returned on every process); without
    one, the caller's process does it all.
    """
    from hyvl.models.transforms import image_transform

    results: dict[str, Any] = {}
    preprocess = image_transform(model.image_size, train=False)
    batch_size = cfg.eval.batch_size
    # the towers run in the training's mixed precision, as open_clip's evaluation does;
    # embeddings and scores stay fp32
    precision = cfg.train.mixed_precision
    was_training = model.training
    model.eval()
    try:
        if cfg.eval.zeroshot:
            from hyvl.evaluation.zeroshot import evaluate_zeroshot

            results["zeroshot"] = evaluate_zeroshot(
                model,
                preprocess,
                tokenizer,
                cfg.eval.zeroshot,
                templates=cfg.eval.templates or None,
                hierarchy=cfg.eval.hierarchy or None,
                batch_size=batch_size,
                shard=shard,
                precision=precision,
            )
        if cfg.eval.retrieval:
            from hyvl.evaluation.retrieval import evaluate_retrieval

            captions = Path(cfg.eval.retrieval)
            results["retrieval"] = evaluate_retrieval(
                model,
                preprocess,
                tokenizer,
                captions,
                captions.parent / "images",
                batch_size=batch_size,
                shard=shard,
                precision=precision,
            )
    finally:
        model.train(was_training)
    return results


def periodic_eval(state: Any) -> dict[str, Any]:
    """Evaluation during training, on every process; the results are the main process's.

    With replicated weights (one process, DDP) the processes split the work through a Shard,
    so nobody idles at a barrier (a long evaluation on rank 0 alone can outlast the NCCL
    timeout of the others). Under FSDP the full weights are gathered (a collective) and the
    main process evaluates them alone.
    """
    from hyvl.evaluation.embed import Shard

    accelerator = state.accelerator
    if not state.sharded:
        shard = Shard(accelerator.process_index, accelerator.num_processes)
        results = evaluate(state.model, state.tokenizer, state.cfg, shard)
    else:
        full = full_model(state)
        results = (
            {}
            if full is None
            else evaluate(full.to(accelerator.device), state.tokenizer, state.cfg)
        )
    accelerator.wait_for_everyone()
    return results
