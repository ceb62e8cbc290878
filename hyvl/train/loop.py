"""The run: prepare the output directory, build, resume, loop, log, evaluate, checkpoint, export.

Read it top to bottom. One :class:`~hyvl.train.state.TrainState` carries the run; the step
itself (model + objective, GradCache) is :mod:`hyvl.train.step`; building is
:mod:`hyvl.train.state`; files are :mod:`hyvl.train.records`, :mod:`hyvl.train.rundir` and
:mod:`hyvl.train.checkpoint`.

Resume is automatic: if ``OUTPUT/checkpoints`` holds a complete checkpoint, training continues
from it, bit-identical on CPU to a run that was never interrupted.
"""

from __future__ import annotations

import json
import math
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

from hyvl.config import RunConfig
from hyvl.errors import ConfigError, DataError, HyvlError
from hyvl.io import write_text
from hyvl.train import box_towers as towers
from hyvl.train import checkpoint as ckpt
from hyvl.train import console, finetune
from hyvl.train.allocator import keep_freed_memory
from hyvl.train.health import CollapseError, TrainingHealth
from hyvl.train.lock import RunLock
from hyvl.train.periodic import export_model, full_model, periodic_eval
from hyvl.train.preempt import Interrupted, StopSignals, exit_code
from hyvl.train.preflight import preflight
from hyvl.train.records import RunLog, check_trackers, scalar, step_record, truncate_jsonl
from hyvl.train.rundir import (
    check_output_dir,
    prepare_output_dir,
    record_box_towers,
    record_runtime,
)
from hyvl.train.state import (
    TrainState,
    build_loader,
    build_model_and_objective,
    build_state,
    make_accelerator,
)
from hyvl.train.step import (
    StepResult,
    batch_tensors,
    forward_backward,
    from_every_process,
    mean_over_processes,
    sum_counts,
)

# What a run stopped by train.on_collapse=stop leaves in its directory (CollapseError.report).
STOPPED = "stopped.json"


def train(cfg: RunConfig, output_dir: str | Path, *, overwrite: bool = False) -> dict[str, Any]:
    """Train ``cfg`` into ``output_dir``; resumes automatically from its latest checkpoint.

    ``overwrite``: accept an output directory hyvl did not make (see :mod:`hyvl.train.rundir`).
    Returns a summary: ``{"step", "started_at_step", "export", "last": <last logged metrics>,
    "eval": <the last evaluation, as in eval.jsonl>, "runtime": <device, precision, world
    size>, "seconds", "skipped": {reason: samples}, "health", "box_towers"}`` (the arrangement
    used); ``skipped`` (and metrics.jsonl's ``skipped_samples``) add up every process's skips
    (each reads its own shards). A rerun of a finished run takes ``last`` and ``eval`` from
    the run's metrics.jsonl and eval.jsonl.
    ``train.on_collapse=stop`` raises :class:`~hyvl.train.health.CollapseError` with that
    summary plus ``stopped`` (the last healthy checkpoint...), also written to ``stopped.json``.
    """
    output_dir = Path(output_dir)
    started = time.perf_counter()
    # ---- fail before anything is built (every process: they all must stop)
    check_trackers(cfg.train.trackers)
    preflight(cfg)
    changes = check_output_dir(output_dir, cfg, overwrite=overwrite)
    accelerator = make_accelerator(cfg, output_dir)
    if accelerator.device.type == "cpu":  # freed activations stay for the next step's reuse
        keep_freed_memory()
    lock = RunLock(output_dir)
    # signals are caught from here on: one during the build stops the run before its first step
    with StopSignals() as stop:
        try:
            take_lock(lock, accelerator)
            return _train(cfg, output_dir, accelerator, changes, stop, started)
        finally:
            lock.release()


def take_lock(lock: RunLock, accelerator: Any) -> None:
    """The main process takes the output directory's lock; every process fails if it can't."""
    error = None
    if accelerator.is_main_process:
        try:
            for note in lock.acquire():
                print(note, file=sys.stderr)
        except ConfigError as err:
            error = str(err)
    errors = [e for e in from_every_process(accelerator, error) if e]
    if errors:
        raise ConfigError(errors[0])


