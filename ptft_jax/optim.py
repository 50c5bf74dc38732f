"""The optax optimizer: schedule, AdamW with a decay mask, global-norm clipping."""

from __future__ import annotations

import re

import jax
import optax

from ptft_jax import models


def path_str(path) -> str:
    """'bert/encoder/layer/0/attention/self/query/kernel' for a tree path."""
    return "/".join(str(getattr(k, "key", getattr(k, "idx", k))) for k in path)


def decay_mask(params):
    """True for parameters that receive weight decay: matrices and tables, not the biases and
    norm scales (BERT's recipe, and the Trainer's for every family: its names of them all
    hold 1-D tensors, ours too)."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def trainable_mask(params, train_cfg, family: str):
    """True for parameters that train; ``train.trainable``/``freeze_*`` freeze the rest
    (``family``: whose names say which tensors are the embeddings and which layer is which)."""
    patterns = train_cfg.get("trainable", ())
    if isinstance(patterns, str):
        patterns = [p for p in patterns.split(",") if p]
    regexes = [re.compile(p) for p in patterns]
    family = models.get(family)
    frozen_layers = train_cfg.get("freeze_layers", 0)

    def trains(path, _):
        name = path_str(path)
        if regexes and not any(r.search(name) for r in regexes):
            return False
        hf_name = name.replace("/", ".")
        if train_cfg.get("freeze_embeddings", False) and hf_name.startswith(family.EMBEDDINGS):
            return False
        layer = family.LAYER_NAME.match(hf_name)
        return layer is None or int(layer[2]) >= frozen_layers

    return jax.tree_util.tree_map_with_path(trains, params)


def learning_rate_schedule(train_cfg, total_steps: int) -> optax.Schedule:
    """Linear warmup to ``learning_rate`` over ``warmup_steps``, then linear decay to zero."""
    peak = float(train_cfg.learning_rate)
    warmup = int(train_cfg.warmup_steps)
    if train_cfg.get("warmup_ratio", 0.0):
        warmup = int(round(train_cfg.warmup_ratio * total_steps))
    warmup = min(warmup, total_steps)
    return optax.join_schedules(
        [
            optax.linear_schedule(0.0, peak, max(warmup, 1)),
            optax.linear_schedule(peak, 0.0, max(total_steps - warmup, 1)),
        ],
        boundaries=[warmup],
    )


def make_optimizer(
    train_cfg, total_steps: int, family: str = "bert"
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """AdamW (float32 moments) with clipping; gradient accumulation happens in the train step.
    ``family``: the model's (``model.family``), whose parameter names ``freeze_*`` read."""
    schedule = learning_rate_schedule(train_cfg, total_steps)
    chain = []
    if train_cfg.max_grad_norm and train_cfg.max_grad_norm > 0:
        chain.append(optax.clip_by_global_norm(float(train_cfg.max_grad_norm)))
    chain.append(
        optax.adamw(
            schedule,
            b1=float(train_cfg.adam_b1),
            b2=float(train_cfg.adam_b2),
            eps=float(train_cfg.adam_eps),
            weight_decay=float(train_cfg.weight_decay),
            mask=decay_mask,
        )
    )
    tx = optax.chain(*chain)
    if (
        train_cfg.get("trainable")
        or train_cfg.get("freeze_embeddings")
        or train_cfg.get("freeze_layers")
    ):
        # Frozen parameters get zero updates and carry no optimizer state at all.
        tx = optax.multi_transform(
            {"train": tx, "frozen": optax.set_to_zero()},
            lambda params: jax.tree.map(
                lambda t: "train" if t else "frozen", trainable_mask(params, train_cfg, family)
            ),
        )
    return tx, schedule
