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


def classification_sums(
    logits_BxC: jax.Array, labels_B: jax.Array, weights_B: jax.Array, loss_weights_B=None
) -> dict:
    """Summed cross-entropy (or squared error when C == 1, regression) and correct count.
    ``loss_weights_B``: the rows the loss trains on, when not all of ``weights_B`` (the
    transfer rows of distillation have no label of their own)."""
    logits_BxC = logits_BxC.astype(jnp.float32)
    if logits_BxC.shape[-1] == 1:
        err_B = (logits_BxC[..., 0] - labels_B.astype(jnp.float32)) ** 2
        correct_B = jnp.zeros_like(err_B)
    else:
        err_B = optax.softmax_cross_entropy_with_integer_labels(logits_BxC, labels_B)
        correct_B = (jnp.argmax(logits_BxC, axis=-1) == labels_B).astype(jnp.float32)
    return {
        "loss_sum": jnp.sum(err_B * (weights_B if loss_weights_B is None else loss_weights_B)),
        "correct_sum": jnp.sum(correct_B * weights_B),
        "weight_sum": jnp.sum(weights_B),
    }


def nsp_sums(logits_Bx2: jax.Array, labels_B: jax.Array, weights_B: jax.Array) -> dict:
    """Next-sentence prediction: summed cross-entropy, correct count and row count."""
    sums = classification_sums(logits_Bx2, labels_B, weights_B)
    return {f"nsp_{k}": v for k, v in sums.items()}


def distill_sums(
    student: jax.Array, teacher: jax.Array, hard: dict, weights: jax.Array, alpha, temperature
) -> dict:
    """``hard`` (the task's sums) with ``loss_sum`` replaced by the distillation loss:
    ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * hard loss``, summed over the
    labelled rows or positions (the last axis holds the classes). ``T^2`` keeps the soft
    gradients' scale independent of T (Hinton et al.); a regression head (one output)
    matches the teacher's value by squared error instead."""
    student = student.astype(jnp.float32)
    teacher = jax.lax.stop_gradient(teacher.astype(jnp.float32))
    if student.shape[-1] == 1:
        soft = (student[..., 0] - teacher[..., 0]) ** 2
    else:
        log_t = jax.nn.log_softmax(teacher / temperature, axis=-1)
        log_s = jax.nn.log_softmax(student / temperature, axis=-1)
        soft = temperature**2 * jnp.sum(jnp.exp(log_t) * (log_t - log_s), axis=-1)
    soft_sum = jnp.sum(soft * weights)
    return hard | {
        "loss_sum": alpha * soft_sum + (1.0 - alpha) * hard["loss_sum"],
        "kd_loss_sum": soft_sum,
        "hard_loss_sum": hard["loss_sum"],
    }


def contrastive_sums(z_Bx2xD: jax.Array, weights_B: jax.Array, temperature: float) -> dict:
    """SimCSE's InfoNCE: row i's first view must pick its second view among the second views
    of every real row of the batch (cosine similarity / temperature, cross-entropy).

    ``B`` is the global batch: under a mesh the similarity matrix spans every device's rows,
    so the negatives come from all devices and hosts. Rows of weight 0 (padding) are neither
    anchors nor negatives. ``correct_sum`` counts rows whose positive scores highest.
    """
    z_Bx2xD = z_Bx2xD.astype(jnp.float32)
    # Unit vectors; a zero vector (an empty packed slot) stays zero, with finite gradients.
    squares_Bx2x1 = jnp.sum(z_Bx2xD * z_Bx2xD, axis=-1, keepdims=True)
    z_Bx2xD = z_Bx2xD * jax.lax.rsqrt(jnp.maximum(squares_Bx2x1, 1e-16))
    sim_BxB = jnp.einsum("id,jd->ij", z_Bx2xD[:, 0], z_Bx2xD[:, 1]) / temperature
    sim_BxB = jnp.where(weights_B[None, :] > 0, sim_BxB, -1e9)
    targets_B = jnp.arange(sim_BxB.shape[0])
    xent_B = optax.softmax_cross_entropy_with_integer_labels(sim_BxB, targets_B)
    correct_B = (jnp.argmax(sim_BxB, axis=-1) == targets_B).astype(jnp.float32)
    return {
        "loss_sum": jnp.sum(xent_B * weights_B),
        "correct_sum": jnp.sum(correct_B * weights_B),
        "weight_sum": jnp.sum(weights_B),
    }
