"""Orbax checkpoints of ``{state, data iterator position, meta}``, saved asynchronously.

A step's folder becomes visible only once every item is committed, so a crash mid-save leaves
the previous checkpoint as the latest one. A disk too full for the next save stops the run with
one sentence before the save starts; one that fills up during a save has the partial step
removed. Either way the committed checkpoints stay as they were.

A save or restore that fails other than through damage (memory, permissions, the storage
service) is one line (``CheckpointError``), its traceback and Orbax's own log lines in
``W/errors.log``. Reading back, verified, is ``recovery.py``.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import logging
import pathlib
import shutil
import threading
import traceback

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from ptft_jax.checksums import checksums
from ptft_jax.errors import UserError

log = logging.getLogger(__name__)


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
    """A save that ran out of space after it started: remove its partial step, say so; any
    other failure of a save is one line, its traceback in ``W/errors.log``."""
    try:
        yield
    except UserError:
        raise
    except Exception as e:
        if not _disk_full(e):
            raise failure(mgr, "A checkpoint save", e) from None
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


def settle(mgr: ocp.CheckpointManager) -> None:
    """Let a save in flight end and close ``mgr``, when the run stops on an error that is
    already being reported: a second failure of the save adds nothing to the console (Orbax's
    own lines go to W/errors.log) and never hides the first."""
    with contextlib.suppress(Exception):
        mgr.wait_until_finished()
    with contextlib.suppress(Exception):
        mgr.close()


def check_saves(mgr: ocp.CheckpointManager | None) -> None:
    """Stop now if a save running in the background has failed (rather than at the next
    save, ``checkpoint_every`` steps later)."""
    if mgr is None or mgr.is_saving_in_progress():
        return
    with _filling_up(mgr):
        mgr.check_for_errors()
        mgr.wait_until_finished()  # nothing in flight: returns at once, or raises its error


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


# Orbax numbers a save's signals with one process-wide counter that ``mgr.save`` advances and
# reads back while it starts the save: two runs starting saves at once in threads of one process
# (ptft_jax.jobs) take each other's numbers, and a save then writes before its folder exists
# (seen: FileNotFoundError on <step>.orbax-checkpoint-tmp/data.orbax-checkpoint-tmp/metadata).
# So saves start one at a time; their background commits still overlap.
_STARTING = threading.Lock()


def save_params(mgr: ocp.CheckpointManager, step: int, params) -> None:
    """Save parameters alone (the best model so far), with their checksums."""
    meta = {"checksums": checksums(params)}
    with _filling_up(mgr):
        mgr.wait_until_finished()
        _check_space(mgr, step, params)
        args = ocp.args.Composite(
            params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)
        )
        with _STARTING:
            mgr.save(step, args=args)


def save(mgr: ocp.CheckpointManager, step: int, state, data_state: dict, meta: dict) -> None:
    """Start an async save of step ``step`` (returns once device arrays are copied); ``meta``
    gets the checksum of every array of the state, which a restore verifies."""
    meta = {**meta, "checksums": checksums(state)}
    with _filling_up(mgr):
        mgr.wait_until_finished()  # the previous save is on disk: its size counts below
        _check_space(mgr, step, state)
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=ocp.args.JsonSave(data_state),
            meta=ocp.args.JsonSave(meta),
        )
        with _STARTING:
            mgr.save(step, args=args)


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


class CheckpointError(UserError):
    """A save or restore that failed for a reason other than damage to the checkpoint (memory,
    permissions, the storage service); nothing was moved, the traceback is in W/errors.log."""


def failure(mgr: ocp.CheckpointManager, what: str, e: BaseException) -> CheckpointError:
    """``what`` failed with ``e``, not through damage: its traceback appended to
    ``W/errors.log`` and one line for the user."""
    path = errors_log(pathlib.Path(mgr.directory).parent)
    try:
        with open(path, "a", encoding="utf-8") as f:
            stamp = datetime.datetime.now().isoformat(timespec="seconds")
            f.write(f"--- {stamp} {what} failed\n")
            f.write("".join(traceback.format_exception(e)))
        where = f"the traceback is in {path}"
    except OSError:  # the workdir itself cannot be written: the line must still say what
        where = "the traceback could not be written to the workdir"
    return CheckpointError(
        f"{what} failed ({first_line(e)}), which is no damage to any checkpoint and moved "
        f"nothing; {where}: fix the cause and run the same command again."
    )


def errors_log(workdir: pathlib.Path) -> pathlib.Path:
    """``W/errors.log`` (``W/errors.<process>.log`` on the other processes of a multi-process
    run): the tracebacks behind the one-line errors of saves and restores, and Orbax's own
    warnings and errors, which would otherwise bury that line."""
    index = jax.process_index()
    return workdir / ("errors.log" if index == 0 else f"errors.{index}.log")


# The threads whose runs route Orbax's lines (runs side by side in threads: ptft_jax.jobs).
_ROUTING_THREADS: dict[int, int] = {}


class _OrbaxToFile(logging.Filter):
    """Sends Orbax's warnings and errors (with their tracebacks) to ``W/errors.log`` instead of
    the console; the run's own line says what happened. With runs in several threads, each
    run's file gets its own thread's lines (Orbax's background threads' go to the first)."""

    def __init__(self, path: pathlib.Path):
        super().__init__()
        self.path, self.thread = path, threading.get_ident()
        self.format = logging.Formatter("%(asctime)s %(levelname)s %(pathname)s: %(message)s")

    def filter(self, record: logging.LogRecord) -> bool:
        if "orbax" not in pathlib.PurePath(record.pathname).parts:
            return True
        if record.thread != self.thread and record.thread in _ROUTING_THREADS:
            return True  # another run's line: its own filter takes it
        if record.levelno >= logging.WARNING:
            try:
                with open(self.path, "a", encoding="utf-8") as f:
                    f.write(self.format.format(record) + "\n")
            except OSError:
                return True  # the workdir cannot be written: the console keeps it
        return False


def route_orbax_logs(workdir: pathlib.Path):
    """Send Orbax's log lines to ``errors_log(workdir)`` from now on; returns the undo."""
    found = _OrbaxToFile(errors_log(workdir))
    logger = logging.getLogger("absl")
    logger.addFilter(found)
    _ROUTING_THREADS[found.thread] = _ROUTING_THREADS.get(found.thread, 0) + 1

    def undo():
        logger.removeFilter(found)
        _ROUTING_THREADS[found.thread] -= 1
        if not _ROUTING_THREADS[found.thread]:
            del _ROUTING_THREADS[found.thread]

    return undo


def first_line(e: BaseException) -> str:
    """The first line of an error (Orbax's and TensorStore's run long), at most 200 characters."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def abstract_like(shapes, shardings):
    """ShapeDtypeStructs carrying the target shardings, for a sharded restore."""
    return jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
    )
