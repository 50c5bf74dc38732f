"""Small pieces of the model whose cost, gradient or placement we choose by hand: dropout whose
masks are a keyed hash of each element's global index, BERT's GELU, a bias add whose gradient
is a product rather than a reduction, the attention kernel (XLA's or cuDNN's), and sharding
hints by logical axis names."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from flax.core import spmd
from jax.sharding import PartitionSpec


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


@jax.custom_vjp
def add_bias(x_BxKxV: jax.Array, bias_V: jax.Array) -> jax.Array:
    """``x + bias``, whose bias gradient is a matrix-vector product: on CPUs XLA's reduction
    over the rows of the MLM logits took 30 ms at 608 x 30,522, the product 2 ms."""
    return x_BxKxV + bias_V


def _add_bias_fwd(x, bias):
    return x + bias, (jnp.ones(x.shape[:-1], x.dtype), bias)


def _add_bias_bwd(res, g):
    ones, bias = res
    return g, jnp.einsum("...v,...->v", g, ones).astype(bias.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


def gelu(x: jax.Array) -> jax.Array:
    """The exact erf GELU of BERT (``hidden_act="gelu"``), in PyTorch's form: through erf,
    whose XLA expansion is a few times cheaper than the erfc jax.nn.gelu uses."""
    return x * 0.5 * (1.0 + jax.lax.erf(x * (2.0**-0.5)))


def attention_implementation(choice: str, dtype: str, head_dim: int) -> str:
    """``"cudnn"`` or ``"xla"`` for ``model.attention``: ``auto`` picks cuDNN's fused flash
    attention where it runs (a CUDA GPU, 16-bit matmuls, head size a multiple of 8 up to 128)
    and XLA's softmax(QK^T)V elsewhere."""
    if choice != "auto":
        return choice
    return "cudnn" if cudnn_fits(dtype, head_dim) and jax.default_backend() == "gpu" else "xla"


def cudnn_fits(dtype: str, head_dim: int) -> bool:
    """Whether cuDNN's flash attention takes this matmul dtype and head size."""
    return dtype in ("bfloat16", "float16") and head_dim % 8 == 0 and head_dim <= 128


def attention(
    q_BxQxNxH,
    k_BxLxNxH,
    v_BxLxNxH,
    mask_BxL,
    *,
    implementation,
    dropout_rate,
    rngs,
    local_window: int | None = None,
):
    """Softmax attention of the queries over the keys ``mask_BxL`` marks (padding on the right,
    as every batch here has it), with dropout on the probabilities when ``rngs`` is given.
    A pairwise mask ``[B, Q, L]`` (packed rows: ``layers.segment_mask``) takes XLA's path.
    ``local_window`` w (a key mask and Q = L only): query i sees keys i - w .. i + w alone;
    cuDNN then computes only that band, and XLA, once rows pass three windows, blocks of w
    queries over the 3w keys around them (``banded_attention``): memory and FLOPs linear in L.

    Attention dropout needs the probabilities, so it takes the explicit path; otherwise
    ``jax.nn.dot_product_attention``, where cuDNN reads the mask as per-row key lengths (at
    least 1, so an all-padding row stays finite) and never forms the [B, N, Q, L] scores.
    """
    window = None if local_window is None else (local_window, local_window)
    if rngs is not None and dropout_rate > 0.0:
        scale = jnp.sqrt(jnp.float32(q_BxQxNxH.shape[-1]))
        logits = jnp.einsum(
            "bqnh,bknh->bnqk", q_BxQxNxH, k_BxLxNxH, preferred_element_type=jnp.float32
        )
        mask = _per_head(mask_BxL)
        if local_window is not None:
            mask = mask & band(k_BxLxNxH.shape[1], local_window)[None, None]
        logits = jnp.where(mask, logits / scale, jnp.finfo(jnp.float32).min)
        probs = dropout(jax.nn.softmax(logits, axis=-1), dropout_rate, rngs)
        return jnp.einsum("bnqk,bknh->bqnh", probs.astype(v_BxLxNxH.dtype), v_BxLxNxH)
    if implementation == "cudnn" and mask_BxL.ndim == 2:
        lengths_B = jnp.maximum(mask_BxL.sum(-1), 1).astype(jnp.int32)
        return jax.nn.dot_product_attention(
            q_BxQxNxH,
            k_BxLxNxH,
            v_BxLxNxH,
            key_value_seq_lengths=lengths_B,
            local_window_size=window,
            implementation="cudnn",
        )
    if local_window is not None and mask_BxL.ndim == 2 and k_BxLxNxH.shape[1] > 3 * local_window:
        return banded_attention(q_BxQxNxH, k_BxLxNxH, v_BxLxNxH, mask_BxL, local_window)
    return jax.nn.dot_product_attention(
        q_BxQxNxH, k_BxLxNxH, v_BxLxNxH, mask=_per_head(mask_BxL), local_window_size=window
    )