def _train(cfg, output_dir, accelerator, changes, stop, started) -> dict[str, Any]:
    tcfg = cfg.train
    accelerator.wait_for_everyone()  # every process has checked before the main one writes
    if accelerator.is_main_process:
        prepare_output_dir(output_dir, cfg, changes)
    accelerator.wait_for_everyone()

    state = build_state(cfg, accelerator, build_model_and_objective)
    state.runtime = {**console.runtime(accelerator, cfg), **state.parameters}
    accelerator.print(console.start_line(state.runtime), file=sys.stderr)
    if state.init_report is not None:
        state.runtime["init"] = state.init_report.as_dict()
        accelerator.print(state.init_report.describe(), file=sys.stderr)
    accelerator.print(finetune.describe(state.parameters, tcfg), file=sys.stderr)
    resume(state, output_dir, changes)
    started_at_step = state.step
    if state.is_main:
        record_runtime(output_dir, {**state.runtime, "started_at_step": state.step})
    # in bounds from the first step (a checkpoint of an older hyvl); model and objective
    state.train_module.clamp_scalars_()
    loader = build_loader(state)
    batches = iter(loader)
    log = RunLog(output_dir, state)
    health = TrainingHealth(cfg, tcfg.batch_size)
    if tcfg.unfreeze_at and state.step >= tcfg.unfreeze_at:  # resumed past the unfreeze
        finetune.unfreeze(state.train_module, state.frozen)
    trainable = [p for p in state.module.parameters() if p.requires_grad]
    do_eval = bool(cfg.eval.zeroshot or cfg.eval.retrieval) and tcfg.eval_every > 0
    nonfinite_in_row = 0
    last_record: dict[str, Any] = {}
    last_eval: dict[str, Any] = {}
    window_start, window_samples = time.perf_counter(), 0
    arrangement = None  # how train.box_towers resolved (hyvl.train.box_towers), at batch one
    state.module.train()

    def summary() -> dict[str, Any]:  # a collective (skips over processes): every process
        # a rerun of a finished run logs nothing: its last loss and evaluation are in its files
        logged, evaluated = console.last_records(output_dir) if state.is_main else ({}, {})
        return {
            "step": state.step,
            "started_at_step": started_at_step,
            "export": str(output_dir / "export"),
            "last": last_record or logged,
            "eval": last_eval or evaluated,
            "runtime": state.runtime,
            "seconds": time.perf_counter() - started,
            "skipped": sum_counts(from_every_process(accelerator, loader.skipped())),
            "health": health.monitor.summary(),
            "box_towers": state.box_towers,
        }

    def save(keep: int | None = None) -> Path:
        path = ckpt.save_checkpoint(output_dir, state, keep_last=tcfg.keep_last, keep_step=keep)
        model = full_model(state)  # a collective under FSDP: every process
        error = None
        if state.is_main:
            try:
                export_model(model, output_dir)
            except HyvlError as err:  # a full disk: every process stops with the message
                error = str(err)
        errors = [e for e in from_every_process(accelerator, error) if e]
        if errors:
            raise HyvlError(errors[0])
        return path

    try:
        while state.step < tcfg.max_steps:
            signal_name = stop.agreed(accelerator)  # the same answer on every process
            if signal_name is not None:
                raise stopped_by(signal_name, state, output_dir, save)
            batch = next(batches, None)
            if batch is None:  # the stream cycles epochs: it ends only when nothing is readable
                raise DataError(f"no training samples in {cfg.data.train_shards!r}")
            batch = batch.to(accelerator.device)
            if state.frozen and tcfg.unfreeze_at and state.step == tcfg.unfreeze_at:
                finetune.unfreeze(state.train_module, state.frozen)
                trainable = [p for p in state.module.parameters() if p.requires_grad]
                accelerator.print(
                    f"hyvl train: step {state.step}: train.freeze ends (train.unfreeze_at), "
                    f"{len(state.frozen)} more parameter tensors train",
                    file=sys.stderr,
                )
            if arrangement is None:  # the first batch: train.box_towers=auto measures on it
                arrangement = towers.resolve(state, batch_tensors(batch))
                state.box_towers = arrangement["chosen"]
                if arrangement["setting"] == "auto":
                    accelerator.print(towers.describe(arrangement), file=sys.stderr)
                if state.is_main and arrangement["by"] != "recorded":
                    record_box_towers(output_dir, arrangement)
                window_start = time.perf_counter()  # the measurement is not training time
            state.train_module.objective.step = state.step  # the entailment warm-up's clock
            result = forward_backward(
                accelerator,
                state.module,
                batch,
                grad_accum=tcfg.grad_accum,
                box_towers=state.box_towers,
            )
            lr, grad_norm, stepped = optimizer_step(state, trainable, result)
            state.step += 1
            state.data_position, state.skipped = loader.position, loader.skipped()
            window_samples += tcfg.batch_size
            log.bar.update(1)

            nonfinite_in_row = 0 if result.finite else nonfinite_in_row + 1
            if not result.finite:
                accelerator.print(
                    f"hyvl train: step {state.step}: non-finite loss or gradient, step skipped "
                    f"({nonfinite_in_row} in a row)",
                    file=sys.stderr,
                )

            last = state.step == tcfg.max_steps
            if state.step % tcfg.log_every == 0 or not result.finite or last:
                elapsed = max(time.perf_counter() - window_start, 1e-9)
                last_record = step_record(
                    state,
                    result,
                    lr=lr,
                    grad_norm=grad_norm,
                    stepped=stepped,
                    samples_per_s=window_samples / elapsed,
                    skipped=sum_counts(from_every_process(accelerator, loader.skipped())),
                )
                if result.finite:  # a skipped step's embeddings may hold NaN
                    # every process judges the same (mean) numbers, so all stop together
                    mean = partial(mean_over_processes, accelerator)
                    problems = health.observe(
                        state.step, last_record, result.embeddings, state.model, mean
                    )
                    for line in problems:
                        accelerator.print(line, file=sys.stderr)
                log.step(last_record)
                window_start, window_samples = time.perf_counter(), 0

            health.check_stop(state.step, lambda: ckpt.list_checkpoints(output_dir))
            if nonfinite_in_row >= tcfg.max_nonfinite:
                raise FloatingPointError(
                    f"hyvl train: {nonfinite_in_row} non-finite losses in a row (train.max_nonfinite="
                    f"{tcfg.max_nonfinite}) at step {state.step}; lower train.lr, set "
                    "train.grad_clip, or try train.mixed_precision=fp32. Last good checkpoint: "
                    f"{ckpt.latest_checkpoint(output_dir)}"
                )

            if do_eval and (state.step % tcfg.eval_every == 0 or last):
                last_eval = {"step": state.step, **periodic_eval(state)}
                log.eval(state.step, last_eval)
                for line in health.observe_zeroshot(state.step, last_eval.get("zeroshot")):
                    accelerator.print(line, file=sys.stderr)
                for line in console.chance_warnings(last_eval.get("zeroshot") or {}):
                    accelerator.print(f"hyvl train: step {state.step}: {line}", file=sys.stderr)

            if state.step % tcfg.checkpoint_every == 0 or last:
                # a collapse building: the last healthy checkpoint outlives keep_last
                save(health.keep_step())
    except CollapseError as err:  # on_collapse=stop: the stop is recorded in the run dir
        err.summary = {**summary(), "stopped": err.report}
        if state.is_main:
            write_text(output_dir / STOPPED, json.dumps(err.report, indent=2) + "\n")
        raise
    except Interrupted as err:
        stop_info = {"signal": err.signal, "step": err.step, "checkpoint": err.checkpoint}
        err.summary = {**summary(), "interrupted": stop_info}
        raise
    except KeyboardInterrupt:  # a second Ctrl-C: abandoned mid-step, nothing saved
        latest = ckpt.latest_checkpoint(output_dir)
        kept = f"{latest[1]} (step {latest[0]})" if latest else "none"
        lost = state.step - (latest[0] if latest else 0)
        accelerator.print(
            f"hyvl train: abandoned at step {state.step} without a checkpoint; last checkpoint: "
            f"{kept}; the {lost} step(s) after it are lost and will be trained again",
            file=sys.stderr,
        )
        raise
    finally:
        log.close()
        # The loader's worker processes end now, not when the exception that stopped the run
        # is dropped: a Python caller holding it (or the interpreter's exit, which SIGTERMs
        # daemonic children that ignore SIGTERM, then joins them) would wait on them forever.
        close = getattr(batches, "close", None)
        if close is not None:
            close()
    return summary()


