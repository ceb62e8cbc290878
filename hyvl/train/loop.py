"""The training loop: build, resume, loop, log, checkpoint, export. Read it top to bottom.

accelerate does the plumbing (process group, DDP/FSDP wrapping, autocast, fp16 scaler,
torch.compile); the steps themselves are written out here:

- one :class:`TrainModule` holds the model AND the objective, so objective parameters (a
  SigLIP bias) are trained, decayed correctly and synchronised like any weight;
- the data loader is NOT passed through ``prepare`` (a webdataset loader splits by rank
  itself, see docs/pitfalls.md); batches are moved to the device here;
- the scheduler is NOT prepared either (a prepared scheduler steps once per process);
- gradient accumulation caches features (GradCache, like open_clip's ``--accum-freq``):
  contrastive negatives come from the whole batch, not from each micro-batch;
- resume is automatic: if ``OUTPUT/checkpoints`` holds a complete checkpoint, training
  continues from it, bit-identical on CPU to a run that was never interrupted.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hyvl.config import RunConfig, load_yaml, to_dict
from hyvl.errors import ConfigError, DataError
from hyvl.train import checkpoint as ckpt
from hyvl.train.health import TrainingHealth
from hyvl.train.health import postfix as health_postfix
from hyvl.train.optim import build_optimizer, build_scheduler

EMB_FIELDS = ("image", "text", "box_image", "box_text")


class TrainModule(nn.Module):
    """Model + objective as one module: one DDP/FSDP wrapper, one parameter list.

    ``forward(images, tokens, box_images, box_tokens)`` returns the objective's loss dict.
    With ``cached_grads`` (GradCache second pass) it returns the surrogate scalar
    ``sum(<embedding, dLoss/dembedding>)`` whose backward gives exactly the gradient of the
    full-batch loss for this micro-batch's rows.
    """

    def __init__(self, model: nn.Module, objective: nn.Module):
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, images, tokens, box_images=None, box_tokens=None, cached_grads=None):
        emb = self.model(images, tokens, box_images=box_images, box_tokens=box_tokens)
        if cached_grads is None:
            self.last_embeddings = emb  # training health reads the logged step's batch
            return self.objective(emb)
        surrogate = torch.zeros((), device=images.device, dtype=torch.float32)
        for name in EMB_FIELDS:
            grad = cached_grads.get(name)
            if grad is not None:
                surrogate = surrogate + (getattr(emb, name).float() * grad).sum()
        # Scalars and objective parameters enter the loss directly; their gradient is added
        # once (on the last micro-batch, the one that synchronises across processes).
        for name in ("curv", "logit_scale"):
            grad = cached_grads.get(name)
            if grad is not None and getattr(emb, name) is not None:
                surrogate = surrogate + (getattr(emb, name).float() * grad).sum()
        if "objective" in cached_grads:
            for param, grad in zip(
                self._objective_params(), cached_grads["objective"], strict=True
            ):
                if grad is not None:
                    surrogate = surrogate + (param * grad).sum()
        return surrogate

    def _objective_params(self) -> list[nn.Parameter]:
        return [p for p in self.objective.parameters() if p.requires_grad]


@dataclass
class StepResult:
    losses: dict[str, float]  # loss and every term, mean over processes
    finite: bool


# --------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------


def make_accelerator(cfg: RunConfig, output_dir: Path):
    """Accelerator for CPU/GPU, one or many processes, DDP or FSDP, optional compile."""
    from accelerate import Accelerator
    from accelerate.utils import FullyShardedDataParallelPlugin

    tcfg = cfg.train
    kwargs: dict[str, Any] = {}
    if tcfg.fsdp:
        # Shard parameters, gradients and optimizer state; full state dict gathered on save.
        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(
            state_dict_type="SHARDED_STATE_DICT", use_orig_params=True
        )
    if tcfg.compile:
        # accelerate compiles AFTER the DDP wrap, the order torch recommends.
        kwargs["dynamo_backend"] = "inductor"
    _reset_single_process_state()
    accelerator = Accelerator(
        cpu=tcfg.cpu or not torch.cuda.is_available(),
        # accelerate spells full precision "no"
        mixed_precision="no" if tcfg.mixed_precision == "fp32" else tcfg.mixed_precision,
        log_with=list(tcfg.trackers) or None,
        project_dir=str(output_dir),
        **kwargs,
    )
    if tcfg.mixed_precision == "fp16" and accelerator.device.type == "cpu":
        accelerator.print(
            "hyvl train: warning: mixed_precision=fp16 does nothing on CPU (no autocast); use bf16",
            file=sys.stderr,
        )
    return accelerator


def _reset_single_process_state() -> None:
    """Let one Python process call ``train`` twice (a notebook, ``hyvl demo --model all``).

    accelerate keeps a process-wide singleton and refuses a second Accelerator with another
    mixed-precision setting. Without a process group there is nothing to lose by resetting
    it (accelerate's own test-suite does the same); under torchrun we never reset.
    """
    from accelerate.state import AcceleratorState

    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return
    if AcceleratorState._shared_state:
        AcceleratorState._reset_state(reset_partial_state=True)


def build_model_and_objective(cfg: RunConfig):
    """(model, tokenizer, objective) from the run config; parameters seeded by ``train.seed``."""
    import hyvl
    from hyvl.models.tokenizer import get_tokenizer
    from hyvl.objectives import build_objective

    torch.manual_seed(cfg.train.seed)  # identical initial weights on every process
    model = hyvl.create_model(cfg.model)
    model.box_towers = cfg.train.box_towers
    objective = build_objective(cfg.objective, model.geometry)
    tokenizer = get_tokenizer(model.config.text)
    return model, tokenizer, objective


def local_batch_size(cfg: RunConfig, world_size: int) -> int:
    global_batch = cfg.train.batch_size
    if global_batch % world_size:
        raise ConfigError(
            f"train.batch_size={global_batch} (global) is not divisible by the {world_size} processes"
        )
    local = global_batch // world_size
    if local % cfg.train.grad_accum:
        raise ConfigError(
            f"per-process batch {local} is not divisible by train.grad_accum={cfg.train.grad_accum}"
        )
    return local


def build_loader(
    cfg: RunConfig, model: nn.Module, tokenizer: Any, accelerator: Any, start_step: int
):
    from hyvl.data.pipeline import build_train_loader

    if not cfg.data.train_shards:
        raise ConfigError("data.train_shards is empty: pass data.train_shards=PATH/{000..009}.tar")
    return build_train_loader(
        cfg.data,
        batch_size=local_batch_size(cfg, accelerator.num_processes),
        image_size=model.image_size,
        tokenizer=tokenizer,
        seed=cfg.train.seed,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        start_step=start_step,
        boxes_per_sample=cfg.data.boxes_per_sample,
    )


# --------------------------------------------------------------------------------------
# One optimizer step
# --------------------------------------------------------------------------------------


def _batch_tensors(batch: Any) -> tuple:
    return batch.images, batch.tokens, batch.box_images, batch.box_tokens


def _split(tensors: tuple, parts: int) -> list[tuple]:
    """Split (images, tokens, box_images, box_tokens) into ``parts`` micro-batches.

    Box rows are sample-major (k per sample), so splitting them into the same number of
    equal chunks keeps each sample's boxes with it.
    """
    chunks = [t.chunk(parts) if t is not None else [None] * parts for t in tensors]
    return [tuple(c[i] for c in chunks) for i in range(parts)]


def _all_finite(accelerator: Any, value: torch.Tensor) -> bool:
    """True when the loss is finite on EVERY process (all must skip together under DDP)."""
    bad = (~torch.isfinite(value.detach())).float().reshape(1)
    if accelerator.num_processes > 1:
        bad = accelerator.reduce(bad, reduction="sum")
    return bool(bad.item() == 0)


def _mean_over_processes(accelerator: Any, losses: dict[str, torch.Tensor]) -> dict[str, float]:
    names = sorted(losses)
    values = torch.stack([losses[n].detach().float().reshape(()) for n in names])
    if accelerator.num_processes > 1:
        values = accelerator.reduce(values, reduction="mean")
    return {n: float(v) for n, v in zip(names, values.tolist(), strict=True)}


def forward_backward(
    accelerator: Any, wrapped: nn.Module, core: TrainModule, batch: Any, grad_accum: int
):
    """Loss and gradients of one (per-process) batch; gradients are left in ``.grad``.

    grad_accum == 1: one forward through the wrapped module, then backward.
    grad_accum > 1 (GradCache): (1) embed every micro-batch without autograd, (2) compute the
    loss of the whole batch on those cached embeddings and its gradient with respect to
    them, (3) re-embed each micro-batch with autograd and backpropagate the cached gradient.
    The result equals the full-batch gradient (dropout aside: towers must be deterministic
    between the two passes, as in open_clip). Only the last micro-batch synchronises.
    """
    tensors = _batch_tensors(batch)
    if grad_accum == 1:
        losses = wrapped(*tensors)
        finite = _all_finite(accelerator, losses["loss"])
        if finite:
            accelerator.backward(losses["loss"])
        return StepResult(_mean_over_processes(accelerator, losses), finite)

    micro = _split(tensors, grad_accum)
    with torch.no_grad(), accelerator.autocast():
        embs = [core.model(m[0], m[1], box_images=m[2], box_tokens=m[3]) for m in micro]
    from hyvl.models.embeddings import Embeddings

    leaves: dict[str, torch.Tensor] = {}
    for name in EMB_FIELDS:
        if getattr(embs[0], name) is not None:
            leaves[name] = torch.cat([getattr(e, name).float() for e in embs]).requires_grad_(True)
    for name in ("curv", "logit_scale"):
        if getattr(embs[0], name) is not None:
            leaves[name] = getattr(embs[0], name).detach().float().requires_grad_(True)
    losses = core.objective(Embeddings(**leaves))
    core.last_embeddings = Embeddings(**leaves)
    finite = _all_finite(accelerator, losses["loss"])
    if finite:
        obj_params = core._objective_params()
        inputs = list(leaves.values()) + obj_params
        grads = torch.autograd.grad(losses["loss"], inputs, allow_unused=True)
        leaf_grads = dict(zip(leaves, grads[: len(leaves)], strict=True))
        obj_grads = list(grads[len(leaves) :])
        sizes = {n: [getattr(e, n).shape[0] for e in embs] for n in EMB_FIELDS if n in leaf_grads}
        split_grads = {n: leaf_grads[n].split(sizes[n]) for n in sizes}
        for i, m in enumerate(micro):
            last = i == len(micro) - 1
            cached = {n: split_grads[n][i] for n in split_grads}
            if last:
                cached.update(
                    {n: leaf_grads[n] for n in ("curv", "logit_scale") if n in leaf_grads}
                )
                cached["objective"] = obj_grads
            context = accelerator.no_sync(wrapped) if not last else _nullcontext()
            with context:
                surrogate = wrapped(*m, cached_grads=cached)
                accelerator.backward(surrogate)
    return StepResult(_mean_over_processes(accelerator, losses), finite)


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


# --------------------------------------------------------------------------------------
# Logging helpers
# --------------------------------------------------------------------------------------


def _truncate_metrics(path: Path, last_step: int) -> None:
    """After a resume, drop log lines of steps that will be replayed (atomic rewrite)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= last_step:
                kept.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(k + "\n" for k in kept))
    os.replace(tmp, path)


