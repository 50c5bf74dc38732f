"""Losses and their sufficient statistics (sums, so that shards and microbatches add up)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax


def mlm_sums(logits_BxKxV: jax.Array, ids_BxK: jax.Array, weights_BxK: jax.Array) -> dict:
    """Summed cross-entropy, correct predictions and label count over the masked positions.

    Padding slots of the fixed ``max_predictions_per_seq`` have weight 0 and count nowhere.
    """
    logits_BxKxV = logits_BxKxV.astype(jnp.float32)
    xent_BxK = optax.softmax_cross_entropy_with_integer_labels(logits_BxKxV, ids_BxK)
    correct_BxK = (jnp.argmax(logits_BxKxV, axis=-1) == ids_BxK).astype(jnp.float32)
    return {
        "loss_sum": jnp.sum(xent_BxK * weights_BxK),
        "correct_sum": jnp.sum(correct_BxK * weights_BxK),
        "weight_sum": jnp.sum(weights_BxK),
    }
