"""Tasks: one file each, registered below, selected by ``task`` (see ``base.py`` for what a
task provides). Task modules load on first use, so a run imports only its own task's data
stack (the benchmark builds MLM steps without one)."""

from __future__ import annotations

import importlib

from ptft_jax.errors import ConfigError

REGISTRY = {
    "mlm": "ptft_jax.tasks.mlm:MLM",
    "classification": "ptft_jax.tasks.classification:Classification",
    "contrastive": "ptft_jax.tasks.contrastive:Contrastive",
    "distill": "ptft_jax.tasks.distill:Distill",
    "causal_lm": "ptft_jax.tasks.causal_lm:CausalLM",
    "token_classification": "ptft_jax.tasks.token_classification:TokenClassification",
    "question_answering": "ptft_jax.tasks.question_answering:QuestionAnswering",
}


def task_class(name: str):
    """The class of task ``name``; one sentence naming the choices when there is none."""
    if name not in REGISTRY:
        raise ConfigError(
            f"task={name!r} is not supported; set --config.task to one of {tuple(REGISTRY)}."
        )
    module, _, attr = REGISTRY[name].partition(":")
    return getattr(importlib.import_module(module), attr)


def get(cfg):
    """The task a config trains, configured from it."""
    return task_class(cfg.task).from_config(cfg)