def stopped_by(signal_name: str, state: TrainState, output_dir: Path, save) -> Interrupted:
    """Checkpoint the step reached (unless it has one) and say so; returns the exception."""
    latest = ckpt.latest_checkpoint(output_dir)
    if state.step == 0:
        path, what = None, "nothing was trained yet, nothing is lost"
    elif latest is not None and latest[0] == state.step:
        path, what = latest[1], "nothing is lost"
    else:
        path, what = save(), "nothing is lost"
    code = exit_code(signal_name)
    where = f"checkpoint {path}" if path else "no checkpoint needed"
    message = (
        f"hyvl train: stopped by {signal_name} at step {state.step}/{state.cfg.train.max_steps}; "
        f"{where}; {what}: rerun the same command to continue (exit {code})"
    )
    state.accelerator.print(message, file=sys.stderr)
    checkpoint = str(path) if path else None
    return Interrupted(
        message, signal=signal_name, step=state.step, checkpoint=checkpoint, exit_code=code
    )


def resume(state: TrainState, output_dir: Path, changes: dict | None = None) -> None:
    """Continue from the newest readable checkpoint, or seed this process's random streams.

    The seeds drive dropout / drop-path; data order and augmentation have their own seeds.
    Accepted config ``changes`` are recorded in metrics.jsonl at the resumed step.
    """
    from accelerate.utils import set_seed

    accelerator, seed = state.accelerator, state.cfg.train.seed
    meta = ckpt.resume(output_dir, state)
    if meta is None:
        set_seed(seed + accelerator.process_index)
        if state.is_main:  # lines of an earlier attempt that never reached a checkpoint
            truncate_jsonl(output_dir / "metrics.jsonl", 0)
            truncate_jsonl(output_dir / "eval.jsonl", 0)
        accelerator.wait_for_everyone()
        return
    if not meta["rng_restored"]:
        accelerator.print(
            f"hyvl train: warning: world size changed ({meta.get('world_size')} -> "
            f"{accelerator.num_processes}); resuming with fresh random streams",
            file=sys.stderr,
        )
        set_seed(seed + 1000 * state.step + accelerator.process_index)
    accelerator.print(
        f"hyvl train: resuming from {ckpt.step_dir(output_dir, state.step)} (step {state.step})",
        file=sys.stderr,
    )
    if state.is_main:
        truncate_jsonl(output_dir / "metrics.jsonl", state.step)
        truncate_jsonl(output_dir / "eval.jsonl", state.step)
        if changes:
            note = {"step": state.step, "event": "config_change", "changes": changes}
            with open(output_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(note) + "\n")
    accelerator.wait_for_everyone()


