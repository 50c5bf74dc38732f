"""Pure init, train and eval steps, jitted once with explicit shardings.

The train state is a plain dict ``{"params", "opt_state", "step"}`` of arrays; the NNX module
structure lives in a static ``graphdef`` and is merged back inside the traced functions.
Batches are ``[A, B, ...]``: A gradient-accumulation microbatches of B rows each.
"""

from __future__ import annotations

import concurrent.futures
import functools
import os
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ptft_jax import losses, sharding
from ptft_jax.model import ModelConfig, build_model

State = dict[str, Any]


def abstract_model(model_cfg: ModelConfig, task: str):
    """``(graphdef, abstract param state)`` without allocating anything."""
    return nnx.split(nnx.eval_shape(lambda: build_model(model_cfg, task, 0)))


def state_specs(model_cfg: ModelConfig, task: str, tx: optax.GradientTransformation, mesh: Mesh):
    """PartitionSpecs of the whole train state; optimizer moments follow their parameters."""
    _, abstract = abstract_model(model_cfg, task)
    p_specs = sharding.param_specs(abstract, mesh)
    abstract_params = nnx.to_pure_dict(abstract)
    opt_abstract = jax.eval_shape(tx.init, abstract_params)
    # An optimizer-state leaf that mirrors a parameter (Adam moments) ends in that parameter's
    # dict path: it takes the parameter's spec. Counts and the like are replicated. (Frozen
    # parameters have no state at all: optax leaves an empty MaskedNode there.)
    flat = {
        tuple(k.key for k in path): spec
        for path, spec in jax.tree_util.tree_flatten_with_path(
            p_specs, is_leaf=lambda x: isinstance(x, PartitionSpec)
        )[0]
    }
    shapes = {
        tuple(k.key for k in path): leaf.shape
        for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]
    }

    def spec_of(path, leaf):
        keys = []
        for k in reversed(path):
            if not isinstance(k, jax.tree_util.DictKey):
                break
            keys.insert(0, k.key)
        keys = tuple(keys)
        if keys in flat and shapes[keys] == leaf.shape:
            return flat[keys]
        return PartitionSpec()

    o_specs = jax.tree_util.tree_map_with_path(spec_of, opt_abstract)
    return {"params": p_specs, "opt_state": o_specs, "step": PartitionSpec()}


def make_init_fn(model_cfg: ModelConfig, task: str, tx, mesh: Mesh, seed: int) -> Callable:
    """A jitted ``() -> state`` whose outputs are born sharded (never materialised whole)."""
    shardings = sharding.named(mesh, state_specs(model_cfg, task, tx, mesh))

    def init() -> State:
        params = nnx.to_pure_dict(nnx.state(build_model(model_cfg, task, seed)))
        return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}

    return jax.jit(init, out_shardings=shardings)


# The batch field that weighs each loss term, and the name of the accuracy metric, per task.
WEIGHTS = {"mlm": "masked_weights", "classification": "weights", "contrastive": "weights"}
ACCURACY = {
    "mlm": "mlm_accuracy",
    "classification": "accuracy",
    "contrastive": "contrastive_accuracy",
}


def _forward(task: str, graphdef, params, mb: dict, rngs, teacher=None, temperature=0.05) -> dict:
    """Summed loss statistics of one microbatch. ``teacher``: ``(distill.Spec, its params)``;
    ``temperature``: the contrastive softmax's."""
    model = nnx.merge(graphdef, params)
    if task == "contrastive":
        # Both views of a row side by side, [B, 2, L] -> [2B, L]: each device keeps its rows.
        # Unsupervised, the second view is the same text under other dropout masks.
        views = {
            k: jnp.stack([mb[k], mb.get(f"pair_{k}", mb[k])], 1).reshape(-1, mb[k].shape[-1])
            for k in ("input_ids", "attention_mask")
        }
        z_Bx2xD = model(views["input_ids"], views["attention_mask"], rngs=rngs).reshape(
            *mb["input_ids"].shape[:1], 2, -1
        )
        return losses.contrastive_sums(z_Bx2xD, mb["weights"], temperature)
    inputs = (mb["input_ids"], mb["attention_mask"], mb["token_type_ids"])
    if task == "classification":
        logits, labels, weights = model(*inputs, rngs=rngs), mb["labels"], mb["weights"]
        sums = losses.classification_sums(logits, labels, weights, mb.get("label_weights"))
    else:
        logits, nsp_Bx2 = model.pretraining(*inputs, mb["masked_positions"], rngs=rngs)
        weights = mb["masked_weights"]
        sums = losses.mlm_sums(logits, mb["masked_ids"], weights)
        if nsp_Bx2 is not None:
            sums |= losses.nsp_sums(nsp_Bx2, mb["next_sentence_label"], mb["next_sentence_weight"])
    if teacher is not None:
        spec, teacher_params = teacher
        t_model = nnx.merge(spec.graphdef, teacher_params)
        t_logits = t_model(
            *inputs, *(() if task == "classification" else (mb["masked_positions"],))
        )
        sums = losses.distill_sums(logits, t_logits, sums, weights, spec.alpha, spec.temperature)
    return sums


