"""Training-only model paths that the Hugging Face parity tests cannot see: dropout."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

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
