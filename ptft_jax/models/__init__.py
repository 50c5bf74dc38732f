"""Model families: one file each, registered below, selected by ``model.family``.

A family module provides:
  ``CONFIG``           a frozen dataclass of shape and numerics (Hugging Face field names)
  ``SHAPE_FIELDS``     the fields a checkpoint fixes; ``HF_FIELDS``: config.json fields copied
                       as they are; ``HF_CONSTANTS``: config.json values it computes
  ``HEADS``            head name -> NNX module: ``mlm``, ``classification``, ``embedding``
  ``build_model(cfg, head, seed)``, ``architecture(head, cfg)``, ``head_of(architecture)``
  Hugging Face parameter names: ``BACKBONE``, ``TOP``, ``CLASSIFIER``, ``LAYER_NAME``,
  ``BUFFERS``, ``TIED``, ``module_kind(name)``, ``optional(path)``, ``hf_config(fields)``

Dimension letters used in tensor names:
  B: batch, L: sequence length, K: masked positions per sequence (max_predictions_per_seq),
  D: hidden size, N: attention heads, H: head size, F: intermediate (MLP) size, V: vocab size.
Every parameter carries logical axis names (``embed``, ``vocab``, ``heads``, ``mlp``, ``norm``);
main activations are constrained with ``batch``, ``length``, ``act_*`` names. ``sharding.py``
maps them onto mesh axes; no family names a mesh axis.
"""

from __future__ import annotations

from types import ModuleType

from ptft_jax.errors import ConfigError, DataError
from ptft_jax.models import bert

FAMILIES: dict[str, ModuleType] = {"bert": bert}


def get(name: str) -> ModuleType:
    """The family called ``name`` (``model.family``)."""
    if name not in FAMILIES:
        raise ConfigError(
            f"model.family={name!r} is unknown; use one of {', '.join(sorted(FAMILIES))}."
        )
    return FAMILIES[name]


def of_hf_config(hf: dict, where) -> ModuleType:
    """The family of a Hugging Face config.json (its ``model_type``; BERT when it has none)."""
    for family in FAMILIES.values():
        if hf.get("model_type", "bert") == family.HF_CONSTANTS["model_type"]:
            return family
    raise DataError(
        f"{where} holds a {hf.get('model_type')!r} model; ptft_jax reads "
        f"{', '.join(sorted(FAMILIES))} checkpoints."
    )
