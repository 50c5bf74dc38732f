"""How a run stops early and cleanly: preemption (SIGTERM) and a non-finite loss."""

from __future__ import annotations

import signal
import threading

import jax
from jax.experimental import multihost_utils


class NonFiniteError(RuntimeError):
    """Training stopped on a NaN/Inf loss or gradient (``train.on_nonfinite="stop"``)."""


class Preemption:
    """SIGTERM asks the loop to checkpoint the current step and exit 0. With several
    processes, JAX's preemption sync point makes every host stop at the same step."""

    def __init__(self):
        self.requested, self.previous = False, None
        if jax.process_count() == 1 and threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, self._request)

    def _request(self, signum, frame) -> None:
        del signum, frame
        self.requested = True

    def reached(self, step: int) -> bool:
        if jax.process_count() > 1:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.requested

    def close(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)
            self.previous = None
