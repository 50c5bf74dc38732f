"""Knowledge distillation (``task="distill"``): the teacher, and the student's starting point.

The student (``model.*``, usually fewer layers) learns the teacher's task from
``alpha * T^2 * KL(teacher || student)`` at temperature ``T`` plus ``(1 - alpha)`` times the
task's hard-label loss (``losses.distill_sums``), per labelled row (classification) or masked
position (MLM). The teacher runs inside the same jitted train step, without dropout or
gradient. It is read from ``train.teacher`` at every start, so a resumed run needs it still
there; the checkpoint holds the student only, which exports like any model of its task.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import Any

import jax
import ml_collections
from flax import nnx

from ptft_jax import config, hf, sharding, steps, weights
from ptft_jax.data.sources import DataError
from ptft_jax.model import SHAPE_FIELDS

# The teacher is a pretrained model like any init_from: a workdir, hf:<folder> or a built-in.
Teacher = weights.Pretrained


def teacher_of(cfg: ml_collections.ConfigDict) -> Teacher:
    """The teacher named by ``train.teacher``."""
    return weights.resolve(cfg.train.teacher, cfg.allow_pytorch_bin, "train.teacher")


def student_config(cfg: ml_collections.ConfigDict, teacher: Teacher) -> ml_collections.ConfigDict:
    """``cfg`` with what the student must share with its teacher: the task, the tokenizer and
    vocabulary (both read the same ids), the label count; and, when it starts from teacher
    layers, the teacher's shape with only the layer count changed."""
    t = cfg.train
    if t.distill_task and t.distill_task != teacher.task:
        raise config.ConfigError(
            f"train.distill_task={t.distill_task!r} but the teacher {t.teacher} is a "
            f"{teacher.task!r} model; drop train.distill_task or use another teacher."
        )
    if t.distill_augment and teacher.task != "classification":
        raise config.ConfigError(
            "train.distill_augment makes variants of labelled texts, for a classification "
            f"teacher; {t.teacher} is a {teacher.task!r} model, so set it to 0."
        )
    if cfg.data.tokenizer and pathlib.Path(cfg.data.tokenizer) != teacher.tokenizer:
        raise config.ConfigError(
            "A student reads the teacher's token ids, so it uses the teacher's tokenizer; drop "
            "--config.data.tokenizer."
        )
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    cfg.train.distill_task = teacher.task
    cfg.data.tokenizer = str(teacher.tokenizer)
    cfg.model.vocab_size = teacher.model_cfg.vocab_size
    cfg.model.num_labels = teacher.model_cfg.num_labels
    layers = tuple(t.student_layers_from_teacher)
    if layers:
        if cfg.init_from:
            raise config.ConfigError(
                "Set either init_from or train.student_layers_from_teacher for the student, "
                "not both."
            )
        n = teacher.model_cfg.num_hidden_layers
        if sorted(set(layers)) != list(layers) or not all(0 <= i < n for i in layers):
            raise config.ConfigError(
                f"train.student_layers_from_teacher={layers} must list increasing teacher "
                f"layers between 0 and {n - 1}; fix it."
            )
        cfg.model.update(_shape(teacher.fields))
        cfg.model.num_hidden_layers = len(layers)
    return cfg


def student_source(teacher: Teacher, layers: tuple[int, ...]) -> weights.Pretrained:
    """The student's initial weights: the teacher's embeddings, pooler and heads, and its
    encoder layers ``layers`` renumbered 0, 1, ... (DistilBERT's initialisation)."""
    layers = tuple(layers)

    def tensors() -> dict:
        out = {}
        for name, value in teacher.tensors().items():
            m = re.match(r"(bert\.encoder\.layer\.)(\d+)(\..*)", name)
            if m is None:
                out[name] = value
            elif int(m[2]) in layers:
                out[f"{m[1]}{layers.index(int(m[2]))}{m[3]}"] = value
        return out

    fields = dict(_shape(teacher.fields), num_hidden_layers=len(layers))
    model_cfg = dataclasses.replace(teacher.model_cfg, num_hidden_layers=len(layers))
    return weights.Pretrained(teacher.task, model_cfg, fields, teacher.tokenizer, tensors)


def _shape(fields: dict) -> dict:
    """The teacher's fields a student taken from its layers must share (dropout is the
    student's own)."""
    return {k: v for k, v in fields.items() if k in (*SHAPE_FIELDS, "layer_norm_eps")}


@dataclasses.dataclass(frozen=True)
class Spec:
    """The static half of the teacher inside the train step (its parameters are an input)."""

    graphdef: Any
    task: str
    alpha: float
    temperature: float


def load_teacher(teacher: Teacher | None, cfg, mesh) -> tuple[Spec, dict] | None:
    """``(Spec, parameters placed on the mesh)``; stops when the teacher lacks its head.
    None without a teacher, and at ``distill_alpha=0``: the loss is then the hard-label loss
    alone, so the teacher does not run (the student may still start from its layers)."""
    if teacher is None or cfg.train.distill_alpha == 0:
        return None
    graphdef, abstract = steps.abstract_model(teacher.model_cfg, teacher.task)
    specs = sharding.param_specs(abstract, mesh)
    params, fresh = hf.load_params(teacher.tensors(), nnx.to_pure_dict(abstract))
    head = [p for p in fresh if not p.startswith("bert/")]
    if head:
        raise DataError(
            f"The teacher {cfg.train.teacher} has no trained {head[0].split('/')[0]} head; "
            f"fine-tune it on the task first (task={teacher.task})."
        )
    params = jax.device_put(params, sharding.named(mesh, specs))
    spec = Spec(graphdef, teacher.task, cfg.train.distill_alpha, cfg.train.distill_temperature)
    return spec, params
