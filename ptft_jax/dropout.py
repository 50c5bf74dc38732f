"""Dropout whose masks are a keyed hash of each element's global index."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


def _hash32(x: jax.Array) -> jax.Array:
    """A 32-bit integer hash with full avalanche (C. Wellons' "lowbias32"), on uint32 arrays."""
    x = x ^ (x >> 16)
    x = x * jnp.uint32(0x7FEB352D)
    x = x ^ (x >> 15)
    x = x * jnp.uint32(0x846CA68B)
    return x ^ (x >> 16)


def dropout(x: jax.Array, rate: float, rngs: nnx.Rngs | None) -> jax.Array:
    """Inverted dropout; the identity when ``rngs`` is None (evaluation) or ``rate`` is 0.

    Keep decisions are a keyed hash of each element's global index: two 32-bit words drawn
    from the dropout stream key two rounds of ``_hash32``. That costs a few integer operations
    per element, where threefry bits cost about forty (they dominated the attention-dropout
    time on CPUs at length 256), and it is still a pure function of (key, index): identical
    on any mesh, and exactly reproducible on resume. Rate error is below 2^-32.
    """
    if rngs is None or rate == 0.0:
        return x
    words = jax.random.bits(rngs.dropout(), (2,), jnp.uint32)
    index = jnp.zeros(x.shape, jnp.uint32)
    stride = 1
    for dim in reversed(range(x.ndim)):
        index = index + jax.lax.broadcasted_iota(jnp.uint32, x.shape, dim) * jnp.uint32(stride)
        stride *= x.shape[dim]
    bits = _hash32(_hash32(index ^ words[0]) ^ words[1])
    keep = bits >= jnp.uint32(min(round(rate * 2.0**32), 2**32 - 1))
    return jnp.where(keep, x / (1.0 - rate), 0).astype(x.dtype)
