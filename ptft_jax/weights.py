"""Pretrained weights by name: ``init_from`` and ``train.teacher`` resolve the same way.

A name is a finished ptft_jax workdir (its best checkpoint if it keeps one, else the latest),
``hf:<folder or hub id>``, or a built-in (``builtin:minilm_l6``). What comes back says what the
model is (its task, shape and labels) and where its tokenizer is; its tensors, with Hugging
Face names, are read only when asked for. A distillation's teacher is such a model; its
student shares the teacher's tokenizer and may start from some of its layers.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from flax import nnx

from ptft_jax import config, hf, models, sharding, steps, tasks, workdir
from ptft_jax.errors import ConfigError, DataError

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Pretrained:
    """A pretrained model: what it is, and its tensors on demand."""

    task: str  # its model's task: "classification" or "mlm" for HF folders
    model_cfg: object  # its family's CONFIG
    fields: dict  # its model.* config fields (family, shape, dropouts, LayerNorm epsilon)
    tokenizer: pathlib.Path
    tensors: Callable[[], dict[str, np.ndarray]]  # HF-named float32 arrays, read on call
    label_names: list[str] | None = None  # its head's classes in order (id2label), if named


def resolve(spec: str, allow_pytorch_bin: bool = False, key: str = "init_from") -> Pretrained:
    """The model named by ``spec`` (the value of config key ``key``, for messages)."""
    if config.is_workdir(spec):
        path, checkpoint = config.workdir_spec(spec)
        return _from_workdir(pathlib.Path(path).expanduser(), key, checkpoint)
    if not spec.startswith(("hf:", "builtin:")):
        raise ConfigError(
            f"{key}={spec!r} is neither a finished workdir nor hf:<folder or hub id> (or "
            "builtin:minilm_l6); point it at the model to start from."
        )
    folder = hf.resolve(spec)
    fields = hf.read_config(folder)  # checks the family and the field types
    raw = hf.read_json(folder)
    family = models.get(fields["family"])
    # The checkpoint's head names the task its model does (mlm, causal_lm or classification).
    architectures = raw.get("architectures")
    head = family.head_of(architectures[0]) if architectures else family.DEFAULT_HEAD
    labels = raw.get("num_labels") or len(raw.get("id2label") or {}) or 2
    options = tasks.task_class(head)().model_options()
    model_cfg = family.CONFIG(**fields, num_labels=labels, **options)
    return Pretrained(
        head,
        model_cfg,
        fields,
        folder,
        lambda: hf.read_tensors(folder, allow_pytorch_bin),
        _named_labels(raw.get("id2label")),
    )


def _named_labels(id2label) -> list[str] | None:
    """The class names of a config.json's ``id2label`` in id order; None when it has none or
    only transformers' placeholders (``LABEL_0``, ...)."""
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        names = [str(id2label[k]) for k in sorted(id2label, key=int)]
    except ValueError:
        return None
    return None if names == [f"LABEL_{i}" for i in range(len(names))] else names


def _from_workdir(path: pathlib.Path, key: str, checkpoint: str | None = None) -> Pretrained:
    """A finished workdir's model: its best checkpoint if it keeps one, else its last, or the
    ``checkpoint`` named (``W@STEP``: checked here, before anything is compiled)."""
    if checkpoint is not None:
        kept, best = workdir.steps_of(path / "checkpoints"), workdir.steps_of(path / "best")

        def spelled(value) -> str:  # how the one sentence names another checkpoint
            return f"{key}={path}@{value}"

        if kept:  # none: the load says so
            workdir.choose(checkpoint, kept, best[-1] if best else None, path, spelled)
    try:
        saved = ml_collections.ConfigDict(json.loads((path / "config.json").read_text()))
        family = models.get(saved.model.get("family", "bert"))
        names = ("family", *family.HF_FIELDS)
        fields = {k: saved.model[k] for k in names if k in saved.model}
        task, model_cfg = tasks.get(saved).model_task, config.model_config(saved)
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        raise ConfigError(
            f"{path / 'config.json'} is unreadable; point {key} at a finished workdir."
        ) from None
    labels = path / "labels.json"
    return Pretrained(
        task,
        model_cfg,
        fields,
        path / "tokenizer",
        lambda: hf.to_hf_tensors(
            jax.device_get(workdir.load(path, checkpoint).params), model_cfg.family
        ),
        json.loads(labels.read_text())["names"] if labels.exists() else None,
    )