def train_step(
    state: State,
    batch: dict,
    teacher_params=None,
    *,
    task: str,
    graphdef,
    tx,
    schedule,
    seed: int,
    teacher=None,
    temperature: float = 0.05,
):
    """One optimizer update over all microbatches of ``batch``; returns (state, metrics).

    Each microbatch's summed loss is divided by the label count of the whole batch, so the
    accumulated gradient equals the gradient of the mean loss over the global batch exactly.
    ``teacher`` (a static ``distill.Spec``) with ``teacher_params``: distillation.
    """
    params, step = state["params"], state["step"]
    total_weight = jnp.maximum(jnp.sum(batch[WEIGHTS[task]]), 1.0)
    nsp = "next_sentence_label" in batch  # BERT's second loss: the mean over the batch's pairs
    total_pairs = jnp.maximum(jnp.sum(batch["next_sentence_weight"]), 1.0) if nsp else 1.0
    with_teacher = None if teacher is None else (teacher, teacher_params)

    def loss_of(sums):
        return sums["loss_sum"] / total_weight + (sums["nsp_loss_sum"] / total_pairs if nsp else 0)

    step_key = jax.random.fold_in(jax.random.key(seed), step)

    def grads_of(index, mb):
        key = jax.random.fold_in(step_key, index)

        def loss_fn(p):
            rngs = nnx.Rngs(dropout=key)
            sums = _forward(task, graphdef, p, mb, rngs, with_teacher, temperature)
            return loss_of(sums), sums

        return jax.grad(loss_fn, has_aux=True)(params)

    def microbatch(carry, xs):
        grads, sums = grads_of(*xs)
        return jax.tree.map(jnp.add, carry, (grads, sums)), None

    num_micro = batch["input_ids"].shape[0]
    if num_micro == 1:
        # No accumulator: the loop's zero-filled gradient buffers cost a pass over the model.
        grads, sums = grads_of(0, jax.tree.map(lambda x: x[0], batch))
    else:
        shapes = jax.eval_shape(grads_of, 0, jax.tree.map(lambda x: x[0], batch))
        zeros = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)
        (grads, sums), _ = jax.lax.scan(microbatch, zeros, (jnp.arange(num_micro), batch))
    loss, grad_norm = loss_of(sums), optax.global_norm(grads)
    # An update whose loss, gradient or new parameters are not finite never reaches the state:
    # it is dropped (and counted), so no checkpoint can hold a NaN, whatever the cause (a bad
    # batch, a NaN learning rate, an optimizer number). The new parameters are checked, not
    # predicted: one flag for all of them, then a cond keeps the old state when it is down.
    updates, new_opt_state = tx.update(grads, state["opt_state"], params)
    new_params = optax.apply_updates(params, updates)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    for leaf in jax.tree.leaves(new_params):
        finite &= jnp.all(jnp.isfinite(leaf))
    params, opt_state = jax.lax.cond(
        finite,
        lambda: (new_params, new_opt_state),
        lambda: (params, state["opt_state"]),
    )
    metrics = {
        "loss": loss,
        ACCURACY[task]: sums["correct_sum"] / total_weight,
        "grad_norm": grad_norm,
        "learning_rate": schedule(step),
        "nonfinite": 1 - finite.astype(jnp.int32),
    }
    if nsp:
        metrics["nsp_loss"] = sums["nsp_loss_sum"] / total_pairs
        metrics["nsp_accuracy"] = sums["nsp_correct_sum"] / total_pairs
    if teacher is not None:
        metrics["kd_loss"] = sums["kd_loss_sum"] / total_weight
        metrics["hard_loss"] = sums["hard_loss_sum"] / total_weight
    return {"params": params, "opt_state": opt_state, "step": step + 1}, metrics


def eval_step(params, batch: dict, *, task: str, graphdef, temperature: float = 0.05):
    """MLM, contrastive: summed loss/correct/weight. Classification: the logits, for exact
    host metrics."""
    mb = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), batch)
    if task == "classification":
        model = nnx.merge(graphdef, params)
        return model(mb["input_ids"], mb["attention_mask"], mb["token_type_ids"])
    # Contrastive evaluation keeps dropout (fixed masks): without it both views are one.
    rngs = nnx.Rngs(dropout=jax.random.key(0)) if task == "contrastive" else None
    return _forward(task, graphdef, params, mb, rngs, temperature=temperature)


