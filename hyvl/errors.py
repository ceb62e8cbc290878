"""Exceptions raised for bad input. The CLI prints their message without a traceback."""

from __future__ import annotations


class HyvlError(Exception):
    """Base class: something the user gave us (a file, a key, a value) is wrong."""


class ConfigError(HyvlError, ValueError):
    """A config file or override names an unknown key or holds a bad value."""


class CheckpointError(HyvlError, ValueError):
    """A file is not a checkpoint we can read (names the file and what was expected)."""


class DataError(HyvlError, ValueError):
    """A dataset, shard list or sample is unusable as a whole (not one skippable sample)."""
