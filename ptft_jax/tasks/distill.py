"""Knowledge distillation (``task="distill"``): it wraps the student's task (classification,
MLM or causal LM, the teacher's by default).

The student learns from ``alpha * T^2 * KL(teacher || student)`` at temperature ``T`` plus
``(1 - alpha)`` times its task's hard-label loss (``losses.distill_sums``), per labelled row
(classification), masked position (MLM) or next token (causal LM). The teacher runs inside
the same jitted train step, without dropout or gradient; its parameters are the step's third
argument. For
classification, ``train.distill_augment`` adds word-level variants of each training text (a
transfer set) that only the teacher labels. Data, evaluation, the best checkpoint, export and
predict are the student task's: the checkpoint holds the student alone.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
from flax import nnx

from ptft_jax import losses
from ptft_jax.data import augment, classify, sources
from ptft_jax.errors import ConfigError
from ptft_jax.tasks.base import Task, check_objectives
from ptft_jax.tasks.causal_lm import CausalLM
from ptft_jax.tasks.classification import Classification
from ptft_jax.tasks.mlm import MLM

STUDENT_TASKS = {"mlm": MLM, "classification": Classification, "causal_lm": CausalLM}


@dataclasses.dataclass(frozen=True)
class Distill:
    inner: Task
    alpha: float = 0.5
    temperature: float = 2.0
    augment: int = 0
    teacher: Any = None  # the teacher's graphdef (its parameters are an input of the step)

    name = "distill"
    uses_teacher = True
    sized_by_data = False  # the teacher fixes its student's head

    @classmethod
    def from_config(cls, cfg) -> Distill:
        t = cfg.train
        inner = STUDENT_TASKS[t.distill_task or "classification"].from_config(cfg)
        return cls(inner, t.distill_alpha, t.distill_temperature, t.distill_augment)

    @classmethod
    def check(cls, cfg) -> None:
        t = cfg.train
        if not t.teacher:
            raise ConfigError("task=distill needs a teacher; set --config.train.teacher.")
        if t.distill_task not in ("", *STUDENT_TASKS):
            raise ConfigError(
                f"train.distill_task={t.distill_task!r} is unknown; use 'classification', "
                "'mlm' or 'causal_lm' (or '' for the teacher's task)."
            )
        if t.distill_augment < 0 or (t.distill_augment and not t.distill_alpha):
            raise ConfigError(
                "train.distill_augment adds rows that only a teacher labels: use it with "
                "task=distill and distill_alpha > 0, as a count >= 0."
            )
        check_objectives(t, (("mlm",),))

    @staticmethod
    def check_teacher(cfg, teacher_task: str) -> None:
        """Stop when the teacher's task does not fit the config."""
        t = cfg.train
        if t.distill_task and t.distill_task != teacher_task:
            raise ConfigError(
                f"train.distill_task={t.distill_task!r} but the teacher {t.teacher} is a "
                f"{teacher_task!r} model; drop train.distill_task or use another teacher."
            )
        if t.distill_augment and teacher_task != Classification.name:
            raise ConfigError(
                "train.distill_augment makes variants of labelled texts, for a classification "
                f"teacher; {t.teacher} is a {teacher_task!r} model, so set it to 0."
            )

    def __getattr__(self, attr: str):
        # Everything not overridden here is the student task's.
        if attr.startswith("__") or attr == "inner":
            raise AttributeError(attr)
        return getattr(self.inner, attr)

    @property
    def model_task(self) -> str:
        return self.inner.name

    def with_teacher(self, graphdef) -> Distill:
        """This task with the teacher's module structure (None: the teacher does not run)."""
        return dataclasses.replace(self, teacher=graphdef)

    def data(self, cfg, get_tokenizer, layout, eval_layout, labels_file):
        extend = _with_transfer_set if self.augment else None
        if extend is None:
            return self.inner.data(cfg, get_tokenizer, layout, eval_layout, labels_file)
        return self.inner.data(cfg, get_tokenizer, layout, eval_layout, labels_file, extend)

    def loss_sums(self, model, mb: dict, rngs, frozen=None) -> dict:
        outputs, sums = self.inner.forward(model, mb, rngs)
        if self.teacher is None:  # distill_alpha=0: the hard-label loss alone
            return sums
        t_outputs = self.inner.teacher_outputs(nnx.merge(self.teacher, frozen), mb)
        weights = mb[self.inner.weight_field]
        return losses.distill_sums(outputs, t_outputs, sums, weights, self.alpha, self.temperature)

    def step_metrics(self, sums: dict, totals: dict) -> dict:
        out = self.inner.step_metrics(sums, totals)
        if self.teacher is not None:
            out["kd_loss"] = sums["kd_loss_sum"] / totals["weight"]
            out["hard_loss"] = sums["hard_loss_sum"] / totals["weight"]
        return out


def _with_transfer_set(cfg, train, examples, tokenizer, names) -> classify.Examples:
    """``examples`` followed by ``train.distill_augment`` variants of each training text
    (``augment.transfer_set``), which carry no hard label (label weight 0)."""
    d = cfg.data
    texts = [sources.text_of(r, d.text_field) for r in train]
    extra, source = augment.transfer_set(texts, cfg.train.distill_augment, cfg.train.seed)
    records = [{**train[i], d.text_field: t} for t, i in zip(extra, source, strict=True)]
    more = classify.encode(records, d, tokenizer, cfg.model.num_labels, names, "train")
    weights = np.concatenate([np.ones(len(examples)), np.zeros(len(more))]).astype(np.float32)
    return classify.Examples(
        ids=examples.ids + more.ids,
        type_ids=examples.type_ids + more.type_ids,
        labels=np.concatenate([examples.labels, more.labels]),
        label_weights=weights,
    )
