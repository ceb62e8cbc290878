"""What a run writes while it trains: metrics.jsonl, eval.jsonl, trackers and the progress bar.

Only the main process writes files; every process calls the methods (trackers need it).
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path
from typing import Any

import torch

from hyvl.config import RunConfig, to_dict
from hyvl.errors import ConfigError
from hyvl.train import console
from hyvl.train.step import SCALARS

# Tracker name (accelerate's) -> the package it needs; without it accelerate fails late or
# logs nothing, after the model is built.
TRACKER_PACKAGES = {
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "comet_ml": "comet_ml",
    "aim": "aim",
    "mlflow": "mlflow",
    "clearml": "clearml",
    "dvclive": "dvclive",
}


def check_trackers(trackers: list[str]) -> None:
    """Fail at start, not after the first steps, when a tracker's package is missing."""
    import importlib.util

    for name in trackers:
        package = TRACKER_PACKAGES.get(name)
        if package is None:
            raise ConfigError(
                f"train.trackers: unknown tracker {name!r}; choose from {sorted(TRACKER_PACKAGES)}"
            )
        if importlib.util.find_spec(package) is None:
            raise ConfigError(
                f"train.trackers=[{name}] needs the {package!r} package: pip install {package} "
                "(or remove it from train.trackers)"
            )


def scalar(value: Any) -> float | None:
    """A float; a tensor of several values (a product space's curvatures) logs its mean."""
    if value is None:
        return None
    if torch.is_tensor(value):
        return float(value.detach().float().mean())
    return float(value)


def json_number(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def flat_hparams(cfg: RunConfig) -> dict[str, Any]:
    """The run config as flat ``{"train.lr": 0.001, ...}`` for trackers' hparams tables."""
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


def truncate_jsonl(path: Path, last_step: int) -> None:
    """After a resume, drop log lines of steps that will be replayed (atomic rewrite).

    A recorded config change carries the step it was made at, like a metrics line. A line
    that is not a JSON object (cut short by a kill or a full disk) is reported with its line
    number and dropped; the lines after it are kept.
    """
    if not path.is_file():
        return
    kept, previous = [], None
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        try:
            step = json.loads(line).get("step", 0)
        except (json.JSONDecodeError, AttributeError):
            if line.strip():
                shown = line if len(line) <= 40 else line[:40] + "..."
                before = f" (after the line of step {previous})" if previous is not None else ""
                print(
                    f"hyvl train: warning: {path}:{n} is cut short or not JSON{before}: "
                    f"{shown!r}; dropped, the lines after it are kept",
                    file=sys.stderr,
                )
            continue
        previous = step
        if step <= last_step:
            kept.append(line)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(k + "\n" for k in kept))
    os.replace(tmp, path)


def step_record(state: Any, result: Any, *, lr, grad_norm, stepped, samples_per_s, skipped):
    """One metrics.jsonl line: step, loss terms, lr, the step's scalars, throughput, skips.

    ``curv`` and ``logit_scale`` are the values the step's loss used (``logit_scale`` the
    multiplier of the logits, exp of the parameter ``model.logit_scale``).
    """
    record: dict[str, Any] = {"step": state.step}
    record.update({k: json_number(v) for k, v in result.losses.items()})
    record["lr"] = lr
    record.update({name: scalar(getattr(result.embeddings, name)) for name in SCALARS})
    record.update(
        {
            "grad_norm": json_number(grad_norm),
            "samples_per_s": samples_per_s,
            "skipped_samples": int(sum(skipped.values())),
            "optimizer_stepped": stepped,
        }
    )
    return record


class RunLog:
    """metrics.jsonl and eval.jsonl (appended, flushed per line), trackers and the bar."""

    def __init__(self, output_dir: Path, state: Any):
        from hyvl.progress import progress_bar

        self.output_dir = output_dir
        self.accelerator = state.accelerator
        self.main = state.is_main
        self.trackers = bool(state.cfg.train.trackers)
        self.metrics = open(output_dir / "metrics.jsonl", "a") if self.main else None  # noqa: SIM115
        self.evals = None
        if self.trackers:
            self.accelerator.init_trackers("hyvl", config=flat_hparams(state.cfg))
        # step, loss, lr and health first, within 80 columns (hyvl.train.console)
        self.bar = progress_bar(
            total=state.cfg.train.max_steps,
            initial=state.step,
            disable=not self.main,
            desc="train",
            ncols=console.bar_columns(),
            bar_format=console.BAR_FORMAT,
            log_format=console.LOG_FORMAT,
            file=sys.stderr,
        )

    def step(self, record: dict[str, Any]) -> None:
        if self.main:
            self.metrics.write(json.dumps(record) + "\n")
            self.metrics.flush()
            self.bar.set_postfix_str(console.progress_fields(record), refresh=False)
        if self.trackers:
            numbers = {k: v for k, v in record.items() if isinstance(v, (int, float))}
            self.accelerator.log(numbers, step=record["step"])

    def eval(self, step: int, results: dict[str, Any]) -> None:
        if self.main:
            self.evals = self.evals or open(self.output_dir / "eval.jsonl", "a")  # noqa: SIM115
            self.evals.write(json.dumps({"step": step, **results}) + "\n")
            self.evals.flush()

    def close(self) -> None:
        self.bar.close()
        for f in (self.metrics, self.evals):
            if f is not None:
                f.close()
        if self.trackers:
            self.accelerator.end_training()
