"""Helpers shared by the test files: tiny JPEGs and webdataset shards written by the tests, a
small full disk."""

import contextlib
import gc
import io
import os
import subprocess
import tarfile
from pathlib import Path

from PIL import Image


def jpeg(size=(64, 48), colour=(200, 10, 10)) -> bytes:
    """A plain ``size`` (w, h) JPEG of one colour, as bytes."""
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="JPEG")
    return buf.getvalue()


def write_tar(path, samples):
    """Write a webdataset shard at ``path`` from ``samples``, a list of ``(key, {ext: bytes})``;
    returns ``path``."""
    with tarfile.open(path, "w") as tar:
        for key, files in samples:
            for ext, data in files.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


@contextlib.contextmanager
def small_disk(path: Path, size: str = "256k"):
    """A tmpfs of ``size`` at ``path``: writes past it fail with ENOSPC like a full disk."""
    path.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        # A file object the test dropped (an index whose write failed) can hold the disk open
        # until garbage collection; collect first, and detach lazily if it is still busy.
        gc.collect()
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


def fill(path: Path, leave: int) -> None:
    """Fill the filesystem of ``path`` up to ``leave`` free bytes."""
    st = os.statvfs(path)
    free = st.f_bavail * st.f_frsize
    (path / "filler").write_bytes(b"\0" * max(0, free - leave))


# `make test` hands whole files to two workers (--dist loadfile) in collection order
# (--no-loadscope-reorder: xdist's own order, most tests first, sent the few-test files that
# train last, so one worker trained alone at the end). Longest first is what balances two
# workers: these files, by their measured seconds on 2 busy cores (--durations), go first
# (remeasured: test_train_reliability, 94 s of per-test time, had come fifth; test_eval_suite,
# 50 s, tenth).
LONGEST_FIRST = (
    "test_train_reliability.py",
    "test_traverse_demo.py",
    "test_torchrun.py",
    "test_train.py",
    "test_eval_suite.py",
    "test_wheel.py",
    "test_demo.py",
    "test_train_health.py",
    "test_data.py",
    "test_distributed.py",
)


def pytest_collection_modifyitems(items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: the rest as found
