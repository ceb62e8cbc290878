"""Data: sample layouts, webdataset pipelines, the shard writer and the demo world."""

from hyvl.data.batch import Batch

__all__ = ["Batch"]