def jit_steps(
    model_cfg: ModelConfig,
    task: str,
    tx,
    schedule,
    mesh: Mesh,
    seed: int,
    batch_keys,
    teacher=None,
    temperature: float = 0.05,
):
    """Jitted ``train_step(state, batch)`` (state donated) and ``eval_step(params, batch)``.

    ``teacher``: ``(distill.Spec, parameters on the mesh)``; the train step then takes them as
    a third argument, bound here, so callers still see ``(state, batch)``.
    """
    graphdef, _ = abstract_model(model_cfg, task)
    state_sh = sharding.named(mesh, state_specs(model_cfg, task, tx, mesh))
    batch_sh = {k: NamedSharding(mesh, sharding.batch_spec(nd)) for k, nd in batch_keys.items()}
    replicated = NamedSharding(mesh, PartitionSpec())
    static = dict(task=task, graphdef=graphdef, temperature=temperature)
    spec, teacher_params = teacher or (None, None)
    teacher_sh = () if teacher is None else (jax.tree.map(lambda x: x.sharding, teacher_params),)
    train = jax.jit(
        functools.partial(train_step, tx=tx, schedule=schedule, seed=seed, teacher=spec, **static),
        in_shardings=(state_sh, batch_sh, *teacher_sh),
        out_shardings=(state_sh, replicated),
        donate_argnums=(0,),
    )
    if teacher is not None:
        train = Bound(train, teacher_params)
    evaluate = jax.jit(
        functools.partial(eval_step, **static),
        in_shardings=(state_sh["params"], batch_sh),
        out_shardings=replicated,
    )
    return train, evaluate, state_sh


def jit_embed(model_cfg: ModelConfig, mesh: Mesh):
    """Jitted ``(params, batch) -> [rows, D]`` sentence embeddings of a contrastive model
    (batch ``[1, rows, L]``, as evaluation batches), replicated on every device."""
    graphdef, _ = abstract_model(model_cfg, "contrastive")
    state_sh = sharding.named(
        mesh, sharding.param_specs(abstract_model(model_cfg, "contrastive")[1], mesh)
    )

    def embed(params, batch):
        model = nnx.merge(graphdef, params)
        ids, mask = (
            batch[k].reshape(-1, batch[k].shape[-1]) for k in ("input_ids", "attention_mask")
        )
        return model(ids, mask)

    batch_sh = NamedSharding(mesh, sharding.batch_spec(3))
    return jax.jit(
        embed,
        in_shardings=(state_sh, {"input_ids": batch_sh, "attention_mask": batch_sh}),
        out_shardings=NamedSharding(mesh, PartitionSpec()),
    )


class Bound:
    """A jitted (or compiled) ``f(state, batch, extra)`` called as ``(state, batch)``, whose
    ``lower(...).compile()`` stays bound: the teacher's parameters ride along this way."""

    def __init__(self, fn, extra):
        self.fn, self.extra = fn, extra

    def __call__(self, state, batch):
        return self.fn(state, batch, self.extra)

    def lower(self, state, batch):
        return Bound(self.fn.lower(state, batch, self.extra), self.extra)

    def compile(self):
        return Bound(self.fn.compile(), self.extra)


def compile_ahead(jobs: dict, threads: int | None = None) -> dict:
    """``{key: (jitted, args)}`` -> ``{key: jitted.lower(*args).compile()}``; lowering runs
    here, XLA compiles in parallel threads."""
    lowered = {key: fn.lower(*args) for key, (fn, args) in jobs.items()}
    threads = threads or max(1, min(len(lowered), os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        futures = {key: pool.submit(low.compile) for key, low in lowered.items()}
        return {key: future.result() for key, future in futures.items()}


def compile_lengths(train, evaluate, state, example: dict, lengths, accum: int, rows: int):
    """Train and eval steps compiled for every padded length ahead of the loop, each wrapped
    to dispatch on the batch's length. ``example`` is any batch (for keys and dtypes)."""

    def shapes(micro: int, length: int) -> dict:
        return {
            k: jax.ShapeDtypeStruct((micro, rows, *[length][: v.ndim - 2]), v.dtype)
            for k, v in example.items()
        }

    jobs = {("train", n): (train, (state, shapes(accum, n))) for n in lengths}
    jobs |= {("eval", n): (evaluate, (state["params"], shapes(1, n))) for n in lengths}
    done = compile_ahead(jobs)
    return (
        ByLength({n: done["train", n] for n in lengths}, train),
        ByLength({n: done["eval", n] for n in lengths}, evaluate),
    )


class ByLength:
    """Calls the executable compiled for the batch's sequence length (``fn`` for others)."""

    def __init__(self, compiled: dict, fn: Callable):
        self.compiled, self.fn = compiled, fn

    def __call__(self, first, batch: dict):
        return self.compiled.get(batch["input_ids"].shape[-1], self.fn)(first, batch)
