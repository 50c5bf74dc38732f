"""Which checkpoint a run resumes from: the newest one that restores and matches its checksums.

A damaged step (its bytes: a file missing, cut short, unreadable, a checksum that does not
match) is moved to ``W/damaged/<step>``, kept for a look, and the run resumes from the one
before. Nothing else moves a checkpoint: an intact one of another structure, or a restore that
fails for another reason, stops the run with one line (``checkpoint.restore_checked``). A
workdir whose checkpoints were all set aside never starts over unasked.
"""

from __future__ import annotations

import logging
import pathlib

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from ptft_jax.checkpoint import DamagedError, restore_checked
from ptft_jax.errors import DataError

log = logging.getLogger(__name__)
DAMAGED = "damaged"


def restore_verified(mgr: ocp.CheckpointManager, abstract_state):
    """``(step, state, data_state, meta)`` of the newest checkpoint that restores and matches
    its checksums, or None when there is none. A damaged one is moved to ``W/damaged/<step>``,
    kept, with a line naming it; if every checkpoint is damaged the run stops rather than start
    over. Any other failure (MismatchError, CheckpointError) stops the run and moves nothing."""
    damaged = []
    for step in sorted(mgr.all_steps(), reverse=True):
        try:
            found, problem = (step, *restore_checked(mgr, step, abstract_state)), None
        except DamagedError as e:
            found, problem = None, str(e)
        if _everywhere(problem is None):
            return found
        damaged.append(_set_aside(mgr, step, problem))
    if damaged:
        raise DataError(
            f"Every checkpoint in {mgr.directory} is damaged (moved to {damaged[-1].parent}); "
            "restore one from a backup, or set --config.train.restart_from_scratch=True to "
            "start over in this workdir, or start a new --workdir."
        )
    return None


def set_aside_steps(workdir: pathlib.Path) -> list[str]:
    """The checkpoints kept in ``W/damaged/``, by name (``4``, ``4.1`` for a second step 4)."""
    folder = workdir / DAMAGED
    if not folder.is_dir():
        return []
    return sorted((p.name for p in folder.iterdir()), key=lambda n: [int(x) for x in n.split(".")])


def check_fresh_start(workdir: pathlib.Path, restart_from_scratch: bool, resuming: bool) -> None:
    """A run about to start from step 0 in a workdir whose checkpoints were all set aside stops
    with one sentence naming the ways on, unless ``train.restart_from_scratch`` asks for it."""
    steps = set_aside_steps(workdir)
    if resuming:
        if restart_from_scratch:
            log.warning(
                "train.restart_from_scratch=True does nothing here: %s holds checkpoints, and "
                "this run resumes from the latest",
                workdir / "checkpoints",
            )
        return
    if not steps:
        return
    if not restart_from_scratch:
        raise DataError(
            f"{workdir} has no checkpoint left to resume from: every one was set aside in "
            f"{workdir / DAMAGED} (steps {', '.join(steps)}); move a step back into "
            f"{workdir / 'checkpoints'} to resume from it, or set "
            "--config.train.restart_from_scratch=True to start over in this workdir."
        )
    log.warning(
        "starting over from step 0 in %s, as train.restart_from_scratch asks; the checkpoints "
        "set aside stay in %s",
        workdir,
        workdir / DAMAGED,
    )


def _everywhere(ok: bool) -> bool:
    """``ok`` on every process (one process's unreadable shard damages the step for all)."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def _set_aside(mgr: ocp.CheckpointManager, step: int, problem: str | None) -> pathlib.Path:
    """Move the damaged ``step`` out of the checkpoints (process 0), so no resume reads it and
    no rotation counts it; the files stay for a look."""
    folder = pathlib.Path(mgr.directory)
    dest = folder.parent / DAMAGED / str(step)
    if jax.process_index() == 0:
        dest.parent.mkdir(exist_ok=True)
        n = 1
        while dest.exists():  # an earlier damage of the same step number
            dest, n = folder.parent / DAMAGED / f"{step}.{n}", n + 1
        (folder / str(step)).rename(dest)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"ptft_jax: set aside step {step}")
    mgr.reload()
    log.warning(
        "%s; moved it to %s and resuming from an earlier one",
        problem or f"the checkpoint of step {step} could not be read on another process",
        dest,
    )
    return dest