def banded_attention(q_BxLxNxH, k_BxLxNxH, v_BxLxNxH, mask_BxL, window: int):
    """What ``jax.nn.dot_product_attention`` computes with ``local_window_size=(w, w)`` and a
    key mask, without the [L, L] scores: the rows are cut into blocks of w queries (X of them,
    the last padded), and each block attends to the three blocks of keys around its own
    (``[B, X, 3w]``), masked to the band. Memory and FLOPs grow with L, not L^2."""
    b, length, n, h = q_BxLxNxH.shape
    blocks = -(-length // window)
    tail = blocks * window - length

    def pad(x, before, after):
        return jnp.pad(x, ((0, 0), (before, after)) + ((0, 0),) * (x.ndim - 2))

    def around(x):  # [B, L, ...] -> [B, X, 3w, ...]: each block's keys, from the one before on
        x = pad(x, window, tail + window).reshape(b, blocks + 2, window, *x.shape[2:])
        return jnp.concatenate([x[:, :-2], x[:, 1:-1], x[:, 2:]], axis=2)

    q_BxXxWxNxH = pad(q_BxLxNxH, 0, tail).reshape(b, blocks, window, n, h)
    k_BxXxSxNxH, v_BxXxSxNxH, keys_BxXxS = around(k_BxLxNxH), around(v_BxLxNxH), around(mask_BxL)
    queries_XxW = jnp.arange(blocks * window).reshape(blocks, window)
    keys_XxS = (jnp.arange(blocks)[:, None] - 1) * window + jnp.arange(3 * window)[None]
    band_XxWxS = jnp.abs(queries_XxW[:, :, None] - keys_XxS[:, None, :]) <= window
    mask_BxXx1xWxS = (band_XxWxS[None] & keys_BxXxS[:, :, None, :])[:, :, None]
    logits = jnp.einsum(
        "bxqnh,bxknh->bxnqk", q_BxXxWxNxH, k_BxXxSxNxH, preferred_element_type=jnp.float32
    )
    logits = logits * jnp.float32(h**-0.5)
    logits = jnp.where(mask_BxXx1xWxS, logits, -0.7 * float(jnp.finfo(jnp.float32).max))
    probs = jax.nn.softmax(logits, axis=-1).astype(k_BxLxNxH.dtype)
    out = jnp.einsum("bxnqk,bxknh->bxqnh", probs, v_BxXxSxNxH)
    return out.reshape(b, blocks * window, n, h)[:, :length]


def band(length: int, window: int, positions_BxQ=None) -> jax.Array:
    """Which keys each query sees under a local window: ``|query - key| <= window``, ``[L, L]``
    (or ``[B, Q, L]`` for the queries at ``positions_BxQ``)."""
    queries = jnp.arange(length)[:, None] if positions_BxQ is None else positions_BxQ[..., None]
    return jnp.abs(queries - jnp.arange(length)) <= window


def _per_head(mask):
    """A key mask ``[B, L]`` or pairwise mask ``[B, Q, L]`` as ``[B, 1 (heads), Q or 1, L]``."""
    return mask[:, None, None, :] if mask.ndim == 2 else mask[:, None]


# model.remat_policy: what a recomputed layer keeps from its forward pass for the backward.
REMAT_POLICIES = {
    "full": None,  # its input alone: the backward reruns the whole layer
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,  # + dense outputs
}


def constrain(x: jax.Array, logical_axes: tuple[str | None, ...]) -> jax.Array:
    """Sharding hint for an activation, by logical axis names; a no-op without rules or mesh."""
    rules = spmd.get_logical_axis_rules()
    mesh = jax.sharding.get_abstract_mesh()
    if not rules or mesh.empty:
        return x
    table = dict(rules)
    spec = PartitionSpec(*(table.get(name) if name else None for name in logical_axes))
    return jax.lax.with_sharding_constraint(x, spec)
