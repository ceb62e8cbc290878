"""Crash-safe writes: a file or a directory appears whole or not at all.

Every artefact hyvl writes (indexes, exports, shards and their manifest, the demo data,
checkpoints) goes through here: the new version is written beside the old one, fsynced, and
renamed into place. An exception, a full disk (ENOSPC) or a ``kill -9`` during the write leaves
the previous version as it was, plus at most a hidden ``.NAME.tmp-PID`` beside it that the next
write removes.

- :func:`atomic_path` / :func:`atomic_file` / :func:`write_text`: one file (``os.replace``).
- :func:`atomic_dir`: a directory. A new directory is renamed into place in one step; an
  existing one is swapped with two renames (old -> ``.NAME.old-PID``, new -> NAME). A kill
  between those two leaves NAME missing and the old version in the backup, which
  :func:`recover_dir` (called by every reader and by the next write) renames back.

Hand-written because the kept libraries cover only part of it: ``os.replace`` is the atomic
step, but no standard function fsyncs the file and its directory, cleans up after a failed
write, or swaps a directory.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

_STAGE = re.compile(r"^\.(?P<name>.+)\.(?P<what>tmp|old)-(?P<pid>\d+)$")


def fsync_dir(path: str | Path) -> None:
    """Flush a directory entry so a rename in it survives a power cut, not only a kill."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on directories: nothing more to do there
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    """The process's umask (read by setting it and putting it back: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def shareable(path: str | Path) -> None:
    """Give a written file (directory) the mode a plain ``open`` (``mkdir``) would: 0666
    (0777) less the umask, usually 0644 (0755). Writers that stage through a private temporary
    file (safetensors) leave 0600, which a cluster group sharing the run cannot read."""
    path = Path(path)
    if path.is_symlink():
        return
    full = 0o777 if path.is_dir() else 0o666
    os.chmod(path, full & ~_umask())


def _write_failed(path: Path, err: BaseException) -> BaseException:
    """A full disk becomes a one-line HyvlError naming the target (safetensors reports it as
    its own error type carrying only the OS message, hence the text test)."""
    from hyvl.errors import HyvlError

    full = (isinstance(err, OSError) and err.errno == errno.ENOSPC) or (
        "No space left on device" in str(err)
    )
    if full:
        return HyvlError(f"{path}: no space left on device; nothing was changed there")
    return err


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sibling(path: Path, what: str) -> Path:
    return path.parent / f".{path.name}.{what}-{os.getpid()}"


def remove_stale(path: str | Path) -> list[Path]:
    """Delete the ``.NAME.tmp-PID`` leftovers of writes to ``path`` whose process is gone."""
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for entry in path.parent.iterdir():
        m = _STAGE.match(entry.name)
        if m and m["name"] == path.name and m["what"] == "tmp" and not _pid_alive(int(m["pid"])):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            removed.append(entry)
    return removed


def recover_dir(path: str | Path) -> bool:
    """If a directory swap was killed between its two renames, put the old version back.

    Returns True when something was restored. Safe to call on any path.
    """
    path = Path(path)
    if path.exists() or not path.parent.is_dir():
        return False
    backups = []
    for entry in path.parent.iterdir():
        m = _STAGE.match(entry.name)
        if m and m["name"] == path.name and m["what"] == "old" and not _pid_alive(int(m["pid"])):
            backups.append(entry)
    if not backups:
        return False
    newest = max(backups, key=lambda p: p.stat().st_mtime)
    os.replace(newest, path)
    fsync_dir(path.parent)
    return True


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit it is fsynced and renamed to
    ``path``, on an exception it is deleted (``path`` untouched). For writers that take a file
    name (safetensors, PIL, tar writers)."""
    path = Path(path)
    remove_stale(path)
    tmp = _sibling(path, "tmp")
    try:
        yield tmp
        shareable(tmp)
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException as err:
        tmp.unlink(missing_ok=True)
        new = _write_failed(path, err)
        if new is err:
            raise
        raise new from err
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_file(path: str | Path, mode: str = "w", **kwargs) -> Iterator[IO]:
    """``open(path, mode)`` that replaces ``path`` only once the block has finished writing."""
    if not any(c in mode for c in "wx"):
        raise ValueError(f"atomic_file is for writing, not mode {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as f:
        yield f
        f.flush()


def write_text(path: str | Path, text: str, encoding: str = "utf-8") -> Path:
    with atomic_file(path, "w", encoding=encoding) as f:
        f.write(text)
    return Path(path)


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_file(path, "wb") as f:
        f.write(data)
    return Path(path)


def _fsync_tree(root: Path) -> None:
    for folder, dirs, files in os.walk(root):
        for name in files:
            shareable(os.path.join(folder, name))
            fsync_file(os.path.join(folder, name))
        for name in dirs:
            shareable(os.path.join(folder, name))
        fsync_dir(folder)


@contextlib.contextmanager
def atomic_dir(
    path: str | Path, last: str | None = None, derived: Callable[[str], bool] | None = None
) -> Iterator[Path]:
    """Yield an empty staging directory beside ``path``; on a clean exit its entries replace
    those of ``path``, on an exception it is deleted and ``path`` is untouched.

    When ``path`` holds nothing but entries the staging directory also has (the usual case:
    an older version of the same artefact), the directories are swapped whole. Otherwise the
    other entries are kept and each staged entry is renamed in on its own, ``last`` (e.g. the
    manifest or config naming the rest) after the others. ``derived(name)``: entries of the
    old version computed from it (caches such as ANN indexes), which go with it in a swap.
    Callers decide beforehand whether replacing is allowed (:func:`check_out_dir`).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        from hyvl.errors import HyvlError

        raise HyvlError(f"{path}: exists and is not a directory")
    path.parent.mkdir(parents=True, exist_ok=True)
    recover_dir(path)
    remove_stale(path)
    stage = _sibling(path, "tmp")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    try:
        yield stage
        _fsync_tree(stage)
    except BaseException as err:
        shutil.rmtree(stage, ignore_errors=True)
        new = _write_failed(path, err)
        if new is err:
            raise
        raise new from err
    staged = {p.name for p in stage.iterdir()}
    if not path.exists():
        os.replace(stage, path)
    elif {p.name for p in path.iterdir() if not (derived and derived(p.name))} <= staged:
        _swap(stage, path)
    else:
        for name in sorted(staged, key=lambda n: (n == last, n)):
            target = path / name
            if target.is_dir() and not target.is_symlink():
                _swap(stage / name, target)
            else:
                os.replace(stage / name, target)
        fsync_dir(path)
        shutil.rmtree(stage)
    fsync_dir(path.parent)


def _swap(new: Path, path: Path) -> None:
    """Replace directory ``path`` by ``new`` (a kill in between is undone by recover_dir)."""
    backup = _sibling(path, "old")
    shutil.rmtree(backup, ignore_errors=True)
    os.replace(path, backup)
    os.replace(new, path)
    fsync_dir(path.parent)
    shutil.rmtree(backup, ignore_errors=True)


def is_empty_dir(path: str | Path) -> bool:
    path = Path(path)
    return path.is_dir() and not any(path.iterdir())


def check_out_dir(
    path: str | Path,
    *,
    overwrite: bool,
    what: str,
    ours: bool,
    replace_ours: bool = False,
) -> None:
    """Refuse to write into ``path`` unless that is safe or ``--overwrite`` asks for it.

    ``ours``: ``path`` holds only ``what`` (an index, demo data...) as hyvl writes it. A missing
    or empty directory is always fine; ``what`` itself is replaced freely when ``replace_ours``
    (regenerable data) and otherwise needs ``overwrite``; any other non-empty directory needs
    ``overwrite`` (its other files are kept, see :func:`atomic_dir`); a file is refused.
    """
    from hyvl.errors import HyvlError

    path = Path(path)
    recover_dir(path)
    if not path.exists() or is_empty_dir(path):
        return
    if not path.is_dir():
        raise HyvlError(f"{path}: exists and is not a directory; choose another output path")
    if overwrite or (ours and replace_ours):
        return
    if ours:
        raise HyvlError(f"{path}: already holds {what}; pass --overwrite to replace it")
    shown = sorted(p.name for p in path.iterdir())
    more = ", ..." if len(shown) > 3 else ""
    raise HyvlError(
        f"{path}: not empty and not {what} ({', '.join(shown[:3])}{more}); choose a new or "
        "empty directory, or pass --overwrite to write into it (other files are kept)"
    )
