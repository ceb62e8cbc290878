"""Building a run: the accelerator, the model + objective, the optimizer, the data loader.

Everything the loop needs travels in ONE :class:`TrainState`. accelerate does the plumbing
(process group, DDP/FSDP wrapping, autocast, fp16 scaler, torch.compile); two things are
deliberately NOT passed through ``prepare``:

- the data loader: a webdataset loader splits by rank itself; batches are moved to the
  device by the loop;
- the scheduler: a prepared scheduler steps once per process per step.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from hyvl.config import RunConfig
from hyvl.errors import ConfigError
from hyvl.train.optim import build_optimizer, build_scheduler
from hyvl.train.step import TrainModule

# torch.compile's backend for train.compile=true. tools/gpu_check.py --dry-run sets "eager"
# (graph capture without code generation) to run the same path on a CPU in seconds.
COMPILE_BACKEND = "inductor"


@dataclass
class TrainState:
    """Everything a run holds between steps (what a checkpoint saves, plus the handles).

    ``module`` is the :class:`TrainModule` as ``accelerator.prepare`` returned it (wrapped
    for DDP / FSDP / compile, or itself on one process); :attr:`train_module` and
    :attr:`model` unwrap it. ``data_position`` counts the loader items consumed (one per
    raw batch read, usable or not), which is where a resumed stream restarts; ``skipped``
    the samples its loader skipped, by reason (this process's); ``box_towers`` the tower
    arrangement the steps use (:mod:`hyvl.train.box_towers`), None until the first batch;
    ``runtime`` where the run runs: device, precision, processes (:func:`~hyvl.train.console.runtime`);
    ``frozen`` the train module's parameters train.freeze holds until train.unfreeze_at;
    ``parameters`` the counts of :func:`~hyvl.train.finetune.parameter_report`.
    """

    cfg: RunConfig
    accelerator: Any
    module: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    tokenizer: Any
    step: int = 0
    data_position: int = 0
    skipped: dict = field(default_factory=dict)  # samples skipped so far, by reason
    box_towers: str | None = None  # the arrangement in use (a checkpoint's, on resume)
    runtime: dict = field(default_factory=dict)  # device, precision, world size
    frozen: list = field(default_factory=list)  # train.freeze's parameters, until unfreeze_at
    parameters: dict = field(default_factory=dict)  # trainable / total / optimizer state size
    init_report: Any = None  # model.init's InitReport (hyvl.models.init), None without one

    @property
    def train_module(self) -> TrainModule:
        return self.accelerator.unwrap_model(self.module, keep_torch_compile=False)

    @property
    def model(self) -> nn.Module:
        return self.train_module.model

    @property
    def sharded(self) -> bool:
        """FSDP: no process holds the whole model (saving and export gather it)."""
        return bool(self.cfg.train.fsdp)

    @property
    def is_main(self) -> bool:
        return bool(self.accelerator.is_main_process)


def make_accelerator(cfg: RunConfig, output_dir):
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
        kwargs["dynamo_backend"] = COMPILE_BACKEND
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
    from hyvl.models.registry import create_model
    from hyvl.models.tokenizer import get_tokenizer
    from hyvl.objectives import build_objective
    from hyvl.train.finetune import prepare_model

    torch.manual_seed(cfg.train.seed)  # identical initial weights on every process
    model = prepare_model(create_model(cfg.model), cfg.train)  # + train.lora's adapters
    objective = build_objective(cfg.objective, model.geometry)
    tokenizer = get_tokenizer(model.config.text)
    return model, tokenizer, objective


def check_fsdp(module: nn.Module) -> None:
    """train.fsdp: torch's FSDP refuses 0-dim parameters (``FullyShardedDataParallel``, what
    accelerate's FSDP plugin wraps with, and FSDP2's ``fully_shard`` alike), and every hyvl
    model has them (the logit scale; curvature and alphas in the hyperbolic ones). hyvl does
    not shard around them (``fully_shard(ignored_params=...)`` with their gradients reduced by
    hand, or shape-(1,) scalars, are not built), so the run stops here with one line naming
    them, before torch's error after the model is built on every process."""
    scalars = [n.removeprefix("model.") for n, p in module.named_parameters() if p.dim() == 0]
    if scalars:
        raise ConfigError(
            "train.fsdp=true is not supported: torch's FSDP (1 and 2) refuses 0-dim "
            f"parameters and this model has {len(scalars)} ({', '.join(scalars)}); train "
            "with DDP (train.fsdp=false, the default) and save memory with "
            "model.grad_checkpointing=true, objective.logit_chunk_rows or train.lora.rank"
        )


def build_state(cfg: RunConfig, accelerator: Any, build=build_model_and_objective) -> TrainState:
    """Model + objective in one :class:`TrainModule`, AdamW groups, warmup-cosine schedule."""
    from hyvl.train.finetune import freeze, parameter_report

    tcfg = cfg.train
    if tcfg.unfreeze_at and accelerator.num_processes > 1:
        # DDP fixes the set of parameters it reduces when it wraps the model
        raise ConfigError(
            f"train.unfreeze_at={tcfg.unfreeze_at} works on one process only (DDP reduces the "
            "gradients of the parameters trainable when it wraps the model); use train.freeze "
            "alone, or run the two phases as two runs"
        )
    model, tokenizer, objective = build(cfg)
    core = TrainModule(model, objective)
    if tcfg.fsdp:
        check_fsdp(core)
    # Parameters that unfreeze later are in the optimizer from the start (AdamW passes over
    # a parameter without gradient); frozen for good, they are left out of it.
    frozen = [] if tcfg.unfreeze_at else freeze(core, tcfg)
    optimizer = build_optimizer(core, tcfg)
    if tcfg.unfreeze_at:
        frozen = freeze(core, tcfg)
    parameters = parameter_report(core, optimizer)
    scheduler = build_scheduler(optimizer, tcfg)
    module, optimizer = accelerator.prepare(core, optimizer)
    state = TrainState(cfg, accelerator, module, optimizer, scheduler, tokenizer)
    state.frozen, state.parameters = frozen, parameters
    state.init_report = getattr(model, "init_report", None)  # model.init: what it copied
    return state


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


def build_loader(state: TrainState):
    """This process's training stream, restarted at ``state.data_position``."""
    from hyvl.data.pipeline import build_train_loader

    cfg, accelerator = state.cfg, state.accelerator
    if not cfg.data.train_shards:
        raise ConfigError("data.train_shards is empty: pass data.train_shards=PATH/{000..009}.tar")
    loader = build_train_loader(
        cfg.data,
        batch_size=local_batch_size(cfg, accelerator.num_processes),
        image_size=state.model.image_size,
        tokenizer=state.tokenizer,
        seed=cfg.train.seed,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        start_step=state.data_position,
        boxes_per_sample=cfg.data.boxes_per_sample,
    )
    loader.count_from(state.skipped)
    return loader