def starting_point(cfg, cli_model_keys=()) -> tuple:
    """``(cfg, source, teacher)``: the config with what the starting weights fix (the model
    shape; a student's task, tokenizer and labels), the weights to start from (``init_from``
    or teacher layers; None: random) and a distillation's teacher (or None)."""
    teacher = None
    if tasks.task_class(cfg.task).uses_teacher:
        teacher = resolve(cfg.train.teacher, cfg.allow_pytorch_bin, "train.teacher")
        cfg = student_config(cfg, teacher)  # the teacher's task, tokenizer, labels
    source = resolve(cfg.init_from, cfg.allow_pytorch_bin) if cfg.init_from else None
    layers = tuple(cfg.train.student_layers_from_teacher)
    if teacher is not None and layers:
        source = student_source(teacher, layers)
    if source is not None:
        cfg = config.apply_checkpoint_model(cfg, source.fields, source.tokenizer, cli_model_keys)
        config.validate(cfg)
    return cfg, source, teacher


def classifier_labels(cfg, source: Pretrained | None, resumed: dict | None, cli_model_keys=()):
    """``(cfg, new)`` for a classification run. ``new``: its classifier is new (random init,
    or ``init_from`` a model without one), so the training split's classes decide
    ``model.num_labels`` and the config's is only a default. A classifier that exists keeps
    its count: a resumed run's (``resumed``: its ``config.saved_config``, whose count
    ``cfg`` takes), or ``init_from`` a classifier (the config's, checked against the data); so do an
    explicit ``--config.model.num_labels`` (the user's choice) and a regression (1)."""
    task = tasks.task_class(cfg.task)
    if not task.sized_by_data:
        return cfg, False  # no head sized by data (a distillation's teacher fixes its count)
    explicit = "num_labels" in cli_model_keys
    if resumed is not None:
        saved = resumed["model"].get("num_labels")
        if saved is None or saved == cfg.model.num_labels:
            return cfg, False
        if explicit:
            raise ConfigError(
                f"The checkpoint in the workdir has model.num_labels={saved} but the command "
                f"line says {cfg.model.num_labels}; use a new --workdir or drop "
                "--config.model.num_labels."
            )
        cfg = ml_collections.ConfigDict(cfg.to_dict())
        cfg.model.num_labels = saved
        return cfg, False
    has_head = source is not None and source.task == task.head  # the head is there already
    return cfg, not (explicit or has_head or cfg.model.num_labels == 1)


