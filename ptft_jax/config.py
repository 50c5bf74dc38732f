"""The checks a config gets before anything is built, and the run's saved config.

Config files in ``configs/`` start from ``base_config()`` (every key with its default:
``defaults.py``, imported here) and change what they need, so a key that is not there is a
typo, and ``validate`` says so in one sentence.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import pathlib
import re

import ml_collections

from ptft_jax import models, ops, tasks
from ptft_jax.data import segment, store
from ptft_jax.defaults import base_config  # the keys; configs import it from here
from ptft_jax.errors import ConfigError


def unknown_override(argv: list[str]) -> str | None:
    """The first ``--config.KEY=VALUE`` argument whose KEY does not exist, if any."""
    ref = base_config()
    for arg in argv:
        if not arg.startswith("--config."):
            continue
        node = ref
        for part in arg[len("--config.") :].split("=", 1)[0].split("."):
            if not isinstance(node, ml_collections.ConfigDict) or part not in node:
                return arg.split("=", 1)[0][len("--config.") :]
            node = node[part]
    return None


def flag_problem(argv: list[str], error: Exception | None = None) -> str | None:
    """One sentence for a command line absl rejects (or would run with an unknown key)."""
    bad = unknown_override(argv)
    if bad:
        return f"unknown config key {bad!r}; check its spelling against ptft_jax/defaults.py."
    if error is None:
        return None
    m = re.match(r"flag --config\.([\w.]+)=(.*?): ", str(error))
    if m is None:
        return str(error)
    key, value = m.groups()
    default = base_config()
    for part in key.split("."):
        default = default[part]
    kind = {bool: "True or False", int: "an integer", float: "a number", str: "text"}.get(
        type(default), type(default).__name__
    )
    return f"--config.{key}={value} is not {kind}; pass {kind} (the default is {default!r})."


def given_keys(argv: list[str]) -> list[str]:
    """The config keys set on a command line (``--config.train.steps=5``: ``train.steps``)."""
    return [a.split("=", 1)[0].removeprefix("--config.") for a in argv if a.startswith("--config.")]


def command_line_wins(cfg, argv: list[str]):
    """``cfg`` where a value given on the command line (``argv``) would otherwise be dropped
    without a word: ``--config.train.steps`` replaces the config file's ``train.epochs`` (which
    wins over steps); given both, or ``--config.data.max_documents`` for a prepared folder
    (which it cannot cap), the run stops with one sentence."""
    given = set(given_keys(argv))
    t, d = cfg.train, cfg.data
    if "train.steps" in given and t.epochs > 0:
        if "train.epochs" in given:
            raise ConfigError(
                f"--config.train.steps={t.steps} and --config.train.epochs={t.epochs} both set "
                "the run's length (epochs win); pass only one of them."
            )
        msg = "train.steps=%d from the command line replaces the config's train.epochs=%d"
        logging.getLogger(__name__).info(msg, t.steps, t.epochs)
        t.epochs = 0
    if "data.max_documents" in given and d.max_documents and store.is_store(d.source):
        raise ConfigError(
            f"--config.data.max_documents={d.max_documents} cannot cap the prepared folder "
            f"{d.source} (it trains on all of its blocks); drop it, or prepare a smaller corpus."
        )
    return cfg


def _unknown_keys(cfg, ref, prefix="") -> list[str]:
    out = []
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if key not in ref:
            out.append(name)
        elif isinstance(value, ml_collections.ConfigDict):
            out += _unknown_keys(value, ref[key], name + ".")
    return out


def validate(cfg: ml_collections.ConfigDict) -> None:
    """Raise ConfigError for the first problem a user can fix in the config."""
    unknown = _unknown_keys(cfg, base_config())
    if unknown:
        raise ConfigError(
            f"Unknown config key {unknown[0]!r}; check its spelling against ptft_jax/defaults.py."
        )
    tasks.task_class(cfg.task)  # one sentence naming the tasks when it is none of them
    m, d, t = cfg.model, cfg.data, cfg.train
    _check_numbers(t)  # optimizer and loss numbers, distill_alpha and temperatures too
    tasks.task_class(cfg.task).check(cfg)
    _check_model(m, d)
    _check_head(cfg)
    model_config(cfg)  # the family's own checks (ModernBERT: its layer types, activations)
    if (
        cfg.init_from
        and not cfg.init_from.startswith(("hf:", "builtin:"))
        and not is_workdir(cfg.init_from)
    ):
        raise ConfigError(
            f"init_from={cfg.init_from!r} is not supported; use hf:<folder or hub id>, "
            "builtin:minilm_l6, a ptft_jax workdir (with config.json and checkpoints), or "
            "leave it empty for random initialisation."
        )
    minimum = {"steps": 0, "stop_at_step": 0, "seed": 0, "eval_batches": 0}
    for key in (
        "steps",
        "stop_at_step",
        "seed",
        "eval_batches",
        "batch_size",
        "grad_accum_steps",
        "log_every",
        "eval_every",
        "checkpoint_every",
        "keep_checkpoints",
    ):
        low = minimum.get(key, 1)
        if t[key] < low:
            raise ConfigError(
                f"train.{key}={t[key]} must be at least {low}; fix --config.train.{key}."
            )
    if d.max_predictions_per_seq < 1 or d.num_threads < 0 or d.prefetch < 1:
        raise ConfigError(
            "data.max_predictions_per_seq and data.prefetch must be at least 1 and "
            "data.num_threads at least 0; fix them."
        )
    if t.on_nonfinite not in ("stop", "skip"):
        raise ConfigError(
            f"train.on_nonfinite={t.on_nonfinite!r} is unknown; use 'stop' or 'skip'."
        )
    if not 1 <= d.length_buckets <= 64:
        raise ConfigError(
            f"data.length_buckets={d.length_buckets} must be between 1 and 64; 4 to 8 pads "
            "little and compiles few steps."
        )
    if not 0.0 < d.eval_fraction < 1.0:
        raise ConfigError(f"data.eval_fraction={d.eval_fraction} must be between 0 and 1.")
    if t.batch_size % t.grad_accum_steps:
        raise ConfigError(
            f"train.batch_size={t.batch_size} is not divisible by train.grad_accum_steps="
            f"{t.grad_accum_steps}; make the batch a multiple of the accumulation steps."
        )
    if d.vocab_characters not in ("", "gb2312"):
        raise ConfigError(
            f"data.vocab_characters={d.vocab_characters!r} is unknown; use 'gb2312' (every "
            "character of GB 2312 in a trained WordPiece) or ''."
        )
    if not 0.0 < d.mlm_probability < 1.0:
        raise ConfigError("data.mlm_probability must be between 0 and 1; the BERT value is 0.15.")
    segment.check(d)


def _check_head(cfg) -> None:
    """The family must have the head the task trains (a GPT has no MLM head, BERT no causal
    one); ``init_from`` may have brought the family."""
    head, family = tasks.get(cfg).head, cfg.model.family
    heads = ", ".join(models.get(family).HEADS)
    if head not in models.get(family).HEADS:
        which, other = f"model.family={family!r}", "another model.family"
        if cfg.init_from:
            which, other = (
                f"init_from={cfg.init_from} is a {family!r} model, which",
                "another init_from",
            )
        raise ConfigError(
            f"{which} has no {head!r} head for task={cfg.task} (its heads: {heads}); use a task "
            f"it has or {other}."
        )


def _check_model(m, d) -> None:
    """The model's family, shape and numerics, and the sequence length it must hold."""
    models.get(m.family)  # one sentence naming the families when it is none of them
    if m.hidden_size % m.num_attention_heads:
        raise ConfigError(
            f"model.hidden_size={m.hidden_size} is not divisible by model.num_attention_heads="
            f"{m.num_attention_heads}; change one of them."
        )
    if d.max_seq_length > m.max_position_embeddings:
        raise ConfigError(
            f"data.max_seq_length={d.max_seq_length} exceeds model.max_position_embeddings="
            f"{m.max_position_embeddings}; lower data.max_seq_length or raise the model's limit."
        )
    if d.max_seq_length < 8:
        raise ConfigError(f"data.max_seq_length={d.max_seq_length} is too short; use 8 or more.")
    if m.dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"model.dtype={m.dtype!r} is unknown; use 'float32' or 'bfloat16'.")
    if m.remat_policy not in ops.REMAT_POLICIES:
        raise ConfigError(f"model.remat_policy={m.remat_policy!r} is unknown; use full or dots.")
    if m.attention not in ("auto", "xla", "cudnn"):
        raise ConfigError(f"model.attention={m.attention!r} is unknown; use auto, xla or cudnn.")
    if m.attention == "cudnn" and not ops.cudnn_fits(
        m.dtype, m.hidden_size // m.num_attention_heads
    ):
        raise ConfigError(
            "model.attention='cudnn' needs model.dtype='bfloat16' (or float16) and a head size "
            "that is a multiple of 8 up to 128; use model.attention='auto' to fall back to XLA."
        )


