"""How a run stops early and cleanly: preemption (SIGTERM), Ctrl-C and a non-finite loss."""

from __future__ import annotations

import os
import signal
import sys
import threading

import jax
from jax.experimental import multihost_utils

from ptft_jax import errors


class NonFiniteError(RuntimeError):
    """Training stopped on a NaN/Inf loss or gradient (``train.on_nonfinite="stop"``)."""


class Preemption:
    """SIGTERM (preemption) and Ctrl-C (SIGINT) ask the loop to finish its step, checkpoint it
    and exit: 0 after SIGTERM, 130 after Ctrl-C. A second Ctrl-C exits at once without saving
    (the last checkpoint stays intact, as after kill -9). With several processes, JAX's
    preemption sync point makes every host stop at the same step."""

    def __init__(self):
        self.signal, self.previous = None, {}
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self.previous[sig] = signal.signal(sig, self._request)

    def _request(self, signum, frame) -> None:
        del frame
        if signum == signal.SIGINT and self.signal is not None:
            print("\ninterrupted again: exiting without saving.", file=sys.stderr, flush=True)
            os._exit(errors.INTERRUPTED)
        self.signal = self.signal or signum
        if signum == signal.SIGINT:
            print(
                "\ninterrupted: finishing this step and saving a checkpoint (Ctrl-C again to "
                "exit at once)",
                file=sys.stderr,
                flush=True,
            )

    @property
    def interrupted(self) -> bool:
        """Whether the stop was asked for by Ctrl-C (exit 130) rather than SIGTERM (exit 0)."""
        return self.signal == signal.SIGINT

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.signal is not None

    def close(self) -> None:
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        self.previous = {}
