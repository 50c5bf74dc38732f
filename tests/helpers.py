"""Shared test builders: a fixed tiny MLM batch, sharded state on any mesh, and the parameter
trees of abstract NNX models (for the families' parity tests)."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from ptft_jax import optim, sharding, steps
from ptft_jax.config import base_config
from ptft_jax.tasks.mlm import MLM


def train_cfg(**kw) -> ml_collections.ConfigDict:
    t = base_config().train
    t.update({"learning_rate": 1e-3, "warmup_steps": 2, "steps": 10, **kw})
    return t


def mlm_batch(model_cfg, accum=1, rows=16, length=24, k=4, seed=0) -> dict:
    """A fixed random MLM batch ``[accum, rows, ...]`` with some padding."""
    rng = np.random.default_rng(seed)
    shape = (accum, rows, length)
    lengths = rng.integers(length // 2, length + 1, (accum, rows))
    mask = (np.arange(length) < lengths[..., None]).astype(np.int32)
    pos = np.sort(rng.integers(1, length // 2, (accum, rows, k)), axis=-1).astype(np.int32)
    return {
        "input_ids": rng.integers(5, model_cfg.vocab_size, shape).astype(np.int32) * mask,
        "attention_mask": mask,
        "token_type_ids": np.zeros(shape, np.int32),
        "masked_positions": pos,
        "masked_ids": rng.integers(5, model_cfg.vocab_size, (accum, rows, k)).astype(np.int32),
        "masked_weights": (rng.random((accum, rows, k)) < 0.8).astype(np.float32),
    }


def mlm_task(batch) -> MLM:
    """The MLM task whose batch spec ``batch`` (``[A, B, ...]``) fits."""
    length, k = batch["input_ids"].shape[-1], batch["masked_ids"].shape[-1]
    return MLM(seq_len=length, max_predictions=k, nsp="next_sentence_label" in batch)


def run_steps(model_cfg, mesh_cfg, batch, n=2, devices=None, seed=0, tcfg=None):
    """``n`` jitted train steps on a mesh; returns (host params, list of host metrics)."""
    mesh = sharding.make_mesh(mesh_cfg, devices)
    tx, schedule = optim.make_optimizer(tcfg or train_cfg(), 10)
    with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.LOGICAL_RULES):
        state = steps.make_init_fn(model_cfg, "mlm", tx, mesh, seed)()
        train, _, _ = steps.jit_steps(model_cfg, mlm_task(batch), tx, schedule, mesh, seed)
        gb = sharding.to_global(batch, mesh, batch["input_ids"].shape[1])
        history = []
        for _ in range(n):
            state, m = train(state, gb)
            history.append(jax.device_get(m))
        return jax.device_get(state["params"]), history


def fresh_tree(abstract: nnx.Module) -> dict:
    """The parameter tree of an abstract model (``nnx.eval_shape``), as shapes."""
    return nnx.to_pure_dict(nnx.state(abstract))


def built_model(abstract: nnx.Module, params: dict) -> nnx.Module:
    """The model ``abstract`` describes, holding ``params``."""
    graphdef, state = nnx.split(abstract)
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
    return nnx.merge(graphdef, state)


def random_like(tree: dict, seed: int) -> dict:
    """``tree`` with every leaf ~ normal(0, 0.5), as host arrays."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: rng.normal(0.0, 0.5, x.shape).astype(np.float32), tree)
