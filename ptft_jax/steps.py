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

from ptft_jax import models, sharding

State = dict[str, Any]


def build_model(model_cfg, head: str, seed: int) -> nnx.Module:
    """The model of ``model_cfg``'s family with ``head``, initialised from ``seed``."""
    return models.get(model_cfg.family).build_model(model_cfg, head, seed)


def abstract_model(model_cfg, head: str):
    """``(graphdef, abstract param state)`` without allocating anything."""
    return nnx.split(nnx.eval_shape(lambda: build_model(model_cfg, head, 0)))


def state_specs(model_cfg, head: str, tx: optax.GradientTransformation, mesh: Mesh):
    """PartitionSpecs of the whole train state; optimizer moments follow their parameters."""
    _, abstract = abstract_model(model_cfg, head)
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


def make_init_fn(model_cfg, head: str, tx, mesh: Mesh, seed: int) -> Callable:
    """A jitted ``() -> state`` whose outputs are born sharded (never materialised whole)."""
    shardings = sharding.named(mesh, state_specs(model_cfg, head, tx, mesh))

    def init() -> State:
        params = nnx.to_pure_dict(nnx.state(build_model(model_cfg, head, seed)))
        return {"params": params, "opt_state": tx.init(params), "step": jnp.zeros((), jnp.int32)}

    return jax.jit(init, out_shardings=shardings)


def train_step(state: State, batch: dict, *frozen, task, graphdef, tx, schedule, seed: int):
    """One optimizer update over all microbatches of ``batch``; returns (state, metrics).

    Each microbatch's summed loss is divided by the label count of the whole batch
    (``task.totals``), so the accumulated gradient equals the gradient of the mean loss over
    the global batch exactly. ``frozen``: a distillation teacher's parameters.
    """
    params, step = state["params"], state["step"]
    totals = task.totals(batch)
    step_key = jax.random.fold_in(jax.random.key(seed), step)

    def grads_of(index, mb):
        key = jax.random.fold_in(step_key, index)

        def loss_fn(p):
            rngs = nnx.Rngs(dropout=key)
            sums = task.loss_sums(nnx.merge(graphdef, p), mb, rngs, *frozen)
            return task.loss(sums, totals), sums

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
    loss, grad_norm = task.loss(sums, totals), optax.global_norm(grads)
    # An update whose loss, gradient or learning rate is not finite never reaches the state:
    # it is dropped (and counted), so no checkpoint can hold a NaN, whatever the cause (a bad
    # batch, an overflow, a schedule gone wrong). From finite inputs AdamW's new parameters
    # are finite: config.validate keeps adam_eps above 0 and the betas below 1, so it never
    # divides 0 by 0. The update runs inside the cond, in place; checking the new parameters
    # instead cost a pass over them and a copy of the whole state (35 ms of a 460 ms MiniLM
    # step on 2 cores).
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm) & jnp.isfinite(schedule(step))

    def update():
        updates, new_opt_state = tx.update(grads, state["opt_state"], params)
        return optax.apply_updates(params, updates), new_opt_state

    params, opt_state = jax.lax.cond(finite, update, lambda: (params, state["opt_state"]))
    metrics = {
        "loss": loss,
        **task.step_metrics(sums, totals),
        "grad_norm": grad_norm,
        "learning_rate": schedule(step),
        "nonfinite": 1 - finite.astype(jnp.int32),
    }
    return {"params": params, "opt_state": opt_state, "step": step + 1}, metrics


def eval_step(params, batch: dict, *, task, graphdef):
    """What ``task.eval_outputs`` returns for the batch's rows: summed statistics, or logits
    for exact host metrics."""
    mb = jax.tree.map(lambda x: x.reshape(-1, *x.shape[2:]), batch)
    return task.eval_outputs(nnx.merge(graphdef, params), mb)


def batch_shardings(task, mesh: Mesh) -> dict:
    """The sharding of each field of ``task``'s batches ``[accum, rows, ...]``: rows split."""
    return {
        k: NamedSharding(mesh, sharding.batch_spec(2 + len(shape)))
        for k, (shape, _) in task.batch_spec().items()
    }