def _scalar(value: Any) -> float | None:
    if value is None:
        return None
    return float(value.detach().float()) if torch.is_tensor(value) else float(value)


def _json_number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _flat_hparams(cfg: RunConfig) -> dict[str, Any]:
    out: dict[str, Any] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else key, value)
        elif isinstance(node, (int, float, str, bool)):
            out[prefix] = node
        else:
            out[prefix] = str(node)

    walk("", to_dict(cfg))
    return out


def _skipped_samples(loader: Any) -> int:
    counts = loader.skipped() if hasattr(loader, "skipped") else {}
    return int(sum(counts.values())) if counts else 0


def check_resume_config(output_dir: Path, cfg: RunConfig) -> None:
    """Resuming with a different model or objective would load mismatched weights: refuse."""
    saved_path = output_dir / "config.yaml"
    if not saved_path.is_file():
        return
    saved = load_yaml(saved_path)
    current = to_dict(cfg)
    for section in ("model", "objective"):
        if saved.get(section) != current.get(section):
            raise ConfigError(
                f"{str(saved_path)!r} was trained with a different {section!r} section "
                f"({saved.get(section)!r} vs now {current.get(section)!r}); use a new --output-dir "
                "or the original config to resume"
            )


def save_config(output_dir: Path, cfg: RunConfig) -> None:
    import yaml

    tmp = output_dir / "config.yaml.tmp"
    tmp.write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    os.replace(tmp, output_dir / "config.yaml")


