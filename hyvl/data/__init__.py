"""Data: sample layouts, webdataset pipelines, the shard writer and the demo world."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from hyvl.data.batch import Batch

__all__ = ["Batch"]


def __getattr__(name: str):
    # Batch (torch) on first use: the CLI's parsers read the demo worlds' descriptions from
    # hyvl.data.real, and `hyvl --help` should not wait ~3 s for torch to import
    if name == "Batch":
        from hyvl.data.batch import Batch

        return Batch
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
