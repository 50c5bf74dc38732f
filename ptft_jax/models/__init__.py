"""Model families: one file each, registered below, selected by ``model.family``.

A family module provides:
  ``CONFIG``           a frozen dataclass of shape and numerics (``BertConfig``'s field names
                       wherever the meaning is the same, whatever the family's config.json says)
  ``SHAPE_FIELDS``     the fields a checkpoint fixes; ``HF_FIELDS``: the fields config.json
                       holds (under other names in some families); ``HF_CONSTANTS``: config.json
                       values it computes (checked on import, written on export)
  ``HEADS``            head name -> NNX module: ``mlm``, ``classification``, ``embedding``,
                       ``causal_lm``; ``ARCHITECTURES``: head -> transformers class name;
                       ``DEFAULT_HEAD``: the head of a config.json without ``architectures``
  ``build_model(cfg, head, seed)``, ``architecture(head, cfg)``, ``head_of(architecture)``
  a decoder also: ``empty_cache(cfg, rows)`` and its ``causal_lm`` head's
  ``cached(ids, start, cache)``, a key/value-cached step for ``generate.py``
  config.json: ``from_hf(hf, where)`` (our fields from its dict; ``where``: the file, named
  when a value has the wrong type), ``hf_config(fields)`` (its part of an export),
  ``TOKEN_IDS`` (config.json token id keys an export writes besides ``pad_token_id``, each
  mapped to the tokenizer attribute it copies)
  ``TOKENIZER`` (optional): the kind of tokenizer ``data.tokenizer=''`` trains for a task
  without a kind of its own (MLM, classification: a key of ``data/tokenize.py``'s
  ``TRAINERS``; none: BERT's WordPiece)
  Hugging Face parameter names: ``BACKBONE``, ``TOP``, ``CLASSIFIER``, ``LAYER_NAME``,
  ``BUFFERS`` (a regex that full names of non-parameter tensors match), ``TIED`` (names of
  tensors that are another's), ``module_kind(name)`` (how the torch module ``name`` stores its
  weight: ``norm``, ``embedding``, ``linear`` (out, in) or ``conv1d`` (in, out)),
  ``optional(path)``, ``EMBEDDINGS`` (name prefixes of the input embeddings: what
  ``train.freeze_embeddings`` freezes); a family whose first layer lacks a module the others
  have names it in ``NOT_IN_FIRST_LAYER`` (a student's first layer taken from a later teacher
  layer leaves it out)

Dimension letters used in tensor names:
  B: batch, L: sequence length, K: masked positions per sequence (max_predictions_per_seq) or
  example slots of a packed row, Q: the positions a layer computes (queries), D: hidden size,
  N: attention heads, H: head size, F: intermediate (MLP) size, V: vocab size, C: labels.
Every parameter carries logical axis names (``embed``, ``vocab``, ``heads``, ``mlp``, ``norm``);
main activations are constrained with ``batch``, ``length``, ``act_*`` names. ``sharding.py``
maps them onto mesh axes; no family names a mesh axis.
"""

from __future__ import annotations

from types import ModuleType

from ptft_jax.errors import ConfigError, DataError
from ptft_jax.models import bert, gpt2, modernbert, roberta

FAMILIES: dict[str, ModuleType] = {
    "bert": bert,
    "gpt2": gpt2,
    "roberta": roberta,
    "modernbert": modernbert,
}


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
