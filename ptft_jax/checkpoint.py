"""Orbax checkpoints of ``{state, data iterator position, meta}``, saved asynchronously.

A step's folder becomes visible only once every item is committed, so a crash mid-save leaves
the previous checkpoint as the latest one.
"""

from __future__ import annotations

import pathlib

import jax
import orbax.checkpoint as ocp


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