# Optimizer and loss numbers: each must be finite and inside its range.
NUMBERS = {
    "learning_rate": ("at least 0", lambda v: v >= 0),
    "weight_decay": ("at least 0", lambda v: v >= 0),
    "max_grad_norm": ("at least 0 (0: no clipping)", lambda v: v >= 0),
    "adam_b1": ("in [0, 1)", lambda v: 0 <= v < 1),
    "adam_b2": ("in [0, 1)", lambda v: 0 <= v < 1),
    # Above 0: a parameter whose gradient has always been 0 would otherwise update by 0/0.
    "adam_eps": ("above 0 (BERT's is 1e-6)", lambda v: v > 0),
    "warmup_ratio": ("in [0, 1]", lambda v: 0 <= v <= 1),
    "distill_alpha": ("in [0, 1]", lambda v: 0 <= v <= 1),
    "distill_temperature": ("above 0", lambda v: v > 0),
    "temperature": ("above 0", lambda v: v > 0),
}


def _check_numbers(t) -> None:
    """A NaN, infinite or negative learning rate (and the like) would otherwise train uphill
    or into NaN without a word."""
    for key, (rule, ok) in NUMBERS.items():
        value = t[key]
        if isinstance(value, bool) or not math.isfinite(value) or not ok(value):
            raise ConfigError(
                f"train.{key}={value} must be a finite number {rule}; fix --config.train.{key}."
            )


