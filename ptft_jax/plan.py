"""A run's plan: its config checked against everything a user can get wrong (the config, the
teacher, ``init_from``, the workdir it resumes), its mesh and batch layout, its data built,
its optimizer and initialiser; nothing written, nothing compiled. ``train.py`` then writes the
workdir and trains.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib

import jax

from ptft_jax import (
    checkpoint,
    config,
    distributed,
    optim,
    recovery,
    sharding,
    steps,
    tasks,
    weights,
)
from ptft_jax.data import pipeline, store, tokenize
from ptft_jax.tasks.base import check_batch, trained_tokenizer_kind

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Plan:
    """A run checked and its data built, before anything is written or compiled."""

    cfg: object
    task: object
    model_cfg: object
    mesh: object
    layout: pipeline.BatchLayout
    eval_layout: pipeline.BatchLayout
    data: object  # tasks.base.TaskData
    data_iter: object
    per_epoch: int  # steps per epoch when the run counts epochs (their ends evaluate), else 0
    total_steps: int
    tx: object
    schedule: object
    init_fn: object
    resuming: bool
    pretrained: dict | None  # parameters from init_from (or teacher layers), fresh heads kept
    teacher: weights.Pretrained | None


def make(cfg, workdir: pathlib.Path, cli_model_keys=(), devices=None) -> Plan:
    """Check the config, the teacher, ``init_from`` and the workdir; build the data. The mesh
    spans ``devices`` (default: all devices)."""
    config.validate(cfg)
    resuming = checkpoint.has_checkpoint(workdir)
    saved = config.saved_config(workdir / "config.json") if resuming else None
    if saved is not None:  # first of all: whether the workdir holds another task's run
        config.check_same_task(saved, cfg)
    recovery.check_fresh_start(workdir, cfg.train.restart_from_scratch, resuming)
    distributed.preflight(cfg)
    reader = tasks.task_class(cfg.task)  # a distillation's student task checks when it reads
    if store.is_store(cfg.data.source) and getattr(reader, "store_blocks", None):
        folder = pathlib.Path(cfg.data.source).expanduser()  # before its tokenizer is checked
        store.check_blocks(cfg.data.source, store.read_manifest(folder), reader)
    if store.is_store(cfg.data.source) and not cfg.data.tokenizer:
        cfg = cfg.copy_and_resolve_references()  # a prepared folder brings its tokenizer
        cfg.data.tokenizer = str(pathlib.Path(cfg.data.source).expanduser() / "tokenizer")
    cfg, source, teacher = weights.starting_point(cfg, cli_model_keys)
    if saved is not None:
        changed = config.check_resume_compatible(saved, cfg)
        if changed:
            log.warning(
                "resuming with changed %s: the data order differs from the original run's",
                ", ".join(changed),
            )
    cfg, new_head = weights.classifier_labels(cfg, source, saved, cli_model_keys)
    task, model_cfg = tasks.get(cfg), config.model_config(cfg)
    if new_head:  # the training split's classes decide model.num_labels
        task = dataclasses.replace(task, count_labels=True)
    elif source is not None and source.task == task.head and hasattr(task, "label_names"):
        # a head trained before keeps its classes' order (a tagger's id2label)
        task = dataclasses.replace(task, label_names=tuple(source.label_names or ()))
    mesh = sharding.make_mesh(cfg.mesh, devices)
    accum = cfg.train.grad_accum_steps
    micro = cfg.train.batch_size // accum
    sharding.check_rows(mesh, micro)
    start, stop = sharding.process_rows(mesh, micro)
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    layout = pipeline.BatchLayout(accum, micro, start, stop, shards)
    eval_layout = layout.with_rows(micro, accum=1)

    # Data: records, tokenizer, the train dataset, the evaluation batches.
    vocab, kind = model_cfg.vocab_size, trained_tokenizer_kind(task, model_cfg.family)
    get_tokenizer = tokenize.factory(cfg.data, workdir, vocab, resuming, kind)
    labels = workdir / "labels.json" if resuming else None  # a dead attempt's are not this run's
    data = task.data(cfg, get_tokenizer, layout, eval_layout, labels)
    if getattr(data, "num_labels", cfg.model.num_labels) != cfg.model.num_labels:
        cfg = cfg.copy_and_resolve_references()  # a new classifier: the data's label count
        cfg.model.num_labels = data.num_labels
        task, model_cfg = tasks.get(cfg), config.model_config(cfg)
    cfg, model_cfg = _with_pad_id(cfg, model_cfg, data.tokenizer)
    if data.layout is not None:  # packed rows: the data decided how many a batch takes
        layout, eval_layout = data.layout, data.layout.with_rows(data.layout.micro, accum=1)
    if data.eval:  # the data keeps to the task's batch spec (what the steps are jitted for)
        first = data.eval[0]
        check_batch(task, first[0] if isinstance(first, tuple) else first)
    data_iter = pipeline.train_iterator(data.train, cfg.data.num_threads, cfg.data.prefetch)
    per_epoch = data.steps_per_epoch if cfg.train.epochs else 0  # then epoch ends evaluate too
    total_steps = cfg.train.epochs * per_epoch if per_epoch else cfg.train.steps
    tx, schedule = optim.make_optimizer(cfg.train, max(total_steps, 1), cfg.model.family)
    init_fn = steps.make_init_fn(model_cfg, task.head, tx, mesh, cfg.train.seed)
    if resuming:
        _check_state_fields(workdir, saved, cfg, task, mesh, total_steps, init_fn)
    pretrained = None
    if source is not None and not resuming:
        layers = tuple(cfg.train.student_layers_from_teacher)
        origin = cfg.init_from or f"layers {layers} of the teacher {cfg.train.teacher}"
        fresh = jax.eval_shape(init_fn)["params"]
        pretrained = weights.load_source(source, fresh, model_cfg.family, origin)
    return Plan(
        cfg, task, model_cfg, mesh, layout, eval_layout, data, data_iter, per_epoch,
        total_steps, tx, schedule, init_fn, resuming, pretrained, teacher,
    )  # fmt: skip


def _with_pad_id(cfg, model_cfg, tokenizer):
    """``(cfg, model_cfg)`` with the model's pad id resolved, for a family that numbers positions
    from it (RoBERTa): the tokenizer's unless a checkpoint or the config fixed it; and one
    sentence when rows do not fit the position table from there."""
    if not hasattr(model_cfg, "pad_token_id"):
        return cfg, model_cfg
    if model_cfg.pad_token_id < 0:
        cfg = cfg.copy_and_resolve_references()
        cfg.model.pad_token_id = tokenize.pad_id(tokenizer)
        model_cfg = config.model_config(cfg)
    need = cfg.data.max_seq_length + model_cfg.pad_token_id + 1
    if need > model_cfg.max_position_embeddings:
        raise config.ConfigError(
            f"model.family={model_cfg.family} numbers positions from pad_token_id + 1 = "
            f"{model_cfg.pad_token_id + 1}, so rows of data.max_seq_length="
            f"{cfg.data.max_seq_length} need model.max_position_embeddings >= {need} (it is "
            f"{model_cfg.max_position_embeddings}); raise it or shorten data.max_seq_length."
        )
    return cfg, model_cfg


def _check_state_fields(workdir: pathlib.Path, saved: dict, cfg, task, mesh, total_steps, init_fn):
    """Stop, before anything is restored, when the config makes a train state of another
    structure than the checkpoints hold (``max_grad_norm=0`` drops the clipping's state,
    ``freeze_*`` and ``trainable`` the frozen tensors' moments), naming each config field that
    does it with both values; the checkpoints are left as they are."""
    then = flat(saved)
    now = flat(json.loads(cfg.to_json_best_effort()))
    differ = [
        k
        for k in sorted(now)
        if k.split(".")[0] in ("model", "train") and then.get(k, now[k]) != now[k]
    ]
    if not differ:
        return

    def layout(values: dict):
        c = _with_values(cfg, values)
        tx, _ = optim.make_optimizer(c.train, max(total_steps, 1), c.model.family)
        fn = steps.make_init_fn(config.model_config(c), task.head, tx, mesh, c.train.seed)
        return recovery.layout_of(jax.eval_shape(fn))

    current = recovery.layout_of(jax.eval_shape(init_fn))
    if layout({k: then[k] for k in differ}) == current:
        return
    culprits = [k for k in differ if layout({k: then[k]}) != current] or differ
    saved = " and ".join(f"{k}={_shown(then[k])}" for k in culprits)
    says = " and ".join(_shown(now[k]) for k in culprits)
    fix = " ".join(f"--config.{k}={_shown(then[k])}" for k in culprits)
    raise config.ConfigError(
        f"The checkpoints in {workdir / 'checkpoints'} were saved with {saved}, which shapes "
        f"the train state they hold, but the config says {says}; resume with {fix}, or use a "
        "new --workdir to train with the new setting."
    )


def flat(tree: dict, prefix: str = "") -> dict:
    """``{"train.max_grad_norm": 1.0, ...}`` of a nested config dict (``cfg.to_json`` read)."""
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out |= flat(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = value
    return out


def _with_values(cfg, values: dict):
    """A copy of ``cfg`` with the dotted keys of ``values`` set (JSON lists back to tuples)."""
    c = cfg.copy_and_resolve_references()
    for key, value in values.items():
        group, name = key.rsplit(".", 1)
        node = c
        for part in group.split("."):
            node = node[part]
        try:
            node[name] = tuple(value) if isinstance(node[name], tuple) else value
        except (TypeError, ValueError):  # a value of another type: it stays as it is
            continue
    return c


def _shown(value) -> str:
    """A config value as it is written on the command line."""
    return repr(tuple(value)) if isinstance(value, list) else str(value)
