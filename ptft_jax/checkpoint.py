"""Orbax checkpoints of ``{state, data iterator position, meta}``, saved asynchronously.

A step's folder becomes visible only once every item is committed, so a crash mid-save leaves
the previous checkpoint as the latest one. A disk too full for the next save stops the run with
one sentence before the save starts; one that fills up during a save has the partial step
removed. Either way the committed checkpoints stay as they were.
"""

from __future__ import annotations

import contextlib
import errno
import pathlib
import shutil

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from ptft_jax.errors import UserError


class DiskFullError(UserError):
    """The workdir's disk cannot hold the next checkpoint."""


def _committed(folder: pathlib.Path) -> list[int]:
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


def _bytes_on_disk(folder: pathlib.Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def _check_space(mgr: ocp.CheckpointManager, step: int, tree) -> None:
    """Stop before a save the disk cannot hold: this process writes about its share of the
    state, or as much as the latest checkpoint took, whichever is more."""
    folder = pathlib.Path(mgr.directory)
    try:
        steps = _committed(folder)
        need = sum(x.nbytes for x in jax.tree.leaves(tree)) / jax.process_count()
        if steps:
            need = max(need, _bytes_on_disk(folder / str(steps[-1])))
        free = shutil.disk_usage(folder).free
    except OSError:  # not a local folder (a bucket): nothing to check here
        return
    ok = free > 1.1 * need + 2**20
    if jax.process_count() > 1:  # every process stops, or none does (no save half started)
        ok = bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))
    if not ok:
        latest = f"the one of step {steps[-1]} is intact" if steps else "none is saved yet"
        raise DiskFullError(
            f"The disk holding {folder} has {free / 1e6:.1f} MB free but the checkpoint of "
            f"step {step} needs about {need / 1e6:.1f} MB ({latest}); free space there or move "
            "--workdir to a bigger disk, then run the same command to resume."
        )


def _disk_full(e: BaseException | None) -> bool:
    while e is not None:
        if getattr(e, "errno", None) == errno.ENOSPC or "RESOURCE_EXHAUSTED" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


@contextlib.contextmanager
def _filling_up(mgr: ocp.CheckpointManager):
    """A save that ran out of space after it started: remove its partial step, say so."""
    try:
        yield
    except Exception as e:
        if not _disk_full(e):
            raise
        folder = pathlib.Path(mgr.directory)
        for partial in folder.glob("*.orbax-checkpoint-tmp*"):
            shutil.rmtree(partial, ignore_errors=True)
        steps = _committed(folder)
        latest = f"the one of step {steps[-1]} is intact" if steps else "none is saved yet"
        raise DiskFullError(
            f"The disk holding {folder} filled up during a checkpoint save, whose partial files "
            f"were removed ({latest}); free space there or move --workdir to a bigger disk, "
            "then run the same command to resume."
        ) from None


def finish(mgr: ocp.CheckpointManager | None, close: bool = True) -> None:
    """Wait for the saves in flight (and close the manager unless ``close`` is False)."""
    if mgr is None:
        return
    with _filling_up(mgr):
        mgr.wait_until_finished()
    if close:
        mgr.close()


def has_checkpoint(workdir: pathlib.Path) -> bool:
    """Whether ``W/checkpoints`` holds a committed step (unfinished saves have other names)."""
    folder = workdir / "checkpoints"
    return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


def manager(workdir: pathlib.Path, keep: int, name: str = "checkpoints") -> ocp.CheckpointManager:
    """A CheckpointManager over ``W/<name>`` (``checkpoints``: resume; ``best``: best params)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, enable_async_checkpointing=True, create=True
    )
    return ocp.CheckpointManager(workdir.resolve() / name, options=options)


def save_params(mgr: ocp.CheckpointManager, step: int, params) -> None:
    """Save parameters alone (the best model so far)."""
    with _filling_up(mgr):
        mgr.wait_until_finished()
        _check_space(mgr, step, params)
        mgr.save(step, args=ocp.args.Composite(params=ocp.args.StandardSave(params)))


def restore_params(mgr: ocp.CheckpointManager, like):
    """The latest saved parameters, placed like ``like`` (arrays or ShapeDtypeStructs)."""
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like
    )
    restored = mgr.restore(
        mgr.latest_step(), args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract))
    )
    return restored.params


def save(mgr: ocp.CheckpointManager, step: int, state, data_state: dict, meta: dict) -> None:
    """Start an async save of step ``step`` (returns once device arrays are copied)."""
    with _filling_up(mgr):
        mgr.wait_until_finished()  # the previous save is on disk: its size counts below
        _check_space(mgr, step, state)
        mgr.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=ocp.args.JsonSave(data_state),
                meta=ocp.args.JsonSave(meta),
            ),
        )


def restore(mgr: ocp.CheckpointManager, step: int, abstract_state):
    """``(state, data_state, meta)`` of ``step``, placed as ``abstract_state``'s shardings say."""
    restored = mgr.restore(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state),
            data=ocp.args.JsonRestore(),
            meta=ocp.args.JsonRestore(),
        ),
    )
    return restored.state, restored.data, restored.meta


def abstract_like(shapes, shardings):
    """ShapeDtypeStructs carrying the target shardings, for a sharded restore."""
    return jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
    )