def jit_steps(model_cfg, task, tx, schedule, mesh: Mesh, seed: int, teacher_params=None):
    """Jitted ``train_step(state, batch)`` (state donated) and ``eval_step(params, batch)``.

    With ``teacher_params`` (distillation) the train step is ``(state, batch, teacher)``.
    """
    graphdef, _ = abstract_model(model_cfg, task.head)
    state_sh = sharding.named(mesh, state_specs(model_cfg, task.head, tx, mesh))
    batch_sh = batch_shardings(task, mesh)
    replicated = NamedSharding(mesh, PartitionSpec())
    frozen_sh = (
        () if teacher_params is None else (jax.tree.map(lambda x: x.sharding, teacher_params),)
    )
    train = jax.jit(
        functools.partial(
            train_step, task=task, graphdef=graphdef, tx=tx, schedule=schedule, seed=seed
        ),
        in_shardings=(state_sh, batch_sh, *frozen_sh),
        out_shardings=(state_sh, replicated),
        donate_argnums=(0,),
    )
    evaluate = jax.jit(
        functools.partial(eval_step, task=task, graphdef=graphdef),
        in_shardings=(state_sh["params"], batch_sh),
        out_shardings=replicated,
    )
    return train, evaluate, state_sh


def forward(params, batch: dict, *, graphdef, backbone: str | None = None):
    """The model's outputs (no dropout) for the rows of ``batch`` (fields ``[..., L]``: ids,
    mask, optional segment ids and masked positions). With ``backbone`` (the family's
    ``BACKBONE``), every layer's hidden states instead of the head's outputs."""
    model = nnx.merge(graphdef, params)
    rows = {k: v.reshape(-1, v.shape[-1]) for k, v in batch.items()}
    args = [rows["input_ids"], rows["attention_mask"], rows.get("token_type_ids")]
    if backbone is not None:
        return getattr(model, backbone)(*args, return_all_hidden=True)["hidden_states"]
    if "masked_positions" in rows:
        args.append(rows["masked_positions"])
    return model(*args)


def jit_forward(model_cfg, head: str, mesh: Mesh, hidden_states: bool = False):
    """The jitted ``forward(params, batch)`` of a run's model (outputs replicated, so every
    process reads them whole): what evaluate's probe, predict and plot call."""
    graphdef, _ = abstract_model(model_cfg, head)
    backbone = models.get(model_cfg.family).BACKBONE if hidden_states else None
    return jax.jit(
        functools.partial(forward, graphdef=graphdef, backbone=backbone),
        out_shardings=NamedSharding(mesh, PartitionSpec()),
    )


def compile_ahead(jobs: dict, threads: int | None = None) -> dict:
    """``{key: (jitted, args)}`` -> ``{key: jitted.lower(*args).compile()}``; lowering runs
    here, XLA compiles in parallel threads."""
    lowered = {key: fn.lower(*args) for key, (fn, args) in jobs.items()}
    threads = threads or max(1, min(len(lowered), os.cpu_count() or 1))
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        futures = {key: pool.submit(low.compile) for key, low in lowered.items()}
        return {key: future.result() for key, future in futures.items()}


def compile_lengths(train, evaluate, state, task, lengths, accum: int, rows: int, extra=()):
    """Train and eval steps compiled for every padded length ahead of the loop, each wrapped
    to dispatch on the batch's length (``task.batch_spec`` gives fields and dtypes; ``extra``:
    the train step's arguments after the batch)."""

    def shapes(micro: int, length: int) -> dict:
        return {
            k: jax.ShapeDtypeStruct((micro, rows, *[length][: len(shape)]), dtype)
            for k, (shape, dtype) in task.batch_spec().items()
        }

    jobs = {("train", n): (train, (state, shapes(accum, n), *extra)) for n in lengths}
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

    def __call__(self, first, batch: dict, *extra):
        return self.compiled.get(batch["input_ids"].shape[-1], self.fn)(first, batch, *extra)
