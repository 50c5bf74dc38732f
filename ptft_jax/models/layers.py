"""NNX building blocks every model family shares: parameters born with logical axis names and
Hugging Face's normal(initializer_range) init, float32-statistics LayerNorm, FSDP-friendly
table lookups, a remat-able stack of layers, and mean pooling over real tokens.

Families (``bert.py``, ...) assemble their modules from these and name parameters as their
Hugging Face counterparts do; nothing here names a mesh axis (``sharding.py`` maps the
logical names).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from ptft_jax import ops
from ptft_jax.ops import constrain


def init(initializer, names: tuple[str | None, ...]):
    # Eager sharding stays off: parameters are placed by jit(init, out_shardings=...) instead.
    return nnx.with_partitioning(initializer, names, eager_sharding=False)


def param_init(cfg, names: tuple[str | None, ...], std: float | None = None):
    """HF's normal(0, ``cfg.initializer_range``) init (or normal(0, ``std``)) with logical
    ``names``."""
    return init(nnx.initializers.normal(cfg.initializer_range if std is None else std), names)


def dense(
    cfg, d_in: int, d_out: int, names: tuple[str | None, str | None], rngs, bias=True, std=None
):
    """A Linear whose kernel is (in, out) with logical names and HF's normal init (``std``:
    another standard deviation)."""
    return nnx.Linear(
        d_in,
        d_out,
        use_bias=bias,
        dtype=cfg.jnp_dtype,
        kernel_init=param_init(cfg, names, std),
        bias_init=init(nnx.initializers.zeros_init(), (names[1],)),
        rngs=rngs,
    )


def layer_norm(cfg, rngs) -> nnx.LayerNorm:
    """LayerNorm with float32 statistics (flax reduces in float32 whatever the input dtype)."""
    return nnx.LayerNorm(
        cfg.hidden_size,
        epsilon=cfg.layer_norm_eps,
        dtype=cfg.jnp_dtype,
        scale_init=init(nnx.initializers.ones_init(), ("norm",)),
        bias_init=init(nnx.initializers.zeros_init(), ("norm",)),
        rngs=rngs,
    )


def embed(cfg, n: int, names: tuple[str | None, str | None], rngs) -> nnx.Embed:
    """An ``n`` x hidden_size table with logical ``names`` and HF's normal init."""
    return nnx.Embed(
        n, cfg.hidden_size, dtype=cfg.jnp_dtype, embedding_init=param_init(cfg, names), rngs=rngs
    )


def lookup(table: nnx.Embed, ids) -> jax.Array:
    """Rows of ``table`` at ``ids`` in the table's dtype (float32). Under FSDP the table is
    all-gathered before the lookup, so the lookup and its gradient (reduce-scattered back by
    XLA) work on whole rows."""
    return jnp.take(constrain(table.embedding[...], (None, None)), ids, axis=0)


def run_layers(layers, x, mask, rngs, *, remat: bool, policy: str, last_positions=None) -> list:
    """Every layer's input and the last output, ``[x, h1, ..., hN]``; each layer is called as
    ``layer(x, mask, rngs=, positions_BxQ=)``, the last with ``last_positions`` (the positions
    its outputs are needed at; None: all). With ``remat`` the backward pass reruns each layer
    under ``ops.REMAT_POLICIES[policy]``."""
    hidden = [x]
    # Unrolled on purpose: on one GPU a Python loop over layers measured faster than scan.
    for i, layer in enumerate(layers):
        q = last_positions if i == len(layers) - 1 else None

        def call(m, x, mask, r, q=q):
            return m(x, mask, rngs=r, positions_BxQ=q)

        call = nnx.remat(call, policy=ops.REMAT_POLICIES[policy]) if remat else call
        hidden.append(call(layer, hidden[-1], mask, rngs))
    return hidden


def mean_pool(hidden_BxLxD, attention_mask_BxL) -> jax.Array:
    """The average of the hidden states over real tokens (sentence-transformers' pooling),
    float32 ``[B, D]``."""
    mask_BxL = attention_mask_BxL.astype(jnp.float32)
    sum_BxD = jnp.einsum("bld,bl->bd", hidden_BxLxD.astype(jnp.float32), mask_BxL)
    return sum_BxD / jnp.maximum(mask_BxL.sum(-1, keepdims=True), 1.0)


def segment_mask(segments_BxL) -> jax.Array:
    """Packed rows: which keys each query attends to, ``[B, Q, L]``. ``segments_BxL`` numbers
    the examples of a row from 1 (0: padding); a token attends to its own example only, and a
    padding query to every real key (so its softmax stays finite; no output reads it)."""
    q_BxLx1, k_Bx1xL = segments_BxL[:, :, None], segments_BxL[:, None, :]
    return (k_Bx1xL > 0) & ((q_BxLx1 == k_Bx1xL) | (q_BxLx1 == 0))


def causal_mask(attention_mask_BxL) -> jax.Array:
    """Which keys each query attends to in a decoder, ``[B, Q, L]``: its own example's keys
    (``segment_mask``; a 0/1 mask is one example a row) at its position or before."""
    length = attention_mask_BxL.shape[1]
    earlier_LxL = jnp.tril(jnp.ones((length, length), bool))
    return segment_mask(attention_mask_BxL) & earlier_LxL[None]


def last_positions(attention_mask_BxL, count: int = 1) -> jax.Array:
    """The position of the last token of each of a row's ``count`` examples, ``[B, K]``: the
    rightmost position ``attention_mask_BxL`` numbers ``k`` (a 0/1 mask: the last real token;
    an empty slot: 0). A decoder's classifier reads the state there."""
    length = attention_mask_BxL.shape[1]
    slots_Kx1 = jnp.arange(1, count + 1)[:, None]
    in_slot_BxKxL = attention_mask_BxL[:, None, :] == slots_Kx1[None]
    return jnp.max(jnp.where(in_slot_BxKxL, jnp.arange(length), 0), axis=-1).astype(jnp.int32)


def segment_mean_pool(hidden_BxLxD, segments_BxL, count: int) -> jax.Array:
    """``mean_pool`` of each of a packed row's ``count`` example slots, float32 ``[B, K, D]``
    (an empty slot: zeros)."""
    slots_BxKxL = (segments_BxL[:, None, :] == jnp.arange(1, count + 1)[None, :, None]).astype(
        jnp.float32
    )
    sum_BxKxD = jnp.einsum("bld,bkl->bkd", hidden_BxLxD.astype(jnp.float32), slots_BxKxL)
    return sum_BxKxD / jnp.maximum(slots_BxKxL.sum(-1)[..., None], 1.0)
