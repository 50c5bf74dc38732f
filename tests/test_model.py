"""Training-only model paths that the Hugging Face parity tests cannot see: dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ptft_jax import ops
from ptft_jax.ops import dropout


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_dropout_drops_the_rate_unbiased_and_uncorrelated(rate):
    x = jnp.ones((64, 12, 32, 32), jnp.float32)  # an attention-probabilities shape
    out = np.asarray(dropout(x, rate, nnx.Rngs(dropout=0)))
    kept = out != 0
    n = kept.size
    tolerance = 4 * np.sqrt(rate * (1 - rate) / n)  # 4 standard errors
    assert abs((1 - kept.mean()) - rate) < tolerance
    np.testing.assert_allclose(out[kept], 1.0 / (1.0 - rate), rtol=1e-6)
    # Every axis looks the same: the drop rate per index of each dimension is the rate.
    for axis in range(out.ndim):
        per_index = 1 - kept.mean(axis=tuple(a for a in range(out.ndim) if a != axis))
        per_tol = 5 * np.sqrt(rate * (1 - rate) / (n / out.shape[axis]))
        assert np.abs(per_index - rate).max() < per_tol, axis
    # Neighbours (last axis) and the same element under another key are independent.
    flat = kept.reshape(-1).astype(np.float64)
    assert abs(np.corrcoef(flat[:-1], flat[1:])[0, 1]) < 0.01
    other = np.asarray(dropout(x, rate, nnx.Rngs(dropout=1))) != 0
    assert abs(np.corrcoef(flat, other.reshape(-1))[0, 1]) < 0.01
    again = np.asarray(dropout(x, rate, nnx.Rngs(dropout=0)))
    np.testing.assert_array_equal(out, again)


def test_dropout_is_the_identity_without_rngs_or_rate():
    x = jax.random.normal(jax.random.key(0), (4, 8))
    assert dropout(x, 0.1, None) is x
    assert dropout(x, 0.0, nnx.Rngs(dropout=0)) is x


def test_dropout_mask_does_not_depend_on_sharding():
    """Masks are a function of the global index, so a sharded computation draws the same."""
    mesh = jax.make_mesh((8,), ("d",), axis_types=(jax.sharding.AxisType.Auto,))
    x = jnp.ones((16, 8, 24))
    f = jax.jit(lambda v: dropout(v, 0.1, nnx.Rngs(dropout=3)))
    plain = np.asarray(f(x))
    sharded = jax.device_put(x, jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("d")))
    np.testing.assert_array_equal(np.asarray(f(sharded)), plain)


def test_attention_kernels_agree_and_padding_rows_stay_finite(monkeypatch):
    """The cuDNN branch's call (key lengths from the mask), run through XLA's kernel here,
    equals the masked XLA attention and the explicit (dropout) path on rows with real tokens."""
    k = jax.random.split(jax.random.key(0), 3)
    q_BxQxNxH = jax.random.normal(k[0], (3, 5, 2, 8))
    k_BxLxNxH, v_BxLxNxH = (jax.random.normal(x, (3, 7, 2, 8)) for x in k[1:])
    mask_BxL = jnp.arange(7)[None] < jnp.array([7, 3, 0])[:, None]
    real = jax.nn.dot_product_attention

    def through_xla(*args, implementation=None, **kwargs):
        assert implementation == "cudnn" and "mask" not in kwargs
        return real(*args, implementation="xla", **kwargs)

    def run(implementation, rate=0.0, rngs=None):
        return ops.attention(
            q_BxQxNxH, k_BxLxNxH, v_BxLxNxH, mask_BxL,
            implementation=implementation, dropout_rate=rate, rngs=rngs,
        )  # fmt: skip

    xla = run("xla")
    explicit = run("xla", rate=1e-9, rngs=nnx.Rngs(dropout=0))  # the dropout path, ~no drops
    monkeypatch.setattr(jax.nn, "dot_product_attention", through_xla)
    cudnn = run("cudnn")
    assert bool(jnp.isfinite(cudnn).all())
    np.testing.assert_allclose(cudnn[:2], xla[:2], atol=1e-5)  # rows with real tokens
    np.testing.assert_allclose(explicit, xla, atol=1e-5)
    v_changed = v_BxLxNxH.at[1, 3:].set(100.0)  # values past row 1's padding
    again = ops.attention(
        q_BxQxNxH,
        k_BxLxNxH,
        v_changed,
        mask_BxL,
        implementation="cudnn",
        dropout_rate=0.0,
        rngs=None,
    )
    np.testing.assert_allclose(again[1], cudnn[1], atol=1e-5)
    assert ops.attention_implementation("auto", "float32", 64) == "xla"
    assert ops.attention_implementation("auto", "bfloat16", 64) == (
        "cudnn" if jax.default_backend() == "gpu" else "xla"
    )
    assert ops.attention_implementation("xla", "bfloat16", 64) == "xla"
