"""What ``hyvl train`` says on the console: where it runs, the progress line, the last evaluation.

* :func:`runtime` / :func:`start_line`: the device, the precision the towers really run in and
  the number of processes, printed at start and recorded in the run's marker and checkpoints
  (a recipe asking for a GPU and bf16 on a machine without one trains on the CPU: say so).
* :func:`progress_fields`: the progress line is ``train STEP/TOTAL, loss L, lr LR, health H``
  then the bar and the times, so the four that matter show first and the line fits 80
  columns; every other number of the step is in metrics.jsonl.
* :func:`evaluation_rows` / :func:`last_records`: the last zero-shot and retrieval figures as
  a small table for the end of the run, from this session or from the run's files (a rerun of
  a finished run trains nothing but still reports them and its last loss).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

# tqdm formats: on a terminal the bar fills what the fields leave of (at most) 80 columns;
# in a log file one plain line per interval, with the rate.
BAR_FORMAT = "{desc} {n_fmt}/{total_fmt}{postfix} |{bar}| {elapsed}<{remaining}"
LOG_FORMAT = "{desc} {n_fmt}/{total_fmt}{postfix} [{elapsed}<{remaining}, {rate_fmt}]"
MAX_COLUMNS = 80


def bar_columns() -> int:
    """The progress line's width: the terminal's, at most :data:`MAX_COLUMNS`."""
    return min(MAX_COLUMNS, shutil.get_terminal_size((MAX_COLUMNS, 24)).columns)


def runtime(accelerator: Any, cfg: Any) -> dict[str, Any]:
    """``{"device", "device_name", "precision", "world_size", "requested": {...}}``.

    ``precision`` is what the towers run in: accelerate's fp16 on a CPU is no autocast at all
    (fp32), which the recipe's ``train.mixed_precision`` alone would not tell.
    """
    import torch

    device = accelerator.device
    requested = cfg.train.mixed_precision
    precision = "fp32" if requested == "fp16" and device.type == "cpu" else requested
    name = "CPU"
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    return {
        "device": str(device),
        "device_name": name,
        "precision": precision,
        "world_size": accelerator.num_processes,
        "requested": {"cpu": bool(cfg.train.cpu), "mixed_precision": requested},
    }


def start_line(info: dict[str, Any]) -> str:
    """One line: ``hyvl train: on cpu (CPU), fp32, 1 process`` plus what differs from the
    recipe's request."""
    n = info["world_size"]
    line = (
        f"hyvl train: on {info['device']} ({info['device_name']}), {info['precision']}, "
        f"{n} process{'es' if n != 1 else ''}"
    )
    requested = info["requested"]
    notes = []
    if not requested["cpu"] and info["device"].startswith("cpu"):
        notes.append("train.cpu=false but no GPU is visible")
    if requested["mixed_precision"] != info["precision"]:
        notes.append(f"train.mixed_precision={requested['mixed_precision']} has no effect here")
    return line + (f" ({'; '.join(notes)})" if notes else "")


def progress_fields(record: dict[str, Any]) -> str:
    """``loss 4.1234, lr 1.00e-03, health ok`` (a non-finite loss, logged as null: nan)."""
    loss = record.get("loss")
    lr = record.get("lr")
    parts = [
        f"loss {'nan' if loss is None else f'{loss:.4f}'}",
        f"lr {'-' if lr is None else f'{lr:.2e}'}",
    ]
    if "health" in record:
        parts.append(f"health {record['health']}")
    return ", ".join(parts)


def _lines(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    return out


def chance_warnings(zeroshot: dict[str, Any]) -> list[str]:
    """The zero-shot result's at-chance warnings (:func:`hyvl.evaluation.zeroshot.chance_warnings`)."""
    from hyvl.evaluation.zeroshot import chance_warnings as warnings

    return warnings(zeroshot)


def last_records(output_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(the last metrics.jsonl record with a loss, the last eval.jsonl record) of a run."""
    metrics = [r for r in _lines(output_dir / "metrics.jsonl") if "loss" in r]
    evals = _lines(output_dir / "eval.jsonl")
    return (metrics[-1] if metrics else {}), (evals[-1] if evals else {})


def evaluation_rows(evaluation: dict[str, Any]) -> list[dict[str, Any]]:
    """The last evaluation (an eval.jsonl record) as rows ``{"evaluation", "value"}``:
    zero-shot top-1 / top-5 / mean per class and top-1 per family, retrieval R@1/5/10."""
    rows: list[dict[str, Any]] = []
    zs = evaluation.get("zeroshot")
    if zs:
        chance = 100.0 / zs["num_classes"] if zs.get("num_classes") else None
        rows.append(
            {
                "evaluation": f"zero-shot top-1 % ({zs.get('num_classes')} classes)",
                "value": zs["top1"],
                "chance %": chance,
            }
        )
        rows.append({"evaluation": "zero-shot top-5 %", "value": zs["top5"]})
        rows.append({"evaluation": "zero-shot mean per class %", "value": zs["mean_per_class"]})
        if zs.get("num_predicted_classes") is not None:
            from hyvl.evaluation.zeroshot import few_classes

            rows.append(
                {
                    "evaluation": "zero-shot classes predicted"
                    + (" (too few: see health)" if few_classes(zs) else ""),
                    "value": f"{zs['num_predicted_classes']} of {zs.get('num_classes')}",
                }
            )
        stats = zs.get("family_stats") or {}
        for family, top1 in (zs.get("per_family") or {}).items():
            family_chance = stats.get(family, {}).get("chance")
            at_chance = stats.get(family, {}).get("at_chance")
            rows.append(
                {
                    "evaluation": f"  family {family!r} top-1 %"
                    + (" (at chance)" * bool(at_chance)),
                    "value": top1,
                    "chance %": family_chance,
                }
            )
    rt = evaluation.get("retrieval")
    if rt:
        for direction, name in (
            ("image_to_text", "image -> text"),
            ("text_to_image", "text -> image"),
        ):
            recalls = rt.get(direction) or {}
            shown = " / ".join(f"{recalls[k]:.2f}" for k in ("R@1", "R@5", "R@10") if k in recalls)
            rows.append({"evaluation": f"retrieval {name} R@1/5/10 %", "value": shown})
    for row in rows:
        row.setdefault("chance %", "")
        if row["chance %"] is None:
            row["chance %"] = ""
    return rows