def is_workdir(path: str | pathlib.Path) -> bool:
    """Whether ``path`` (or ``path@STEP``) is a ptft_jax workdir with a config and at least one
    checkpoint."""
    path = pathlib.Path(workdir_spec(str(path))[0]).expanduser()
    return (path / "config.json").is_file() and (path / "checkpoints").is_dir()


def workdir_spec(spec: str) -> tuple[str, str | None]:
    """``(workdir, checkpoint)`` of ``W@STEP`` (``W@best``, ``W@last``: which checkpoint of W
    to start from; ``checkpoint`` None for a plain ``W``, whose best or else last is meant)."""
    path, at, which = spec.rpartition("@")
    if at and which and (which.isdigit() or which in ("best", "last")) and path:
        return path, which
    return spec, None


def apply_checkpoint_model(
    cfg: ml_collections.ConfigDict, fields: dict, tokenizer, cli_keys=()
) -> ml_collections.ConfigDict:
    """A copy of ``cfg`` whose model shape is the checkpoint's; command-line ``model.*`` values
    that contradict it stop the run, except dropout rates, which are a training choice (a
    classifier fine-tuned with dropout from a run pretrained without), and the classifier
    head's options (``classifier_*``: ModernBERT's pooling and activation), which shape no
    weight and describe a head fine-tuning usually starts fresh. Its tokenizer defaults to the
    checkpoint's (``tokenizer``)."""
    chosen = {}
    for key in cli_keys:
        if key in fields and cfg.model[key] != fields[key]:
            if "dropout" in key or key.startswith("classifier_"):
                chosen[key] = cfg.model[key]
                continue
            raise ConfigError(
                f"--config.model.{key}={cfg.model[key]} contradicts init_from={cfg.init_from} "
                f"({key}={fields[key]}); drop the override or use another init_from."
            )
    cfg = ml_collections.ConfigDict(cfg.to_dict())
    cfg.model.update(fields)
    cfg.model.update(chosen)
    if not cfg.data.tokenizer:
        cfg.data.tokenizer = str(tokenizer)
    return cfg


