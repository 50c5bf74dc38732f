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


def attention(q_BxQxNxH, k_BxLxNxH, v_BxLxNxH, mask_BxL, *, implementation, dropout_rate, rngs):
    """Softmax attention of the queries over the keys ``mask_BxL`` marks (padding on the right,
    as every batch here has it), with dropout on the probabilities when ``rngs`` is given.
    A pairwise mask ``[B, Q, L]`` (packed rows: ``layers.segment_mask``) takes XLA's path.

    Attention dropout needs the probabilities, so it takes the explicit path; otherwise
    ``jax.nn.dot_product_attention``, where cuDNN reads the mask as per-row key lengths (at
    least 1, so an all-padding row stays finite) and never forms the [B, N, Q, L] scores.
    """
    if rngs is not None and dropout_rate > 0.0:
        scale = jnp.sqrt(jnp.float32(q_BxQxNxH.shape[-1]))
        logits = jnp.einsum(
            "bqnh,bknh->bnqk", q_BxQxNxH, k_BxLxNxH, preferred_element_type=jnp.float32
        )
        logits = jnp.where(_per_head(mask_BxL), logits / scale, jnp.finfo(jnp.float32).min)
        probs = dropout(jax.nn.softmax(logits, axis=-1), dropout_rate, rngs)
        return jnp.einsum("bnqk,bknh->bqnh", probs.astype(v_BxLxNxH.dtype), v_BxLxNxH)
    if implementation == "cudnn" and mask_BxL.ndim == 2:
        lengths_B = jnp.maximum(mask_BxL.sum(-1), 1).astype(jnp.int32)
        return jax.nn.dot_product_attention(
            q_BxQxNxH, k_BxLxNxH, v_BxLxNxH, key_value_seq_lengths=lengths_B, implementation="cudnn"
        )
    return jax.nn.dot_product_attention(q_BxQxNxH, k_BxLxNxH, v_BxLxNxH, mask=_per_head(mask_BxL))


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
