"""What every task provides, and the host-side pieces tasks share.

A task is one frozen dataclass (hashable: the jitted steps take it as a static argument) built
from the config by ``from_config``. It owns:

  ``check(cfg)``             config checks of its keys, before anything is built (classmethod)
  ``name``, ``head``         its ``task`` value; the model head it trains (``models.*.HEADS``)
  ``accuracy``               the name of its accuracy metric (train rows, the summary line)
  ``weight_field``           the batch field that weighs each loss term
  ``model_options()``        model config fields the task decides (pooler, NSP head)
  ``batch_spec()``           ``{field: (shape after [accum, rows], dtype)}``: the one description
                             of its batches (data builds them, aot and bench fake them)
  ``data(...)``              tokenizer, train dataset, evaluation batches (``TaskData``)
  ``split_data(...)``        one split's evaluation batches for ``python -m ptft_jax.evaluate``
  ``forward(model, mb, rngs)`` ``(outputs, loss sums)`` of a microbatch (outputs: what a
                             distillation teacher's are compared with)
  ``teacher_outputs(model, mb)`` the same outputs from a frozen teacher
  ``totals(batch)``, ``loss(sums, totals)``, ``step_metrics(sums, totals)``
                             the loss and train metrics from sums over the global batch
                             (default: ``loss_sum`` and ``correct_sum`` over the weight)
  ``eval_outputs(model, mb)`` what the jitted eval step returns (sums, or logits)
  ``evaluate(ctx, params, ...)`` host metrics over a split (``EvalContext``)
  ``best_metric()``          the metric that picks the best checkpoint (None: keep the latest)
  ``labelled``               whether exports carry its label names (``id2label``)
  ``sized_by_data``          a new head of it takes its size from the training split (the
                             classifier's label count; not a distillation, whose teacher's)
  ``tokenizer_kind``         the tokenizer trained when none is given (``data/vocab.py``);
                             ``wordpiece``: the model family's (``trained_tokenizer_kind``)
  ``store_blocks``           the records it reads from a prepared folder (``data/store.py``;
                             None: it trains from source text only)
  ``predict(run, ...)``      the rows ``python -m ptft_jax.predict`` prints
  ``model_task``             the task whose model it trains (a distillation's student task)
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from ptft_jax import models, sharding
from ptft_jax.errors import ConfigError, DataError


@dataclasses.dataclass
class TaskData:
    """Host-side data of one run."""

    tokenizer: object
    train: object  # Grain MapDataset; element b = this process's part of global batch b
    eval: list  # batches; for tasks with per-example outputs, (batch, global example ids)
    steps_per_epoch: int = 0  # 0: no epochs (MLM streams packed blocks)
    test: list | None = None
    eval_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    label_names: list[str] | None = None
    lengths: tuple[int, ...] = ()  # padded lengths (buckets) batches take; () = one shape
    summary: str = ""
    probe: dict | None = None  # contrastive: labelled train/test Rows for the linear probe
    layout: object = None  # packed rows: the train batches' layout when not one example a row


@dataclasses.dataclass
class EvalContext:
    """What evaluating a split needs: the jitted eval step, the run's data and mesh, the rows
    of a batch, and (for the probe) the jitted forward pass and the batch layout."""

    eval_step: object
    data: TaskData
    mesh: object
    rows: int
    forward: object = None
    layout: object = None


class Task:
    """Defaults shared by tasks; see the module docstring for the interface."""

    labelled = False
    sized_by_data = False  # a new head takes its size from the training split (plan.make)
    tokenizer_kind = "wordpiece"  # what data.tokenizer='' trains (wordpiece: the family's)
    store_blocks = None  # what python -m ptft_jax.prepare packs for it: mlm, next_token
    uses_teacher = False  # distillation: train.teacher runs inside the train step
    objectives = (("mlm",),)  # the train.objectives it takes

    @property
    def model_task(self) -> str:
        return self.name

    @classmethod
    def check(cls, cfg) -> None:
        t = cfg.train
        check_objectives(t, cls.objectives)
        if t.distill_augment:
            raise ConfigError(
                "train.distill_augment adds rows that only a teacher labels: use it with "
                "task=distill and distill_alpha > 0, as a count >= 0."
            )

    def totals(self, batch: dict) -> dict:
        """The denominators over the whole global batch: its weight (at least 1)."""
        return {"weight": jnp.maximum(jnp.sum(batch[self.weight_field]), 1.0)}

    def loss(self, sums: dict, totals: dict):
        return sums["loss_sum"] / totals["weight"]

    def step_metrics(self, sums: dict, totals: dict) -> dict:
        return {self.accuracy: sums["correct_sum"] / totals["weight"]}

    def token_counts(self, batch: dict) -> tuple[int, int]:
        """Real tokens and computed positions of a host batch."""
        real = batch["attention_mask"] > 0
        if "cls_positions" in batch:  # packed: an empty row's one attended position is padding
            real &= (batch[self.weight_field].sum(-1) > 0)[..., None]
        return int(real.sum()), batch["input_ids"].size

    def loss_sums(self, model, mb: dict, rngs, frozen=None) -> dict:
        """Summed loss statistics of a microbatch (``frozen``: a distillation's teacher)."""
        return self.forward(model, mb, rngs)[1]

    def model_options(self) -> dict:
        return {"add_pooling_layer": False, "next_sentence": False}

    def best_metric(self) -> str | None:
        return None

    def teacher_outputs(self, model, mb):
        raise ConfigError(
            f"task={self.name} cannot be distilled; distill mlm, causal_lm or classification."
        )

    def split_data(self, cfg, tokenizer, layout, split: str, labels_file) -> TaskData:
        raise ConfigError(f"A {self.name} run has no evaluation split to score on its own.")

    def predict(self, run, texts, pairs, top_k: int, forward) -> list[dict]:
        raise ConfigError(f"A {self.name} run predicts nothing; export it for its embeddings.")


def check_best_metric(cfg, allowed: tuple[str, ...], what: str) -> None:
    """``train.metric_for_best`` must be empty or one of the task's metrics ``allowed``."""
    best = cfg.train.metric_for_best
    if best and best not in allowed:
        raise ConfigError(
            f"train.metric_for_best={best!r} is not a {what} metric; use one of "
            f"{', '.join(allowed)}."
        )


def split_from_data(task, cfg, tokenizer, layout, split: str, labels_file) -> TaskData:
    """``split_data`` of a task whose ``data`` holds every evaluation split: all of it, with
    the run's ``tokenizer``; one sentence when the source lacks ``split``."""
    data = task.data(cfg, lambda _: tokenizer, layout, layout, labels_file)
    if (data.eval if split == "validation" else data.test) is None:
        raise DataError(
            f"data.source {cfg.data.source!r} has no {split} split; use another --split."
        )
    return data


def trained_tokenizer_kind(task, family: str) -> str:
    """The kind of tokenizer (a key of ``data.tokenize.TRAINERS``) that ``data.tokenizer=''``
    trains for ``task`` (a task or its class) on a model of ``family``: the task's when it needs
    its own (a causal LM: GPT-2's byte-level BPE), else the family's ``TOKENIZER`` (RoBERTa's,
    ModernBERT's, GPT-2's byte-level BPE), else BERT's WordPiece."""
    if task.tokenizer_kind != Task.tokenizer_kind:
        return task.tokenizer_kind
    return getattr(models.get(family), "TOKENIZER", Task.tokenizer_kind)


def check_objectives(train_cfg, allowed) -> None:
    """``train.objectives`` must be one of ``allowed`` (NSP is an option of task=mlm)."""
    if tuple(train_cfg.objectives) not in allowed:
        raise ConfigError(
            f"train.objectives={tuple(train_cfg.objectives)} is not supported; use ('mlm',) or "
            "('mlm', 'nsp') with task=mlm."
        )


def inputs(mb: dict) -> tuple:
    """The encoder's inputs of a microbatch: ids, mask, segment ids."""
    return mb["input_ids"], mb["attention_mask"], mb["token_type_ids"]


def packed(mb: dict) -> dict:
    """The model's keyword inputs of packed rows (nothing for one example a row)."""
    if "position_ids" not in mb:
        return {}
    return {"position_ids_BxL": mb["position_ids"], "cls_positions_BxK": mb["cls_positions"]}


def summed(eval_step, params, batches, mesh, rows: int) -> dict:
    """The eval step's sums added over every batch, on the host."""
    totals = None
    for batch in batches:
        sums = eval_step(params, sharding.to_global(batch, mesh, rows))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    return jax.device_get(totals)


def per_example(eval_step, params, batches, mesh, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """``(outputs [N, ...], example ids [N])`` of every real example of the split."""
    outs, ids = [], []
    for batch, idx in batches:
        out = np.asarray(jax.device_get(eval_step(params, sharding.to_global(batch, mesh, rows))))
        keep = idx >= 0
        outs.append(out[keep])
        ids.append(idx[keep])
    return np.concatenate(outs), np.concatenate(ids)


def check_batch(task, batch: dict) -> None:
    """Stop when a batch built by the task's data differs from its ``batch_spec``: other
    fields, dtypes, or row shapes (a bucketed length may be shorter than the spec's)."""
    spec = task.batch_spec()
    got = {k: (tuple(v.shape[2:]), v.dtype) for k, v in batch.items()}
    fits = got.keys() == spec.keys() and all(
        dtype == spec[k][1] and len(shape) == len(spec[k][0])
        and all(a <= b for a, b in zip(shape, spec[k][0], strict=True))
        for k, (shape, dtype) in got.items()
    )  # fmt: skip
    if not fits:
        raise AssertionError(f"task {task.name}: its data made a batch {got}, its spec is {spec}")


def spec_of(fields: dict) -> dict:
    """``{name: (shape, dtype)}`` with dtypes as numpy dtypes."""
    return {k: (tuple(shape), np.dtype(dtype)) for k, (shape, dtype) in fields.items()}
