"""Helpers shared by the CLI verbs: result tables on stdout and JSON files for machines."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", metavar="FILE", default=None, help="also write the results as JSON to FILE"
    )


def write_json(path: str | Path | None, obj: Any) -> None:
    """Write ``obj`` as indented JSON (parent folders created). ``None`` path: do nothing."""
    if not path:
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return f"{value:.4g}" if abs(value) < 1e-2 and value != 0 else f"{value:.2f}"
    return str(value)


def format_table(rows: list[dict[str, Any]], title: str | None = None) -> str:
    """Render rows (dicts sharing keys) as a plain aligned text table."""
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
            v.rjust(w) if i else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=False))
        )

    out = [title] if title else []
    out.append(line(columns))
    out.append("  ".join("-" * w for w in widths))
    out.extend(line(r) for r in cells)
    return "\n".join(out)


def print_table(rows: list[dict[str, Any]], title: str | None = None) -> None:
    print(format_table(rows, title), flush=True)
