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


def classification_sums(logits_BxC: jax.Array, labels_B: jax.Array, weights_B: jax.Array) -> dict:
    """Summed cross-entropy (or squared error when C == 1, regression) and correct count."""
    logits_BxC = logits_BxC.astype(jnp.float32)
    if logits_BxC.shape[-1] == 1:
        err_B = (logits_BxC[:, 0] - labels_B.astype(jnp.float32)) ** 2
        correct_B = jnp.zeros_like(err_B)
    else:
        err_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxC, labels_B)
        correct_B = (jnp.argmax(logits_BxC, axis=-1) == labels_B).astype(jnp.float32)
    return {
        "loss_sum": jnp.sum(err_B * weights_B),
        "correct_sum": jnp.sum(correct_B * weights_B),
        "weight_sum": jnp.sum(weights_B),
    }


def nsp_sums(logits_Bx2: jax.Array, labels_B: jax.Array, weights_B: jax.Array) -> dict:
    """Next-sentence prediction: summed cross-entropy, correct count and row count."""
    sums = classification_sums(logits_Bx2, labels_B, weights_B)
    return {f"nsp_{k}": v for k, v in sums.items()}
