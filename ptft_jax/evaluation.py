"""Running a jitted eval step over a whole split and turning its outputs into metrics."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from ptft_jax import metrics, probe, sharding


def for_task(kind, eval_step, params, data, mesh, rows, model_cfg, batches, labels, probe_with):
    """Metrics of ``params`` on the run's evaluation split (``batches``/``labels``: another
    classification split); contrastive runs add the linear probe when ``probe_with`` is
    ``(embed_step, layout)``."""
    if kind == "classification":
        labels = data.eval_labels if labels is None else labels
        batches = batches or data.eval
        return classification(eval_step, params, batches, labels, mesh, rows, model_cfg.num_labels)
    if kind == "mlm":
        return mlm(eval_step, params, data.eval, mesh, rows)
    out = contrastive(eval_step, params, data.eval, mesh, rows)
    if probe_with and data.probe:  # before and after training (embeds the whole probe set)
        out["probe_accuracy"] = probe.accuracy(
            probe_with[0], params, data.probe, mesh, probe_with[1]
        )
    return out


def _totals(eval_step, params, batches, mesh, rows: int) -> dict:
    totals = None
    for batch in batches:
        sums = eval_step(params, sharding.to_global(batch, mesh, rows))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    return jax.device_get(totals)


def mlm(eval_step, params, batches, mesh, rows: int) -> dict:
    """Loss, MLM accuracy and perplexity from summed statistics over every batch."""
    return metrics.mlm_eval_metrics(_totals(eval_step, params, batches, mesh, rows))


def contrastive(eval_step, params, batches, mesh, rows: int) -> dict:
    """InfoNCE loss and the share of rows whose positive ranks first, within each batch."""
    sums = _totals(eval_step, params, batches, mesh, rows)
    weight = max(float(sums["weight_sum"]), 1.0)
    return {
        "loss": float(sums["loss_sum"]) / weight,
        "contrastive_accuracy": float(sums["correct_sum"]) / weight,
    }


def logits(eval_step, params, batches, mesh, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``(logits [N, C], example ids [N])`` of every real example of the split."""
    outs, ids = [], []
    for batch, idx in batches:
        out = np.asarray(jax.device_get(eval_step(params, sharding.to_global(batch, mesh, rows))))
        keep = idx >= 0
        outs.append(out[keep])
        ids.append(idx[keep])
    return np.concatenate(outs), np.concatenate(ids)


def classification(eval_step, params, batches, labels, mesh, rows: int, num_labels: int) -> dict:
    """Loss and the task's metrics over every example (padding rows never count)."""
    out, ids = logits(eval_step, params, batches, mesh, rows)
    y = labels[ids]
    if num_labels == 1:
        pred = out[:, 0]
        result = metrics.regression_metrics(pred, y)
        return {"loss": float(np.mean((pred - y) ** 2)), **result}
    shifted = out - out.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    loss = float(-np.mean(log_probs[np.arange(len(y)), y]))
    return {"loss": loss, **metrics.classification_metrics(out.argmax(1), y, num_labels)}


def scalars(result: dict) -> dict:
    """The numeric entries (what metrics.jsonl and TensorBoard take)."""
    return {k: v for k, v in result.items() if isinstance(v, int | float)}
