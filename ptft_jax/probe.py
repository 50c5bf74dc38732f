"""Linear probe: how well a frozen encoder's sentence embeddings separate labelled classes.

The embeddings of a labelled set's train split fit a multinomial logistic regression
(standardised features, L2-regularised, full-batch L-BFGS); its accuracy on the test split is
the probe accuracy. Deterministic: the same parameters give the same number.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ptft_jax import sharding


def embed(embed_step, params, data, mesh, layout) -> np.ndarray:
    """Sentence embeddings ``[N, D]`` of Rows ``data`` (``embed_step(params, batch)`` returns
    one vector per row of the global batch)."""
    g = layout.global_rows
    out = []
    for b in range(-(-len(data) // g)):
        rows = layout.rows()
        idx = np.minimum(b * g + rows.reshape(-1), len(data) - 1)
        batch = {
            "input_ids": data.ids[idx].reshape(*rows.shape, -1),
            "attention_mask": data.mask[idx].reshape(*rows.shape, -1),
        }
        out.append(
            np.asarray(jax.device_get(embed_step(params, sharding.to_global(batch, mesh, g))))
        )
    return np.concatenate(out)[: len(data)]


def logistic_regression(x_tr, y_tr, x_te, y_te, l2: float = 1e-3, iters: int = 200) -> float:
    """Test accuracy of an L2-regularised softmax regression fitted on (x_tr, y_tr)."""
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    classes = int(max(y_tr.max(), y_te.max())) + 1
    keep = y_te >= 0  # a test label the train split never had cannot be predicted: it counts wrong
    x_tr, x_te = jnp.asarray(x_tr, jnp.float32), jnp.asarray(x_te, jnp.float32)

    def loss(w):
        logits = x_tr @ w["w"] + w["b"]
        xent = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(y_tr))
        return xent.mean() + l2 * jnp.sum(w["w"] ** 2)

    @jax.jit
    def fit():
        w0 = {"w": jnp.zeros((x_tr.shape[1], classes)), "b": jnp.zeros((classes,))}
        opt = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(loss)

        def body(carry, _):
            w, state = carry
            value, grad = value_and_grad(w, state=state)
            updates, state = opt.update(grad, state, w, value=value, grad=grad, value_fn=loss)
            return (optax.apply_updates(w, updates), state), None

        (w, _), _ = jax.lax.scan(body, (w0, opt.init(w0)), None, length=iters)
        return w

    w = fit()
    pred = np.asarray(jnp.argmax(x_te @ w["w"] + w["b"], axis=-1))
    return float(np.mean((pred == y_te) & keep))


def accuracy(embed_step, params, probe: dict, mesh, layout) -> float:
    """Probe accuracy of ``params`` on ``probe`` (``{"train": Rows, "test": Rows}``)."""
    x_tr, x_te = (embed(embed_step, params, probe[k], mesh, layout) for k in ("train", "test"))
    return logistic_regression(x_tr, probe["train"].labels, x_te, probe["test"].labels)
