"""One trainer per output directory: ``OUTPUT/.hyvl-lock`` names the process that holds it.

The lock file is created with ``O_CREAT | O_EXCL`` (atomic on local disks and NFS alike) and
holds ``{"pid", "host", "started", "proc_start"}``. It is removed when the run ends, however
it ends short of a ``kill -9``; a lock left behind is stale when its host is this host and its
process is gone (or the pid now belongs to a process started later: ``proc_start`` is the
holder's start time from ``/proc``). A lock of another host cannot be checked from here: it
is reported with that host, and removing it is the user's call.

Why not ``fcntl.flock``: its locks are not shared between hosts on many cluster filesystems
(NFS without lockd, Lustre mounted without ``flock``), where it would let two trainers in.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from hyvl.errors import ConfigError

LOCK = ".hyvl-lock"


def _proc_start(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (Linux), None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: split after the last ')'
    return int(stat.rsplit(")", 1)[1].split()[19])


def _alive(pid: int, proc_start: int | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    if proc_start is not None:
        now = _proc_start(pid)
        if now is not None and now != proc_start:
            return False  # the pid was reused by a later process
    return True


def _read(path: Path) -> dict[str, Any] | None:
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # being written right now, or damaged
    return holder if isinstance(holder, dict) else {}


def describe(holder: dict[str, Any]) -> str:
    since = holder.get("started")
    when = time.strftime(" since %Y-%m-%d %H:%M:%S", time.localtime(since)) if since else ""
    return f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}{when}"


class RunLock:
    """The lock of one output directory; :meth:`acquire` raises ConfigError when it is held."""

    def __init__(self, output_dir: str | Path):
        self.path = Path(output_dir) / LOCK
        self.held = False

    def acquire(self) -> list[str]:
        """Take the lock; returns notes on stale locks removed on the way (to print)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        notes: list[str] = []
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "proc_start": _proc_start(os.getpid()),
        }
        for _ in range(10):
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                pass
            else:
                with os.fdopen(fd, "w") as f:
                    f.write(json.dumps(me) + "\n")
                self.held = True
                return notes
            holder = _read(self.path)
            if holder is None:
                continue  # released meanwhile: try again
            if not holder:
                time.sleep(0.05)  # its writer is between open and write
                holder = _read(self.path)
                if holder is None:
                    continue
            stale = (
                holder.get("host") == me["host"]
                and isinstance(holder.get("pid"), int)
                and not _alive(holder["pid"], holder.get("proc_start"))
            )
            if not stale:
                raise ConfigError(self._refusal(holder))
            if self._break(holder):
                notes.append(
                    f"hyvl train: removed the stale lock {self.path} of {describe(holder)} "
                    "(that process is gone)"
                )
        raise ConfigError(f"{self.path}: could not take the lock (it keeps changing hands)")

    def _break(self, stale: dict[str, Any]) -> bool:
        """Remove the stale lock ``stale``, and only it (another starter may have replaced it
        meanwhile): it is renamed aside first and checked there."""
        aside = self.path.with_name(f"{LOCK}.stale-{os.getpid()}")
        try:
            os.replace(self.path, aside)
        except FileNotFoundError:
            return False
        if _read(aside) == stale:
            aside.unlink(missing_ok=True)
            return True
        # a live lock taken in between: put it back (a link never overwrites)
        with contextlib.suppress(FileExistsError):
            os.link(aside, self.path)
        aside.unlink(missing_ok=True)
        return False

    def _refusal(self, holder: dict[str, Any]) -> str:
        here = holder.get("host") == socket.gethostname()
        hint = (
            "wait for it to finish or stop it"
            if here
            else f"if that run is gone (its host cannot be checked from here), delete {self.path}"
        )
        return (
            f"--output-dir {str(self.path.parent)!r} is in use by another hyvl train "
            f"({describe(holder)}): {hint}, or choose another --output-dir"
        )

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        holder = _read(self.path)
        if (
            holder
            and holder.get("pid") == os.getpid()
            and holder.get("host") == socket.gethostname()
        ):
            self.path.unlink(missing_ok=True)
