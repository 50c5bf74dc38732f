"""Device mesh, the logical-axis rules table, and the shardings of state and batches.

One mesh with three axes: ``data`` (pure data parallelism), ``fsdp`` (data parallelism with
parameters and optimizer state sharded over it), ``tensor`` (Megatron-style splits of heads,
MLP and vocab). Batches are split over ``data`` x ``fsdp``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from ptft_jax.errors import UserError

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# Logical axis name -> mesh axis (or axes). Parameters use the first block, activations the second.
LOGICAL_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("embed", "fsdp"),
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("norm", None),
    ("batch", BATCH_AXES),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
)


class MeshError(UserError):
    """The requested mesh does not fit the available devices."""


def mesh_shape(mesh_cfg: Mapping[str, int], num_devices: int) -> tuple[int, int, int]:
    """Resolve ``{data, fsdp, tensor}`` sizes, where one -1 takes all remaining devices."""
    sizes = [int(mesh_cfg.get(axis, 1)) for axis in MESH_AXES]
    if sizes.count(-1) > 1:
        raise MeshError("At most one mesh axis may be -1; set the other --config.mesh.* to sizes.")
    known = math.prod(s for s in sizes if s != -1)
    if any(s == 0 or s < -1 for s in sizes) or num_devices % known:
        raise MeshError(
            f"mesh {dict(zip(MESH_AXES, sizes, strict=True))} does not divide the {num_devices} "
            "devices; set --config.mesh.* so that their product (with -1 for one axis) fits."
        )
    sizes = [num_devices // known if s == -1 else s for s in sizes]
    if math.prod(sizes) != num_devices:
        raise MeshError(
            f"mesh {dict(zip(MESH_AXES, sizes, strict=True))} uses {math.prod(sizes)} of "
            f"{num_devices} devices; set one --config.mesh.* axis to -1 to use them all."
        )
    return tuple(sizes)  # type: ignore[return-value]


def make_mesh(mesh_cfg: Mapping[str, int], devices=None) -> Mesh:
    """A ``(data, fsdp, tensor)`` mesh over ``devices`` (default: all devices, all processes)."""
    devices = jax.devices() if devices is None else list(devices)
    shape = mesh_shape(mesh_cfg, len(devices))
    return jax.make_mesh(
        shape, MESH_AXES, axis_types=(AxisType.Auto,) * len(MESH_AXES), devices=devices
    )


def logical_to_spec(names, shape, mesh: Mesh) -> PartitionSpec:
    """Map logical names to a PartitionSpec, replicating any dimension the mesh cannot divide."""
    table = dict(LOGICAL_RULES)
    spec = []
    for name, dim in zip(names, shape, strict=True):
        axes = table.get(name) if name else None
        if axes is not None:
            size = math.prod(mesh.shape[a] for a in (axes if isinstance(axes, tuple) else (axes,)))
            if dim % size:
                logging.warning(
                    "dimension %d (%s) is not divisible by %d: replicated", dim, name, size
                )
                axes = None
        spec.append(axes)
    while spec and spec[-1] is None:
        spec.pop()
    return PartitionSpec(*spec)


def param_specs(abstract_state: nnx.State, mesh: Mesh):
    """PartitionSpecs for every parameter, as a pure dict mirroring ``nnx.to_pure_dict``."""
    # Read the raw logical names: an active rules context would already have renamed them.
    with nnx.logical_axis_rules(()):
        names = nnx.get_partition_spec(abstract_state)
    shapes = nnx.to_pure_dict(abstract_state)
    names = nnx.to_pure_dict(names)
    return jax.tree.map(
        lambda n, s: logical_to_spec(tuple(n), s.shape, mesh),
        names,
        shapes,
        is_leaf=lambda x: isinstance(x, PartitionSpec),
    )


def named(mesh: Mesh, specs):
    """NamedShardings from a tree of PartitionSpecs."""
    return jax.tree.map(
        lambda s: NamedSharding(mesh, s), specs, is_leaf=lambda x: isinstance(x, PartitionSpec)
    )


def batch_spec(ndim: int, accum_axis: bool = True) -> PartitionSpec:
    """Batches are ``[accum, batch, ...]``: the batch dimension is split over data x fsdp."""
    lead = (None, BATCH_AXES) if accum_axis else (BATCH_AXES,)
    return PartitionSpec(*lead, *([None] * (ndim - len(lead))))


def to_global(batch: Mapping[str, np.ndarray], mesh: Mesh, global_rows: int) -> dict:
    """Assemble process-local ``[accum, rows, ...]`` arrays into global sharded jax.Arrays."""
    out = {}
    for key, local in batch.items():
        shape = (local.shape[0], global_rows, *local.shape[2:])
        sharding = NamedSharding(mesh, batch_spec(local.ndim))
        out[key] = jax.make_array_from_process_local_data(sharding, local, shape)
    return out


def check_rows(mesh: Mesh, micro: int) -> None:
    """Stop unless a microbatch of ``micro`` rows splits evenly over the batch axes."""
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if micro % shards:
        raise MeshError(
            f"The microbatch (train.batch_size / grad_accum_steps = {micro}) is not divisible by "
            f"the data x fsdp mesh size {shards}; change train.batch_size or mesh.*."
        )


def process_rows(mesh: Mesh, rows: int) -> tuple[int, int]:
    """The contiguous range ``[start, stop)`` of a batch's ``rows`` that this process feeds."""
    spec = NamedSharding(mesh, PartitionSpec(BATCH_AXES))
    index_map = spec.addressable_devices_indices_map((rows,))
    starts = sorted({(s[0].start or 0, s[0].stop or rows) for s in index_map.values()})
    start, stop = starts[0][0], starts[-1][1]
    covered = sum(b - a for a, b in starts)
    if covered != stop - start:
        raise MeshError("This process's devices hold non-contiguous batch rows; reorder the mesh.")
    return start, stop