def model_config(cfg: ml_collections.ConfigDict):
    """The frozen model description, built once from ``config.model`` and what the task
    decides (the pooler, the NSP head)."""
    family = models.get(cfg.model.get("family", "bert"))
    known = {f.name for f in dataclasses.fields(family.CONFIG)}
    # config.model holds every family's keys (BERT's defaults); a family takes its own
    fields = {k: v for k, v in cfg.model.to_dict().items() if k in known}
    options = {k: v for k, v in tasks.get(cfg).model_options().items() if k in known}
    return family.CONFIG(**fields, **options)


def save(cfg: ml_collections.ConfigDict, path: pathlib.Path) -> None:
    """Write the resolved config as JSON, atomically (readers never see half a file)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(cfg.to_json_best_effort(indent=2) + "\n")
    os.replace(tmp, path)


DATA_KEYS = (
    "data.source",
    "data.max_documents",
    "data.eval_fraction",
    "data.max_seq_length",
    "data.max_predictions_per_seq",
    "data.mlm_probability",
    "data.whole_word_masking",
    "data.word_segmenter",
    "data.length_buckets",
    "train.batch_size",
    "train.seed",
)


def saved_config(path: pathlib.Path) -> dict:
    """The resolved config a workdir's run started with (``W/config.json``)."""
    try:
        saved = json.loads(path.read_text())
        if not isinstance(saved["task"], str) or not isinstance(saved["model"], dict):
            raise TypeError(path)
    except (OSError, ValueError, KeyError, TypeError):
        raise ConfigError(
            f"The workdir has checkpoints but {path} is missing or unreadable; use a new "
            "--workdir, or restore that file."
        ) from None
    return saved


def check_same_task(saved: dict, cfg: ml_collections.ConfigDict) -> None:
    """Stop, before any other check, when the workdir's checkpoints (its ``saved_config``) are
    of another task (or another set of MLM objectives) than the config asks for."""
    if saved["task"] != cfg.task:
        raise ConfigError(
            f"The workdir holds a run of task={saved['task']!r} but the config asks for "
            f"task={cfg.task!r}; use a new --workdir, or that run's own config to resume it."
        )
    objectives = tuple(saved.get("train", {}).get("objectives", ("mlm",)))
    if objectives != tuple(cfg.train.objectives):
        raise ConfigError(
            f"The workdir holds a run of task={cfg.task!r} with train.objectives={objectives} "
            f"but the config asks for {tuple(cfg.train.objectives)}; use a new --workdir, or "
            "resume with the objectives it trained with."
        )


def check_resume_compatible(saved: dict, cfg: ml_collections.ConfigDict) -> list[str]:
    """Stop when a resumed run's config changes a model shape against the workdir's
    ``saved_config`` (its task: ``check_same_task``, first); return the keys that change which
    examples come next (allowed, but the run is then no longer exact). Fields that shape the
    optimizer state are compared where the state is made (plan.py)."""
    saved_model = saved["model"]
    for key in ("family", *models.get(cfg.model.family).SHAPE_FIELDS):
        old, new = saved_model.get(key, "bert" if key == "family" else None), cfg.model[key]
        if old != new:
            raise ConfigError(
                f"The checkpoint in the workdir has model.{key}={old} but the config says {new}; "
                f"use a new --workdir or set --config.model.{key}={old}."
            )
    changed, defaults = [], base_config()
    for key in DATA_KEYS:
        group, name = key.split(".")
        if saved.get(group, {}).get(name, defaults[group][name]) != cfg[group][name]:
            changed.append(key)
    return changed