def optimizer_step(state: TrainState, trainable: list, result: StepResult):
    """Clip, step, clamp the bounded scalars, zero the gradients, advance the schedule;
    returns (lr, grad_norm, stepped).

    A non-finite loss (``result.finite`` False) or an overflowed gradient skips the update;
    the schedule advances anyway so a resumed run's lr matches the step count.
    """
    accelerator, tcfg = state.accelerator, state.cfg.train
    grad_norm, stepped = None, False
    if result.finite:
        # Unscales fp16 gradients first; inf max_norm = measure only (factor 1.0, exact).
        max_norm = tcfg.grad_clip if tcfg.grad_clip > 0 else float("inf")
        grad_norm = scalar(accelerator.clip_grad_norm_(trainable, max_norm))
        if accelerator.scaler is None and not math.isfinite(grad_norm):
            result.finite = False  # finite loss, overflowed gradient: skip too
        else:
            state.optimizer.step()
            stepped = not accelerator.optimizer_step_was_skipped
            # the bounded scalars are clamped in place after the step, as open_clip does
            # (HyvlModel.clamp_scalars_ says why there): every process, its own copy or shard
            state.train_module.clamp_scalars_()  # the model's and the learned entail weight
    state.optimizer.zero_grad(set_to_none=True)
    lr = state.scheduler.get_last_lr()[0]
    state.scheduler.step()
    return lr, grad_norm, stepped