def export_model(model: nn.Module, output_dir: Path) -> Path:
    """hyvl.save into OUTPUT/export, swapped in atomically so a kill never leaves half an export."""
    import hyvl

    final = output_dir / "export"
    tmp = output_dir / ".tmp-export"
    old = output_dir / ".old-export"
    shutil.rmtree(tmp, ignore_errors=True)
    hyvl.save(model, tmp, run_dir=output_dir)  # the model card reads the run's eval.jsonl
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


# --------------------------------------------------------------------------------------
# Evaluation during training
# --------------------------------------------------------------------------------------


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


def periodic_eval(accelerator: Any, core: TrainModule, fsdp_model: Any, wrapped, tokenizer, cfg):
    """Evaluation during training, on every process; the results are the main process's.

    With replicated weights (one process, DDP) the processes split the work through a Shard,
    so nobody idles at a barrier (a long evaluation on rank 0 alone can outlast the NCCL
    timeout of the others). Under FSDP no process holds the whole model: the full weights are
    gathered (a collective) and the main process evaluates them alone.
    """
    from hyvl.evaluation.embed import Shard

    if fsdp_model is None:
        shard = Shard(accelerator.process_index, accelerator.num_processes)
        results = evaluate(core.model, tokenizer, cfg, shard)
    else:
        full = _full_model(accelerator, wrapped, core, fsdp_model)
        results = {} if full is None else evaluate(full.to(accelerator.device), tokenizer, cfg)
    accelerator.wait_for_everyone()
    return results


