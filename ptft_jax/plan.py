"""A run's plan: its config checked against everything a user can get wrong (the config, the
teacher, ``init_from``, the workdir it resumes), its mesh and batch layout, its data built,
its optimizer and initialiser; nothing written, nothing compiled. ``train.py`` then writes the
workdir and trains.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib

import jax

from ptft_jax import checkpoint, config, distributed, optim, sharding, steps, tasks, weights
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


def make(cfg, workdir: pathlib.Path, cli_model_keys=()) -> Plan:
    """Check the config, the teacher, ``init_from`` and the workdir; build the data."""
    config.validate(cfg)
    distributed.preflight(cfg)
    reader = tasks.task_class(cfg.task)  # a distillation's student task checks when it reads
    if store.is_store(cfg.data.source) and getattr(reader, "store_blocks", None):
        folder = pathlib.Path(cfg.data.source).expanduser()  # before its tokenizer is checked
        store.check_blocks(cfg.data.source, store.read_manifest(folder), reader)
    if store.is_store(cfg.data.source) and not cfg.data.tokenizer:
        cfg = cfg.copy_and_resolve_references()  # a prepared folder brings its tokenizer
        cfg.data.tokenizer = str(pathlib.Path(cfg.data.source).expanduser() / "tokenizer")
    cfg, source, teacher = weights.starting_point(cfg, cli_model_keys)
    resuming = checkpoint.has_checkpoint(workdir)
    if resuming:
        changed = config.check_resume_compatible(workdir / "config.json", cfg)
        if changed:
            log.warning(
                "resuming with changed %s: the data order differs from the original run's",
                ", ".join(changed),
            )
    task, model_cfg = tasks.get(cfg), config.model_config(cfg)
    mesh = sharding.make_mesh(cfg.mesh)
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
    data = task.data(cfg, get_tokenizer, layout, eval_layout, workdir / "labels.json")
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
