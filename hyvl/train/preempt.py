"""Stopping a run cleanly on a signal: SIGTERM, SIGUSR1 (SLURM's warning) and SIGINT (Ctrl-C).

The handler only records the signal; the loop asks :meth:`StopSignals.agreed` once per step,
which all processes answer together (a one-number all-reduce), so a signal that reached one
process stops every process after the same step. The loop then writes a checkpoint of that
step and raises :class:`Interrupted`, whose ``exit_code`` the CLI returns:

- SIGTERM, SIGUSR1: :data:`EXIT_REQUEUE` (75, ``EX_TEMPFAIL`` of sysexits.h: "try again
  later"): the checkpoint is written and rerunning the same command continues exactly from it.
  A batch script requeues on it (``scontrol requeue``); it cannot be confused with a process
  killed before it could save (the shell reports those as 128 + signal number: 137, 143).
- SIGINT: 130, the shell's code for Ctrl-C (a person stopped it; nothing to requeue).

A second SIGINT more than :data:`ABANDON_AFTER_S` after the first abandons the step at once
(``KeyboardInterrupt``, no checkpoint: for a run that hangs). Sooner, it is the same Ctrl-C
delivered twice (the terminal signals every process of the group and torchrun forwards it
again) and is ignored.

Hand-written: accelerate and torch have no preemption handling of their own; what is needed
is small (a flag, an all-reduce, the handlers put back afterwards).
"""

from __future__ import annotations

import signal
import threading
import time
from typing import Any

import torch

EXIT_REQUEUE = 75  # sysexits.h EX_TEMPFAIL
EXIT_SIGINT = 130  # 128 + SIGINT, the shell's convention for Ctrl-C
SIGNALS = ("SIGTERM", "SIGUSR1", "SIGINT")
ABANDON_AFTER_S = 2.0


class Interrupted(Exception):
    """A signal stopped the run after a step; the checkpoint of that step is written.

    ``signal`` (its name), ``step``, ``checkpoint`` (the path, None when nothing had been
    trained), ``exit_code``; ``summary`` is the run's summary as :func:`train` returns it.
    """

    def __init__(self, message: str, *, signal: str, step: int, checkpoint, exit_code: int):
        super().__init__(message)
        self.signal, self.step, self.checkpoint = signal, step, checkpoint
        self.exit_code = exit_code
        self.summary: dict[str, Any] | None = None


def exit_code(name: str) -> int:
    return EXIT_SIGINT if name == "SIGINT" else EXIT_REQUEUE


class StopSignals:
    """Context manager: while active, the stop signals set a flag instead of ending the process.

    Outside the main thread (Python only lets it set handlers) nothing is installed and the
    signals keep their usual effect; a signal the process ignores stays ignored.
    """

    def __init__(self) -> None:
        self.received: str | None = None  # name of the first signal
        self.at = 0.0
        self.repeats = 0
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
            for name in SIGNALS:
                number = getattr(signal, name, None)
                # an ignored signal stays ignored (nohup, a background job's SIGINT)
                if number is not None and signal.getsignal(number) is not signal.SIG_IGN:
                    self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _handle(self, number: int, frame: Any) -> None:
        # No printing here: the handler runs between two bytecodes of the main thread, which
        # may be inside a write to stderr itself (the progress bar).
        name = signal.Signals(number).name
        now = time.monotonic()
        if self.received is None:
            self.received, self.at = name, now
            return
        self.repeats += 1
        if name == "SIGINT" and now - self.at > ABANDON_AFTER_S:
            raise KeyboardInterrupt  # a second, deliberate Ctrl-C: stop now, unsaved

    def agreed(self, accelerator: Any) -> str | None:
        """The signal that stops the run, if any process received one (collective).

        Every process must call this at the same point of every step. The answer is the
        same on all of them: the signal of the lowest-numbered process that received one.
        """
        local = self.received
        if accelerator.num_processes == 1:
            return local
        code = 0 if local is None else SIGNALS.index(local) + 1
        every = accelerator.gather(torch.tensor([code], device=accelerator.device)).tolist()
        first = next((c for c in every if c), 0)  # the lowest rank's signal, on every process
        return SIGNALS[first - 1] if first else None
