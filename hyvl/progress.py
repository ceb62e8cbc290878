"""Progress bars: tqdm on a terminal, periodic plain lines in log files.

tqdm redraws its line with ``\\r`` and moves between nested bars with ``ESC[A``; in a log file
(stderr redirected, a batch job) those become pages of overwritten fragments. When the stream is
not a terminal, :func:`progress_bar` prints one complete line per ``mininterval`` seconds (30 by
default, ``HYVL_PROGRESS_INTERVAL`` to change it) and a last line when a bar closes.
"""

from __future__ import annotations

import os
import sys

from tqdm.auto import tqdm

LOG_FORMAT = "{desc}: {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}{postfix}]"


class LogLines(tqdm):
    """A tqdm that writes whole lines and never moves the cursor (for files and pipes)."""

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        msg = (self.__str__() if msg is None else msg).strip()
        if not msg or msg == getattr(self, "_last_line", None):
            return False  # tqdm's "clear the line" (or a repeat): nothing to write
        self._last_line = msg
        self.fp.write(msg + "\n")
        self.fp.flush()
        return True

    def moveto(self, n: int) -> None:  # nested bars: no cursor movement in a file
        return None

    def close(self) -> None:
        if not self.disable and self.n:
            self.display()  # the last state, also of bars tqdm would erase (leave=False)
        self.leave = False  # written already; tqdm's own ending adds a newline or a \r
        super().close()


def progress_bar(iterable=None, *, log_format: str | None = None, **kwargs):
    """``tqdm(iterable, **kwargs)`` on a terminal, :class:`LogLines` elsewhere (with
    ``log_format`` as its ``bar_format`` when given)."""
    stream = kwargs.get("file") or sys.stderr
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return tqdm(iterable, **kwargs)
    kwargs.pop("dynamic_ncols", None)
    kwargs.setdefault("mininterval", float(os.environ.get("HYVL_PROGRESS_INTERVAL", "30")))
    kwargs.setdefault("bar_format", LOG_FORMAT)
    if log_format:
        kwargs["bar_format"] = log_format
    kwargs["file"] = stream
    return LogLines(iterable, **kwargs)
