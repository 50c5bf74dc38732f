"""Orbax checkpoints of ``{state, data iterator position, meta}``, saved asynchronously.

A step's folder becomes visible only once every item is committed, so a crash mid-save leaves
the previous checkpoint as the latest one. A disk too full for the next save stops the run with
one sentence before the save starts; one that fills up during a save has the partial step
removed. Either way the committed checkpoints stay as they were.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import pathlib
import shutil
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from ptft_jax import scores
from ptft_jax.errors import DataError, UserError

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
    """Save parameters alone (the best model so far), with their checksums."""
    meta = {"checksums": checksums(params)}
    with _filling_up(mgr):
        mgr.wait_until_finished()
        _check_space(mgr, step, params)
        mgr.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params), meta=ocp.args.JsonSave(meta)
            ),
        )


def restore_params(mgr: ocp.CheckpointManager, like):
    """The latest saved parameters, placed like ``like`` (arrays or ShapeDtypeStructs);
    DamagedError when they cannot be read or differ from their checksums."""
    step = mgr.latest_step()
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), like
    )
    items = {"params": ocp.args.StandardRestore(abstract)}
    if (pathlib.Path(mgr.directory) / str(step) / "meta").is_dir():  # saved with checksums
        items["meta"] = ocp.args.JsonRestore()
    _ignore_abandoned_reads()
    try:
        restored = mgr.restore(step, args=ocp.args.Composite(**items))
    except Exception as e:  # any failure to read a step is damage to it
        problem = f"({_first_line(e)})"
    else:
        bad = mismatches(restored.params, (restored.get("meta") or {}).get("checksums"))
        if not bad:
            return restored.params
        problem = f"({bad[0]} does not match its checksum)"
    raise DamagedError(
        f"The best checkpoint (step {step}) in {mgr.directory} is damaged {problem}; move that "
        "folder aside to use the latest checkpoint instead."
    )


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


def save(mgr: ocp.CheckpointManager, step: int, state, data_state: dict, meta: dict) -> None:
    """Start an async save of step ``step`` (returns once device arrays are copied); ``meta``
    gets the checksum of every array of the state, which a restore verifies."""
    meta = {**meta, "checksums": checksums(state)}
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


class DamagedError(DataError):
    """A checkpoint that cannot be read back, or whose arrays do not match their checksums."""


def restore_checked(mgr: ocp.CheckpointManager, step: int, abstract_state):
    """``restore`` that raises DamagedError, naming the problem, when the step cannot be read
    or an array differs from its saved checksum (checkpoints from before checksums pass)."""
    _ignore_abandoned_reads()
    try:
        state, data_state, meta = restore(mgr, step, abstract_state)
    except Exception as e:  # any failure to read a step is damage to it
        raise DamagedError(f"the checkpoint of step {step} is damaged ({_first_line(e)})") from None
    bad = mismatches(state, meta.get("checksums"))
    if bad:
        raise DamagedError(
            f"the checkpoint of step {step} is damaged ({bad[0]} does not match its checksum)"
        )
    return state, data_state, meta


def restore_verified(mgr: ocp.CheckpointManager, abstract_state):
    """``(step, state, data_state, meta)`` of the newest checkpoint that restores and matches
    its checksums, or None when there is none. A damaged one (a file missing, cut short or
    overwritten) is moved to ``W/damaged/<step>``, kept, with a line naming it; if every
    checkpoint is damaged the run stops rather than start over."""
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
            "restore one from a backup, or start a new --workdir."
        )
    return None


def _first_line(e: Exception) -> str:
    """The first line of an error (Orbax's and TensorStore's run long), at most 200 characters."""
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:200]


def _ignore_abandoned_reads() -> None:
    """A failed restore leaves reads in flight that later report to an event loop Orbax has
    closed: hundreds of "Event loop is closed" tracebacks that say nothing about the damage
    (already named). Those alone are dropped; anything else still reaches the previous hook."""
    previous = sys.unraisablehook
    if getattr(previous, "ptft_jax", False):
        return

    def hook(unraisable) -> None:
        e = unraisable.exc_value
        if not (isinstance(e, RuntimeError) and str(e) == "Event loop is closed"):
            previous(unraisable)

    hook.ptft_jax = True
    sys.unraisablehook = hook


def _everywhere(ok: bool) -> bool:
    """``ok`` on every process (one process's unreadable shard damages the step for all)."""
    if jax.process_count() == 1:
        return ok
    return bool(np.all(multihost_utils.process_allgather(np.asarray(ok))))


def _set_aside(mgr: ocp.CheckpointManager, step: int, problem: str | None) -> pathlib.Path:
    """Move the damaged ``step`` out of the checkpoints (process 0), so no resume reads it and
    no rotation counts it; the files stay for a look."""
    folder = pathlib.Path(mgr.directory)
    dest = folder.parent / "damaged" / str(step)
    if jax.process_index() == 0:
        dest.parent.mkdir(exist_ok=True)
        n = 1
        while dest.exists():  # an earlier damage of the same step number
            dest, n = folder.parent / "damaged" / f"{step}.{n}", n + 1
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


def abstract_like(shapes, shardings):
    """ShapeDtypeStructs carrying the target shardings, for a sharded restore."""
    return jax.tree.map(
        lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh), shapes, shardings
    )


# --- Integrity: a checksum of every array, written with the step and verified on restore.


def _as_uint32(x):
    """The bits of ``x`` as uint32 values (16-bit and 8-bit values widened, 64-bit split)."""
    import jax.numpy as jnp

    if x.dtype == jnp.bool_:
        return x.astype(jnp.uint32)
    width = x.dtype.itemsize
    if width == 4:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)
    if width == 8:
        return jax.lax.bitcast_convert_type(x, jnp.uint32)  # [..., 2]
    narrow = {2: jnp.uint16, 1: jnp.uint8}[width]
    return jax.lax.bitcast_convert_type(x, narrow).astype(jnp.uint32)


def _mix(h):
    """MurmurHash3's 32-bit finaliser: a bijection on uint32 in which every input bit moves
    about half of the output bits."""
    h = h ^ (h >> 16)
    h = h * np.uint32(0x85EBCA6B)
    h = h ^ (h >> 13)
    h = h * np.uint32(0xC2B2AE35)
    return h ^ (h >> 16)


@jax.jit
def _checksums(leaves):
    """Per array: the sum over elements of mix(bits + 0x9E3779B9 * index), modulo 2**32.
    Integer sums wrap and commute, so the value is exact whatever the sharding or reduction
    order; a changed bit anywhere changes it (but for a 2**-32 chance)."""
    import jax.numpy as jnp

    out = []
    for x in leaves:
        bits = _as_uint32(x).reshape(-1)
        index = jax.lax.iota(jnp.uint32, bits.shape[0])
        out.append(jnp.sum(_mix(bits + index * np.uint32(0x9E3779B9)), dtype=jnp.uint32))
    return out


def checksums(tree) -> dict[str, int]:
    """``{path: checksum}`` of every array in ``tree``, computed where the arrays live."""
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    values = jax.device_get(_checksums([x for _, x in flat]))
    return {jax.tree_util.keystr(path): int(v) for (path, _), v in zip(flat, values, strict=True)}


def mismatches(tree, expected: dict[str, int] | None) -> list[str]:
    """Paths whose checksum differs from ``expected`` (none when no checksums were saved)."""
    if not expected:
        return []
    got = checksums(tree)
    return [k for k in sorted(set(got) | set(expected)) if got.get(k) != expected.get(k)]
