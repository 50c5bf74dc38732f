"""Pretrained weights by name: ``init_from`` and ``train.teacher`` resolve the same way.

A name is a finished ptft_jax workdir (its best checkpoint if it keeps one, else the latest),
``hf:<folder or hub id>``, or a built-in (``builtin:minilm_l6``). What comes back says what the
model is (its task, shape and labels) and where its tokenizer is; its tensors, with Hugging
Face names, are read only when asked for.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable

import jax
import ml_collections
import numpy as np

from ptft_jax import config, hf, workdir
from ptft_jax.model import ModelConfig


@dataclasses.dataclass
class Pretrained:
    """A pretrained model: what it is, and its tensors on demand."""

    task: str  # "classification" or "mlm" for HF folders; a workdir's own model task
    model_cfg: ModelConfig
    fields: dict  # its model.* config fields (shape, dropouts, LayerNorm epsilon)
    tokenizer: pathlib.Path
    tensors: Callable[[], dict[str, np.ndarray]]  # HF-named float32 arrays, read on call


def resolve(spec: str, allow_pytorch_bin: bool = False, key: str = "init_from") -> Pretrained:
    """The model named by ``spec`` (the value of config key ``key``, for messages)."""
    if config.is_workdir(spec):
        return _from_workdir(pathlib.Path(spec).expanduser(), key)
    if not spec.startswith(("hf:", "builtin:")):
        raise config.ConfigError(
            f"{key}={spec!r} is neither a finished workdir nor hf:<folder or hub id> (or "
            "builtin:minilm_l6); point it at the model to start from."
        )
    folder = hf.resolve(spec)
    fields = hf.read_config(folder)  # checks the architecture and the field types
    raw = json.loads((folder / "config.json").read_text())
    architecture = (raw.get("architectures") or ["BertForMaskedLM"])[0]
    task = "classification" if "SequenceClassification" in architecture else "mlm"
    labels = raw.get("num_labels") or len(raw.get("id2label") or {}) or 2
    model_cfg = ModelConfig(**fields, num_labels=labels, add_pooling_layer=task == "classification")
    return Pretrained(
        task, model_cfg, fields, folder, lambda: hf.read_tensors(folder, allow_pytorch_bin)
    )


def _from_workdir(path: pathlib.Path, key: str) -> Pretrained:
    try:
        saved = ml_collections.ConfigDict(json.loads((path / "config.json").read_text()))
        fields = {k: saved.model[k] for k in hf.CONFIG_FIELDS if k in saved.model}
        task, model_cfg = config.model_task(saved), config.model_config(saved)
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        raise config.ConfigError(
            f"{path / 'config.json'} is unreadable; point {key} at a finished workdir."
        ) from None
    return Pretrained(
        task,
        model_cfg,
        fields,
        path / "tokenizer",
        lambda: hf.to_hf_tensors(jax.device_get(workdir.load(path).params)),
    )
