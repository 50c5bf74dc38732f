"""A checksum of every array of a checkpoint, written with the step and verified on restore:
values that read back without error but differ from what was saved are damage too."""

from __future__ import annotations

import jax
import numpy as np


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
