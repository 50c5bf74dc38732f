"""NNX building blocks every model family shares: parameters born with logical axis names and
Hugging Face's normal(initializer_range) init, float32-statistics LayerNorm, FSDP-friendly
table lookups, a remat-able stack of layers, a decoder's key/value cache for generation,
and mean pooling over real tokens.

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


def layer_norm(cfg, rngs, bias: bool = True) -> nnx.LayerNorm:
    """LayerNorm with float32 statistics (flax reduces in float32 whatever the input dtype);
    ``bias=False``: scale only."""
    return nnx.LayerNorm(
        cfg.hidden_size,
        epsilon=cfg.layer_norm_eps,
        dtype=cfg.jnp_dtype,
        use_bias=bias,
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


def at_positions(x, positions_BxQ) -> jax.Array:
    """Rows ``positions_BxQ`` of ``x`` (``[B, L, ...]``): ``[B, Q, ...]``."""
    index = positions_BxQ.reshape(*positions_BxQ.shape, *[1] * (x.ndim - 2))
    return jnp.take_along_axis(x, index, 1)


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


def run_cached(layers, x_BxQxD, start_B, cache: dict) -> tuple[jax.Array, dict]:
    """The last layer's output for Q new tokens at positions ``start_B + 0..Q-1``; each layer is
    called as ``layer.cached(x, start_B, keys, values)`` with its slice of ``cache``
    (``empty_cache``) and returns the slice updated, which goes back in."""
    k_XxBxMxNxH, v_XxBxMxNxH = cache["k"], cache["v"]
    for i, layer in enumerate(layers):
        x_BxQxD, k_BxMxNxH, v_BxMxNxH = layer.cached(
            x_BxQxD, start_B, k_XxBxMxNxH[i], v_XxBxMxNxH[i]
        )
        k_XxBxMxNxH = k_XxBxMxNxH.at[i].set(k_BxMxNxH)
        v_XxBxMxNxH = v_XxBxMxNxH.at[i].set(v_BxMxNxH)
    return x_BxQxD, {"k": k_XxBxMxNxH, "v": v_XxBxMxNxH}


def empty_cache(cfg, rows: int) -> dict:
    """A decoder's key/value cache for ``rows`` sequences of up to the context length:
    ``{"k", "v"}``, each ``[layers, B, max_position_embeddings, N, H]`` in the matmul dtype."""
    shape = (cfg.num_hidden_layers, rows, cfg.max_position_embeddings)
    shape += (cfg.num_attention_heads, cfg.head_dim)
    return {"k": jnp.zeros(shape, cfg.jnp_dtype), "v": jnp.zeros(shape, cfg.jnp_dtype)}


def write_rows(cache_BxMxNxH, new_BxQxNxH, start_B) -> jax.Array:
    """``cache`` with each row's Q new entries at positions ``start_B`` onwards: rows of
    different lengths each continue after their own last token (``start_B + Q`` must not pass
    M: the update would be moved back to fit)."""

    def row(cache_MxNxH, new_QxNxH, start):
        return jax.lax.dynamic_update_slice_in_dim(
            cache_MxNxH, new_QxNxH.astype(cache_MxNxH.dtype), start, axis=0
        )

    return jax.vmap(row)(cache_BxMxNxH, new_BxQxNxH, start_B)


def attend_cached(q_BxQxNxH, k_BxQxNxH, v_BxQxNxH, start_B, k_BxMxNxH, v_BxMxNxH):
    """Attention (no dropout) of Q new tokens at positions ``start_B + 0..Q-1`` over a
    key/value cache ``[B, M, N, H]``, their own keys and values written into it first;
    returns (out, keys, values).

    Each query sees the cached positions up to its own. A row's earlier positions all hold its
    real tokens (the prompt, then what was generated), so no query sees padding; later ones
    are stale entries the row will overwrite before it reaches them.
    """
    k_BxMxNxH = write_rows(k_BxMxNxH, k_BxQxNxH, start_B)
    v_BxMxNxH = write_rows(v_BxMxNxH, v_BxQxNxH, start_B)
    positions_BxQ = start_B[:, None] + jnp.arange(q_BxQxNxH.shape[1])
    mask_BxQxM = jnp.arange(k_BxMxNxH.shape[1])[None, None] <= positions_BxQ[..., None]
    # A pairwise mask: XLA's kernel, as ops.attention runs it for packed rows.
    out_BxQxNxH = jax.nn.dot_product_attention(
        q_BxQxNxH, k_BxMxNxH, v_BxMxNxH, mask=mask_BxQxM[:, None]
    )
    return out_BxQxNxH, k_BxMxNxH, v_BxMxNxH


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
