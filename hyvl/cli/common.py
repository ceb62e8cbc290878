"""Helpers shared by the CLI verbs: result tables on stdout and JSON files for machines."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (argparse turns the ValueError into a usage error)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def resolve_device(device: str | None) -> str:
    """``--device``: cuda when available by default; an unusable device is a one-line error."""
    import torch

    from hyvl.errors import HyvlError

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        kind = torch.device(device).type
    except (RuntimeError, ValueError) as err:
        raise HyvlError(f"--device {device}: not a device ({err}); use cpu or cuda[:N]") from err
    if kind == "cuda" and not torch.cuda.is_available():
        raise HyvlError(f"--device {device}: no CUDA GPU is visible here; use --device cpu")
    if kind == "cuda" and (torch.device(device).index or 0) >= torch.cuda.device_count():
        raise HyvlError(f"--device {device}: only {torch.cuda.device_count()} GPU(s) visible")
    if kind == "mps" and not torch.backends.mps.is_available():
        raise HyvlError(f"--device {device}: MPS is not available here; use --device cpu")
    return device


def add_json_arg(parser: argparse.ArgumentParser, what: str = "the results") -> None:
    parser.add_argument(
        "--json", metavar="FILE", default=None, help=f"also write {what} as JSON to FILE"
    )


def write_json(path: str | Path | None, obj: Any) -> None:
    """Write ``obj`` as indented JSON (parent folders created, replaced atomically). ``None``
    path: do nothing."""
    from hyvl.io import write_text

    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}" if abs(value) < 1e-2 and value != 0 else f"{value:.2f}"
    return str(value)


def format_table(rows: list[dict[str, Any]], title: str | None = None, align: str = "right") -> str:
    """Render rows (dicts sharing keys) as a plain aligned text table.

    ``align="right"`` right-aligns every column but the first (numbers); ``"left"`` all (text).
    """
    if not rows:
        return (title + "\n" if title else "") + "(no rows)"
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    cells = [[_cell(row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if i and align == "right" else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=False))
        )

    out = [title] if title else []
    out.append(line(columns).rstrip())
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(r).rstrip() for r in cells)
    return "\n".join(out)


def skipped_line(skipped: dict[str, int] | None) -> str:
    """``skipped: 2 (corrupt_image 1, image_too_large 1)``, or ``skipped: 0``."""
    if not skipped:
        return "skipped: 0"
    detail = ", ".join(f"{k} {v}" for k, v in sorted(skipped.items()))
    return f"skipped: {sum(skipped.values())} ({detail})"


def print_table(rows: list[dict[str, Any]], title: str | None = None, align: str = "right") -> None:
    print(format_table(rows, title, align), flush=True)


class Processes:
    """This process's place among the processes that share an evaluation or an index build.

    Under ``torchrun --nproc_per_node N`` (or ``accelerate launch``) accelerate's PartialState
    joins the processes (NCCL on GPUs, gloo on the CPU) and ``shard`` says which batches are
    this process's; only the main process reports. ``device``: the ``--device`` given, or
    cuda when available, else cpu; under several processes each takes its own GPU (or the
    CPU with ``--device cpu``). A context manager: leaving it closes the process group.
    """

    def __init__(self, device: str | None = None):
        import os

        from hyvl.evaluation.embed import Shard

        self.state = None
        self.device = resolve_device(device)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import PartialState

            self.state = PartialState(cpu=self.device == "cpu")
            self.device = self.state.device
        self.shard = Shard.from_accelerate(self.state) if self.state else Shard()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if self.state is not None:
            self.state.destroy_process_group()


def add_sharing_args(parser: argparse.ArgumentParser) -> None:
    """--device, --workers, --precision: how the embedding work runs."""
    parser.add_argument(
        "--device",
        default=None,
        help="default: cuda when available, else cpu. Under torchrun / accelerate launch each "
        "process takes its own GPU (or the CPU with --device cpu) and they split the work",
    )
    parser.add_argument(
        "--workers", type=int, default=0, help="DataLoader processes decoding images"
    )
    parser.add_argument(
        "--precision",
        type=precision_word,
        choices=PRECISIONS,
        default="fp32",
        help="autocast for the towers (embeddings and scores stay fp32); bf16 / fp16 on GPUs. "
        "The words of train.mixed_precision; accelerate's 'no' and torch's dtype names are "
        "read too",
    )


PRECISIONS = ("fp32", "bf16", "fp16")
# Other spellings users bring: accelerate ("no"), torch dtypes, Lightning ("bf16-mixed", "16").
_PRECISION_ALIASES = {
    "no": "fp32",
    "32": "fp32",
    "float32": "fp32",
    "bfloat16": "bf16",
    "bf16-mixed": "bf16",
    "float16": "fp16",
    "16": "fp16",
    "16-mixed": "fp16",
}


def precision_word(value: str) -> str:
    """``--precision`` value -> one of fp32 | bf16 | fp16 (unknown words pass on to argparse's
    choices check, which names the valid ones)."""
    word = str(value).strip().lower()
    return _PRECISION_ALIASES.get(word, word)