def student_config(cfg: ml_collections.ConfigDict, teacher: Pretrained):
    """``cfg`` with what the student must share with its teacher: the task, the tokenizer and
    vocabulary (both read the same ids), the label count; and, when it starts from teacher
    layers, the teacher's shape with only the layer count changed."""
    t = cfg.train
    tasks.task_class(cfg.task).check_teacher(cfg, teacher.task)
    if cfg.data.tokenizer and pathlib.Path(cfg.data.tokenizer) != teacher.tokenizer:
        raise ConfigError(
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
            raise ConfigError(
                "Set either init_from or train.student_layers_from_teacher for the student, "
                "not both."
            )
        n = teacher.model_cfg.num_hidden_layers
        if sorted(set(layers)) != list(layers) or not all(0 <= i < n for i in layers):
            raise ConfigError(
                f"train.student_layers_from_teacher={layers} must list increasing teacher "
                f"layers between 0 and {n - 1}; fix it."
            )
        cfg.model.update(_shape(teacher, layers))
    return cfg


def student_source(teacher: Pretrained, layers: tuple[int, ...]) -> Pretrained:
    """The student's initial weights: the teacher's embeddings, pooler and heads, and its
    encoder layers ``layers`` renumbered 0, 1, ... (DistilBERT's initialisation). A module the
    family's first layer lacks (``NOT_IN_FIRST_LAYER``: ModernBERT's attention norm) is left
    out of the student's first layer when a later teacher layer becomes it."""
    layers = tuple(layers)
    family = models.get(teacher.model_cfg.family)
    first_lacks = getattr(family, "NOT_IN_FIRST_LAYER", ())

    def tensors() -> dict:
        out = {}
        for name, value in teacher.tensors().items():
            m = family.LAYER_NAME.match(name)
            if m is None:
                out[name] = value
            elif int(m[2]) in layers:
                index = layers.index(int(m[2]))
                if index == 0 and m[3].lstrip(".").split(".")[0] in first_lacks:
                    continue
                out[f"{m[1]}{index}{m[3]}"] = value
        return out

    fields = _shape(teacher, layers)
    model_cfg = dataclasses.replace(
        teacher.model_cfg, **{k: v for k, v in fields.items() if k != "family"}
    )
    return Pretrained(teacher.task, model_cfg, fields, teacher.tokenizer, tensors)


def _shape(teacher: Pretrained, layers: tuple[int, ...]) -> dict:
    """The teacher's fields a student made of its ``layers`` must share: all but the dropouts
    (the student's own), with the layer count, and the per-layer ``layer_types`` of those
    layers (ModernBERT's local or global attention)."""
    fields = {k: v for k, v in teacher.fields.items() if "dropout" not in k}
    fields["num_hidden_layers"] = len(layers)
    if "layer_types" in fields:
        fields["layer_types"] = [teacher.model_cfg.layer_types[i] for i in layers]
    return fields


def load_teacher(teacher: Pretrained | None, cfg, mesh) -> tuple[object, dict] | None:
    """``(the teacher's graphdef, its parameters placed on the mesh)``; stops when the teacher
    lacks its head. None without a teacher, and at ``distill_alpha=0``: the loss is then the
    hard-label loss alone, so the teacher does not run (the student may still start from its
    layers)."""
    if teacher is None or cfg.train.distill_alpha == 0:
        return None
    family = models.get(teacher.model_cfg.family)
    head = tasks.task_class(teacher.task).head
    graphdef, abstract = steps.abstract_model(teacher.model_cfg, head)
    specs = sharding.param_specs(abstract, mesh)
    params, fresh = hf.load_params(
        teacher.tensors(), nnx.to_pure_dict(abstract), family.CONFIG.family
    )
    untrained = [p for p in fresh if not p.startswith(f"{family.BACKBONE}/")]
    if untrained:
        raise DataError(
            f"The teacher {cfg.train.teacher} has no trained {untrained[0].split('/')[0]} head; "
            f"fine-tune it on the task first (task={teacher.task})."
        )
    return graphdef, jax.device_put(params, sharding.named(mesh, specs))


def load_source(source: Pretrained, fresh: dict, family: str, origin: str) -> dict:
    """``source``'s tensors in our tree ``fresh`` (ShapeDtypeStructs), the parts it lacks
    (heads) left as they are; logs what was loaded and what starts fresh."""
    params, missing = hf.load_params(source.tensors(), fresh, family)
    heads = sorted({p.rsplit("/", 1)[0] for p in missing})  # the modules, not each tensor
    note = f"; initialised fresh: {', '.join(heads)}" if heads else ""
    log.info("loaded %s%s", origin, note)
    return params


def place(pretrained: dict, params: dict, shardings: dict) -> dict:
    """``params`` with every pretrained tensor put in its place (heads it lacks stay)."""
    return jax.tree.map(
        lambda new, old, sh: (
            old if isinstance(new, jax.ShapeDtypeStruct) else jax.device_put(new, sh)
        ),
        pretrained,
        params,
        shardings,
    )
