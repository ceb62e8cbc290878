"""The trainer: an accelerate loop, optimizer groups, schedules, checkpoint/resume, the demo.

Heavy imports (accelerate, the towers) happen inside the functions, so importing
``hyvl.train`` costs nothing until you train.
"""

from __future__ import annotations

from typing import Any

__all__ = ["train"]


def train(cfg: Any, output_dir: Any) -> dict:
    """Train ``cfg`` (a :class:`hyvl.config.RunConfig`) into ``output_dir``; see :mod:`hyvl.train.loop`."""
    from hyvl.train.loop import train as _train

    return _train(cfg, output_dir)
