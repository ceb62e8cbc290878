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


class OutputFile(argparse.Action):
    """An option naming a file the verb writes (``--json``, a PNG, a TSV). argparse only stores
    it; :func:`check_outputs` (called by ``hyvl`` before the verb runs) sees that it can be
    written, so a typo fails in a second instead of after the training or the evaluation."""

    kind = "file"

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        outputs = dict(getattr(namespace, "_outputs", None) or {})
        outputs[self.dest] = (option_string or self.dest, self.kind)
        namespace._outputs = outputs


class OutputDir(OutputFile):
    """An option naming a folder the verb writes (an export, an index, shards)."""

    kind = "dir"


def add_json_arg(parser: argparse.ArgumentParser, what: str = "the results") -> None:
    parser.add_argument(
        "--json",
        metavar="FILE",
        default=None,
        action=OutputFile,
        help=f"also write {what} as JSON to FILE (checked before the work starts)",
    )


def _probe_writable(folder: Path, flag: str, value: str) -> None:
    """Create and remove a hidden file in ``folder``, as the atomic write will: the one test
    that holds on every filesystem (``os.access`` says yes to root on /proc or a read-only
    mount)."""
    import os

    from hyvl.errors import HyvlError

    probe = folder / f".hyvl-write-check-{os.getpid()}"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except OSError as err:
        raise HyvlError(
            f"{flag} {value}: cannot write in {folder} ({err.strerror}); choose another path"
        ) from None
    os.close(fd)
    probe.unlink(missing_ok=True)


def check_output_file(value: str | Path | None, flag: str = "--json") -> None:
    """Before the work: ``value`` names a file that can be written. Not a directory (``DIR/``
    is refused, naming a file to give instead); a missing parent folder is created here, and
    the line on stderr says so; a folder that cannot be written is refused."""
    import os
    import sys

    from hyvl.errors import HyvlError

    if not value:
        return
    text = str(value)
    path = Path(text)
    if text.endswith(("/", os.sep)) or path.is_dir():
        raise HyvlError(
            f"{flag} {text}: is a directory; give a file name, e.g. {path / 'results.json'}"
        )
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise HyvlError(f"{flag} {text}: {parent} is a file, not a folder")
    if not parent.exists():
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise HyvlError(
                f"{flag} {text}: cannot create its folder {parent} ({err.strerror})"
            ) from None
        if os.environ.get("RANK", "0") == "0":
            print(f"hyvl: created folder {parent} for {flag}", file=sys.stderr)
    _probe_writable(parent, flag, text)


def check_output_dir(value: str | Path | None, flag: str = "--out") -> None:
    """Before the work: ``value`` is a folder, or a path where one can be made (it is made by
    the atomic write at the end; here nothing is created). Whether its contents may be
    replaced is the verb's own check (:func:`hyvl.io.check_out_dir`)."""
    from hyvl.errors import HyvlError

    if not value:
        return
    text = str(value)
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise HyvlError(f"{flag} {text}: exists and is not a directory; choose another output path")
    # the atomic write stages beside the folder (or makes it and its missing parents)
    where = path.parent
    while not where.exists() and where != where.parent:
        where = where.parent
    if not where.is_dir():
        raise HyvlError(f"{flag} {text}: {where} is a file, not a folder")
    _probe_writable(where, flag, text)


def check_outputs(args: argparse.Namespace) -> None:
    """Every :class:`OutputFile` / :class:`OutputDir` option given on the command line."""
    for dest, (flag, kind) in (getattr(args, "_outputs", None) or {}).items():
        value = getattr(args, dest, None)
        (check_output_dir if kind == "dir" else check_output_file)(value, flag)


def write_json(path: str | Path | None, obj: Any) -> None:
    """Write ``obj`` as indented JSON (replaced atomically; on the command line
    :func:`check_output_file` has already seen the destination). ``None`` path: do nothing."""
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
