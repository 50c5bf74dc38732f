"""The best parameters by one validation metric, kept apart in ``W/best`` (one step), and the
patience count of early stopping."""

from __future__ import annotations

import pathlib

from ptft_jax import scores
from ptft_jax.checkpoint import manager, save_params
from ptft_jax.recovery import restore_params


class Best:
    """The best parameters by one validation metric, kept apart in ``W/best`` (one step), and
    the patience count of early stopping. ``tracker`` (best, best_step, since_best) is the
    caller's dict, saved with every checkpoint so a resumed run goes on counting."""

    def __init__(self, workdir: pathlib.Path, metric: str, patience: int, tracker: dict):
        self.mgr = manager(workdir, 1, "best")
        self.metric, self.patience, self.tracker = metric, patience, tracker

    def update(self, step: int, ev: dict, params) -> bool:
        """Keep ``params`` when ``ev`` improves on the best so far; returns whether patience
        has run out."""
        if scores.is_better(self.metric, ev[self.metric], self.tracker["best"]):
            self.tracker.update(best=ev[self.metric], best_step=step, since_best=0)
            save_params(self.mgr, step, params)
        else:
            self.tracker["since_best"] += 1
        return 0 < self.patience <= self.tracker["since_best"]

    def params(self, like):
        """The best parameters kept (``like`` when none was); closes the manager."""
        found = restore_params(self.mgr, like) if self.mgr.latest_step() is not None else like
        self.mgr.close()
        return found
