"""`hyvl train --config FILE --output-dir DIR [key=value ...]`."""

from __future__ import annotations

import argparse
import os
import sys

from hyvl.cli.common import add_json_arg, print_table, write_json

EPILOG = """\
examples:
  hyvl train --config meru_tiny --output-dir runs/meru_tiny
  hyvl train --config my_run.yaml --output-dir runs/mine
  hyvl train --output-dir runs/mine          # resume with runs/mine/config.yaml
  hyvl train --config hycoclip_vit_b --output-dir runs/hyco \\
      data.train_shards='/data/grit/{000000..001999}.tar' train.batch_size=768
  # several processes (GPUs, or CPU processes with gloo):
  torchrun --nproc_per_node 2 -m hyvl train --config ... --output-dir ... train.cpu=true
  accelerate launch --multi_gpu --num_processes 8 -m hyvl train --config ... --output-dir ...

Training resumes automatically when DIR already holds a checkpoint (with the same settings,
or train.allow_config_change=true). SIGTERM, SIGUSR1 (SLURM's warning signal, e.g.
#SBATCH --signal=USR1@120) and Ctrl-C finish the current step, write a checkpoint and exit:
75 after SIGTERM / SIGUSR1 (requeue on it), 130 after Ctrl-C; rerun the same command to
continue exactly. One trainer per DIR: a second one is refused (DIR/.hyvl-lock names the
holder). Before anything is built, every path of the config is
checked and the first samples are read: a problem is one line naming the key (exit 2).
"""


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "train",
        help="train a model from a YAML config (resumes automatically)",
        description="Train CLIP / MERU / HyCoCLIP with accelerate. DIR receives config.yaml (resolved), "
        "metrics.jsonl, checkpoints/ and export/ (loadable with hyvl.load(DIR)).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        default=None,
        metavar="NAME|FILE",
        help="a packaged recipe name (`hyvl config list`), NAME.yaml, or a YAML file; "
        "without it, DIR/config.yaml (resuming a run)",
    )
    p.add_argument(
        "--output-dir",
        required=True,
        metavar="DIR",
        help="where checkpoints, logs and the export go (its config.yaml when resuming)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty DIR that hyvl did not make (no file there is deleted)",
    )
    add_json_arg(
        p,
        "the final summary: step, export, last metrics, the last evaluation (eval), where it "
        "ran (runtime: device, precision, world size), seconds, skipped by reason, health (and "
        "stopped, when train.on_collapse=stop ended the run)",
    )
    p.add_argument(
        "overrides",
        nargs="*",
        metavar="key=value",
        help="dotted overrides, e.g. train.max_steps=100 train.batch_size=32 data.train_shards=...",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hyvl.config import load_run_config
    from hyvl.errors import ConfigError, HyvlError
    from hyvl.train.health import CollapseError
    from hyvl.train.loop import train
    from hyvl.train.preempt import Interrupted

    saved = Path(args.output_dir) / "config.yaml"
    config = args.config
    if config is None:  # `hyvl train --output-dir RUN`: the run's own config
        if not saved.is_file():
            raise ConfigError(
                f"--config is missing and {saved} does not exist: a new run names its recipe "
                "(--config NAME|FILE, see `hyvl config list`)"
            )
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"config: {saved} (the run's own)", file=sys.stderr)
        config = saved
    cfg = load_run_config(config, args.overrides)
    try:
        summary = train(cfg, args.output_dir, overwrite=args.overwrite)
    except Interrupted as err:  # a signal: checkpoint written, the message printed already
        if err.summary is not None and int(os.environ.get("RANK", "0")) == 0:
            write_json(args.json, err.summary)  # with "interrupted": signal, step, checkpoint
        _last_barrier()  # torchrun stops the others as soon as one process has exited
        return err.exit_code
    except (
        FloatingPointError,
        CollapseError,
    ) as err:  # diverged / collapsed: plainly, no traceback
        print(str(err), file=sys.stderr)
        stopped = getattr(err, "summary", None)
        if stopped is not None and int(os.environ.get("RANK", "0")) == 0:
            write_json(args.json, stopped)  # with "stopped": the last healthy checkpoint
        return 1
    except HyvlError as err:
        if args.config is None or not saved.is_file() or Path(args.config) == saved:
            raise
        # a recipe name given again for an existing run: its settings are in config.yaml
        text = (
            f"{err} ({saved} is this run's config: `hyvl train --output-dir "
            f"{args.output_dir}` resumes with it)"
        )
        try:
            hinted = type(err)(text)
        except TypeError:  # an error type with other arguments: the message is what counts
            hinted = HyvlError(text)
        raise hinted from err
    if int(os.environ.get("RANK", "0")) != 0:  # several processes: the main one reports
        return 0
    print_summary(summary, args.output_dir)
    write_json(args.json, summary)
    return 0


def _last_barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def print_summary(summary: dict, output_dir: str) -> None:
    """The end of a run: steps, last loss, skips, export; the last evaluation as a table; health."""
    from hyvl.train.console import evaluation_rows

    last = summary["last"]
    loss = last.get("loss")
    loss_text = f"{loss:.4f} (step {last['step']})" if isinstance(loss, float) else "none logged"
    skipped = summary["skipped"]
    skipped_text = ", ".join(f"{k} {v}" for k, v in skipped.items()) if skipped else "none"
    runtime = summary.get("runtime") or {}
    where = f"{runtime.get('device')}, {runtime.get('precision')}" if runtime else "?"
    done = summary["step"] - summary.get("started_at_step", 0)
    if done == 0:
        head = f"nothing to train: {output_dir} is at step {summary['step']} already"
    else:
        start = summary.get("started_at_step", 0)
        head = f"trained {done} steps" + (f" (from step {start})" if start else "")
        head += f" in {summary['seconds']:.0f} s on {where}"
    print(
        f"{head}; last loss {loss_text}; skipped samples: {skipped_text}; export: {summary['export']}"
    )
    evaluation = summary.get("eval") or {}
    rows = evaluation_rows(evaluation)
    if rows:
        print_table(rows, title=f"last evaluation (step {evaluation.get('step')}, eval.jsonl)")
    print(f"health: {summary['health']}")