# --------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------


def train(cfg: RunConfig, output_dir: str | Path) -> dict[str, Any]:
    """Train ``cfg`` into ``output_dir``; resumes automatically from its latest checkpoint.

    Returns a summary: ``{"step", "export", "last": <last logged metrics>, "seconds"}``.
    """
    output_dir = Path(output_dir)
    tcfg = cfg.train
    started = time.perf_counter()
    accelerator = make_accelerator(cfg, output_dir)
    main = accelerator.is_main_process
    if main:
        output_dir.mkdir(parents=True, exist_ok=True)
        removed = ckpt.remove_partial(output_dir)
        for path in removed:
            print(f"hyvl train: removed unfinished checkpoint {path}", file=sys.stderr)
        check_resume_config(output_dir, cfg)
        save_config(output_dir, cfg)
    accelerator.wait_for_everyone()

    # ---- build
    model, tokenizer, objective = build_model_and_objective(cfg)
    core = TrainModule(model, objective)
    optimizer = build_optimizer(core, tcfg)
    scheduler = build_scheduler(optimizer, tcfg)
    wrapped, optimizer = accelerator.prepare(core, optimizer)
    fsdp_model = wrapped if tcfg.fsdp else None

    # ---- resume (or seed each process's own random stream for dropout / drop-path)
    from accelerate.utils import set_seed

    start_step = 0
    latest = ckpt.latest_checkpoint(output_dir)
    if latest is not None:
        meta = ckpt.load_checkpoint(
            latest[1],
            accelerator=accelerator,
            module=core,
            optimizer=optimizer,
            scheduler=scheduler,
            fsdp_model=fsdp_model,
        )
        start_step = int(meta["step"])
        if not meta["rng_restored"]:
            accelerator.print(
                f"hyvl train: warning: world size changed ({meta.get('world_size')} -> "
                f"{accelerator.num_processes}); resuming with fresh random streams",
                file=sys.stderr,
            )
            set_seed(tcfg.seed + 1000 * start_step + accelerator.process_index)
        accelerator.print(
            f"hyvl train: resuming from {latest[1]} (step {start_step})", file=sys.stderr
        )
        if main:
            _truncate_metrics(output_dir / "metrics.jsonl", start_step)
            _truncate_metrics(output_dir / "eval.jsonl", start_step)
    else:
        set_seed(tcfg.seed + accelerator.process_index)
    accelerator.wait_for_everyone()

    if tcfg.trackers:
        accelerator.init_trackers("hyvl", config=_flat_hparams(cfg))

    loader = build_loader(cfg, model, tokenizer, accelerator, start_step)
    batches = iter(loader)
    trainable = [p for p in wrapped.parameters() if p.requires_grad]
    metrics_file = open(output_dir / "metrics.jsonl", "a") if main else None  # noqa: SIM115
    eval_file = None
    do_eval = bool(cfg.eval.zeroshot or cfg.eval.retrieval)

    from hyvl.progress import progress_bar

    bar = progress_bar(
        total=tcfg.max_steps,
        initial=start_step,
        disable=not main,
        desc="train",
        dynamic_ncols=True,
        file=sys.stderr,
    )
    nonfinite_in_row = 0
    health = TrainingHealth(cfg, tcfg.batch_size)
    last_record: dict[str, Any] = {}
    window_start, window_samples = time.perf_counter(), 0
    step = start_step
    wrapped.train()
    try:
        while step < tcfg.max_steps:
            try:
                batch = next(batches)
            except StopIteration:
                # A finite (non-resampled) stream: start the next epoch.
                batches = iter(loader)
                try:
                    batch = next(batches)
                except StopIteration:
                    raise DataError(f"no training samples in {cfg.data.train_shards!r}") from None
            batch = batch.to(accelerator.device)
            core.objective.step = step  # the entailment warm-up's clock
            result = forward_backward(accelerator, wrapped, core, batch, tcfg.grad_accum)
            grad_norm = None
            stepped = False
            if result.finite:
                # Unscales fp16 gradients first; inf max_norm = measure only (factor 1.0, exact).
                max_norm = tcfg.grad_clip if tcfg.grad_clip > 0 else float("inf")
                grad_norm = _scalar(accelerator.clip_grad_norm_(trainable, max_norm))
                if accelerator.scaler is None and not math.isfinite(grad_norm):
                    result.finite = False  # finite loss, overflowed gradient: skip too
                else:
                    optimizer.step()
                    stepped = not accelerator.optimizer_step_was_skipped
            optimizer.zero_grad(set_to_none=True)
            lr = scheduler.get_last_lr()[0]
            scheduler.step()
            step += 1
            window_samples += tcfg.batch_size
            bar.update(1)

            if result.finite:
                nonfinite_in_row = 0
            else:
                nonfinite_in_row += 1
                accelerator.print(
                    f"hyvl train: step {step}: non-finite loss or gradient, step skipped "
                    f"({nonfinite_in_row} in a row)",
                    file=sys.stderr,
                )

            if step % tcfg.log_every == 0 or not result.finite or step == tcfg.max_steps:
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                record: dict[str, Any] = {"step": step}
                record.update({k: _json_number(v) for k, v in result.losses.items()})
                unwrapped = core.model
                record.update(
                    {
                        "lr": lr,
                        "curv": _scalar(getattr(unwrapped, "curv", None)),
                        # the multiplier of the logits (exp of the parameter model.logit_scale)
                        "logit_scale": _scalar(getattr(unwrapped, "logit_scale_exp", None)),
                        "grad_norm": _json_number(grad_norm),
                        "samples_per_s": window_samples / elapsed,
                        "skipped_samples": _skipped_samples(loader),
                        "optimizer_stepped": stepped,
                    }
                )
                if result.finite:  # a skipped step's embeddings may hold NaN
                    # every process judges the same (mean) numbers, so all stop together
                    mean = partial(_mean_over_processes, accelerator)
                    lines = health.observe(step, record, core.last_embeddings, unwrapped, mean)
                    for line in lines:
                        accelerator.print(line, file=sys.stderr)
                window_start, window_samples = time.perf_counter(), 0
                last_record = record
                if main:
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                    bar.set_postfix({**_postfix(record), **health_postfix(record)}, refresh=False)
                if tcfg.trackers:
                    accelerator.log(
                        {k: v for k, v in record.items() if isinstance(v, (int, float))}, step=step
                    )

            health.check_stop(step, lambda: ckpt.latest_checkpoint(output_dir))
            if nonfinite_in_row >= tcfg.max_nonfinite:
                raise FloatingPointError(
                    f"hyvl train: {nonfinite_in_row} non-finite losses in a row (train.max_nonfinite="
                    f"{tcfg.max_nonfinite}) at step {step}; lower train.lr, set train.grad_clip, or "
                    f"try train.mixed_precision=fp32. Last good checkpoint: {ckpt.latest_checkpoint(output_dir)}"
                )

            if (
                do_eval
                and tcfg.eval_every > 0
                and (step % tcfg.eval_every == 0 or step == tcfg.max_steps)
            ):
                results = periodic_eval(accelerator, core, fsdp_model, wrapped, tokenizer, cfg)
                if main:
                    eval_file = eval_file or open(output_dir / "eval.jsonl", "a")  # noqa: SIM115
                    eval_file.write(json.dumps({"step": step, **results}) + "\n")
                    eval_file.flush()

            if step % tcfg.checkpoint_every == 0 or step == tcfg.max_steps:
                ckpt.save_checkpoint(
                    output_dir,
                    step,
                    accelerator=accelerator,
                    module=core,
                    optimizer=optimizer,
                    scheduler=scheduler,
                    keep_last=tcfg.keep_last,
                    fsdp_model=fsdp_model,
                )
                full = _full_model(accelerator, wrapped, core, fsdp_model)  # all processes
                if main:
                    export_model(full, output_dir)
                accelerator.wait_for_everyone()
    finally:
        bar.close()
        if metrics_file is not None:
            metrics_file.close()
        if eval_file is not None:
            eval_file.close()
        if tcfg.trackers:
            accelerator.end_training()
    return {
        "step": step,
        "export": str(output_dir / "export"),
        "last": last_record,
        "seconds": time.perf_counter() - started,
        "health": health.monitor.summary(),
    }


