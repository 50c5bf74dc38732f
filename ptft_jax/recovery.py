"""Reading checkpoints back, verified; and which checkpoint a run resumes from.

Damage means the bytes: a file missing, cut short or unreadable, metadata that does not parse,
an array that differs from its saved checksum. A damaged step is moved to ``W/damaged/<step>``
(kept, for a look) and the run resumes from the one before. Nothing else moves a checkpoint: an
intact one of another structure than the config makes (``MismatchError``), or a restore that
fails for another reason such as memory (``checkpoint.CheckpointError``, its traceback in
``W/errors.log``), stops with one line. A workdir whose checkpoints were all set aside never
starts over unasked.
"""

from __future__ import annotations

import errno
import json
import logging
import pathlib
import re
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils
from orbax.checkpoint import tree as ocp_tree

from ptft_jax.checkpoint import failure, first_line, restore
from ptft_jax.checksums import mismatches
from ptft_jax.errors import ConfigError, DataError, UserError

log = logging.getLogger(__name__)
DAMAGED = "damaged"


class DamagedError(DataError):
    """A checkpoint that cannot be read back, or whose arrays do not match their checksums;
    ``problem`` says how, for a caller's own sentence (``sentence``: that sentence)."""

    def __init__(self, step: int, problem: str, sentence: str = ""):
        super().__init__(sentence or f"the checkpoint of step {step} is damaged ({problem})")
        self.step, self.problem = step, problem


class MismatchError(ConfigError):
    """A checkpoint that is intact but holds a state of another structure than the config
    makes: a config change, not damage."""


# Status codes with which TensorStore reports bytes that are missing, cut short or corrupt.
_DAMAGE_CODES = re.compile(r"\b(DATA_LOSS|NOT_FOUND|OUT_OF_RANGE)\b")
# OS errors that mean a file is missing or unreadable (not a permission, memory or quota).
_DAMAGE_ERRNOS = (errno.ENOENT, errno.EIO, errno.ENOTDIR, errno.EISDIR)


def is_damage(e: BaseException | None) -> bool:
    """Whether ``e`` (or an error it was raised from) says a checkpoint's bytes are bad: a file
    missing, cut short, unreadable or not parsing. Anything else (out of memory, permissions,
    another structure) is not damage."""
    while e is not None:
        if isinstance(e, FileNotFoundError) or (
            isinstance(e, OSError) and e.errno in _DAMAGE_ERRNOS
        ):
            return True
        if isinstance(e, json.JSONDecodeError | UnicodeDecodeError | EOFError):
            return True
        if _DAMAGE_CODES.search(str(e)):
            return True
        e = e.__cause__  # explicit causes only: a context may be an error handled on the way
    return False


def layout_of(tree) -> dict[str, tuple]:
    """``{path: (shape, dtype)}`` of a tree of arrays, ShapeDtypeStructs or Orbax metadata."""
    flat = ocp_tree.to_flat_dict(tree)
    return {
        "/".join(map(str, k)): (tuple(v.shape), np.dtype(v.dtype).name) for k, v in flat.items()
    }


def check_layout(mgr: ocp.CheckpointManager, step: int, abstract, item: str = "state") -> None:
    """Stop before reading any array when the arrays saved in ``step`` differ in path, shape or
    dtype from ``abstract``: MismatchError, not damage (DamagedError only when the step's
    metadata itself cannot be read)."""
    folder = pathlib.Path(mgr.directory) / str(step) / item
    try:
        saved = layout_of(_metadata_tree(ocp.StandardCheckpointHandler().metadata(folder)))
    except Exception as e:
        if is_damage(e) or not folder.is_dir():
            problem = f"its {item} metadata cannot be read: {first_line(e)}"
            raise DamagedError(step, problem) from None
        raise failure(mgr, f"Reading the checkpoint of step {step}", e) from None
    want = layout_of(abstract)
    if saved == want:
        return
    extra, missing = sorted(set(saved) - set(want)), sorted(set(want) - set(saved))
    if missing or extra:
        what = f"{(missing or extra)[0]} is {'missing from it' if missing else 'not made here'}"
        what += f", {len(missing)} arrays missing and {len(extra)} extra in all"
    else:
        path = next(k for k in sorted(want) if saved[k] != want[k])
        what = f"{path} is {saved[path]} in it but {want[path]} here"
    raise MismatchError(
        f"The checkpoint of step {step} in {mgr.directory} is intact but holds another {item} "
        f"than this config makes ({what}); resume with the config it was saved with (W/config"
        ".json), or use a new --workdir."
    )


def _metadata_tree(found):
    """The tree of array metadata in what Orbax's ``metadata()`` returns (its versions differ)."""
    return getattr(found, "tree", found)


def restore_checked(mgr: ocp.CheckpointManager, step: int, abstract_state):
    """``restore`` that raises DamagedError, naming the problem, when the step cannot be read
    or an array differs from its saved checksum (checkpoints from before checksums pass);
    MismatchError when it holds another structure, CheckpointError on any other failure."""
    _ignore_abandoned_reads()
    check_layout(mgr, step, abstract_state)
    try:
        state, data_state, meta = restore(mgr, step, abstract_state)
    except Exception as e:
        if not is_damage(e):
            raise failure(mgr, f"Restoring the checkpoint of step {step}", e) from None
        raise DamagedError(step, first_line(e)) from None
    bad = mismatches(state, meta.get("checksums"))
    if bad:
        raise DamagedError(step, f"{bad[0]} does not match its checksum")
    return state, data_state, meta


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
        check_layout(mgr, step, abstract, "params")
        restored = mgr.restore(step, args=ocp.args.Composite(**items))
    except DamagedError as e:
        problem = e.problem
    except UserError:
        raise
    except Exception as e:
        if not is_damage(e):
            raise failure(mgr, f"Restoring the best checkpoint (step {step})", e) from None
        problem = first_line(e)
    else:
        bad = mismatches(restored.params, (restored.get("meta") or {}).get("checksums"))
        if not bad:
            return restored.params
        problem = f"{bad[0]} does not match its checksum"
    raise DamagedError(
        step,
        problem,
        f"The best checkpoint (step {step}) in {mgr.directory} is damaged ({problem}); move that "
        "folder aside to use the latest checkpoint instead.",
    )


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