def _full_model(
    accelerator: Any, wrapped: nn.Module, core: TrainModule, fsdp_model: Any
) -> nn.Module | None:
    """The plain model with full weights (gathered from shards under FSDP) for export.

    Under FSDP the gathering is a collective: every process must call this, and only the
    main process gets a model back (None elsewhere; accelerate gathers to rank 0 only).
    """
    if fsdp_model is None:
        return core.model
    import hyvl

    state = accelerator.get_state_dict(wrapped)
    if not accelerator.is_main_process:
        return None
    model_state = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    model = hyvl.create_model(core.model.config)
    model.load_state_dict(model_state)
    return model


def _postfix(record: dict[str, Any]) -> dict[str, str]:
    """The bar shows the totals (loss, contrastive, entail), lr, curvature, logit scale,
    samples/s and skipped samples; the per-direction terms (``contrastive_image_text``, ...)
    would wrap the line several times, so they go to metrics.jsonl only."""
    keys = [
        k
        for k in record
        if k not in ("step", "optimizer_stepped", "grad_norm")
        and not k.startswith(("contrastive_", "entail_", "spread_", "d0_", "in_cone", "health"))
        and k != "loss_over_ln_b"
    ]
    out = {}
    for key in keys:
        value = record[key]
        if value is None and key in ("curv", "logit_scale"):
            continue  # the model has none (CLIP has no curvature): nothing to show
        if value is None:
            out[key] = "nan"  # a non-finite loss, stored as null in metrics.jsonl
        elif key == "lr":
            out[key] = f"{value:.2e}"
        elif key in ("samples_per_s", "skipped_samples"):
            out[key] = f"{value:.0f}"
        else:
            out[key] = f"{value:.4f}"
    return out
