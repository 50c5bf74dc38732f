"""ModernBERT's shape and numerics (``ModernBertConfig``, with the checks a config gets before
anything is built) and its config.json both ways: transformers v5's ``layer_types`` and
``rope_parameters``, the older ``global_attn_every_n_layers`` and ``*_rope_theta``. The modules
that compute it are ``modernbert.py``'s, which takes its family interface's config part from
here."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from ptft_jax import ops
from ptft_jax.errors import ConfigError, DataError
from ptft_jax.models.config_json import read_fields

GLOBAL, LOCAL = "full_attention", "sliding_attention"  # config.json's layer types
ACTIVATIONS = {  # transformers' ACT2FN names this family computes
    "gelu": ops.gelu,
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "silu": jax.nn.silu,
    "relu": jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class ModernBertConfig:
    """Shape and numerics of a ModernBERT model (ModernBERT-base's by default); field names are
    BERT's where the meaning is the same (``layer_norm_eps`` is HF's ``norm_eps``), Hugging Face
    ``ModernBertConfig``'s elsewhere."""

    family: str = "modernbert"
    vocab_size: int = 50368
    hidden_size: int = 768
    num_hidden_layers: int = 22
    num_attention_heads: int = 12
    intermediate_size: int = 1152  # each of GeGLU's halves
    max_position_embeddings: int = 8192  # the longest input (RoPE has no table)
    layer_norm_eps: float = 1e-5  # norm_eps
    initializer_range: float = 0.02
    initializer_cutoff_factor: float = 2.0  # truncated-normal init at +-this many std
    # Per layer: "full_attention" or "sliding_attention"; () = HF's default, every third layer
    # global from the first.
    layer_types: tuple[str, ...] = ()
    local_attention: int = 128  # a local layer's window: half of it on each side
    global_rope_theta: float = 160_000.0
    local_rope_theta: float = 10_000.0
    hidden_activation: str = "gelu"
    classifier_activation: str = "gelu"
    classifier_pooling: str = "cls"  # or "mean" over real tokens
    embedding_dropout: float = 0.0
    attention_dropout: float = 0.0  # on the probabilities and on the attention output
    mlp_dropout: float = 0.0
    classifier_dropout: float = 0.0
    norm_bias: bool = False
    attention_bias: bool = False
    mlp_bias: bool = False
    decoder_bias: bool = True
    classifier_bias: bool = False  # the head's dense layer (the classifier always has one)
    # Matmul dtype; parameters, LayerNorm and softmax statistics stay float32.
    dtype: str = "float32"
    remat: bool = False  # keep only layer inputs for the backward: less memory, more FLOPs
    remat_policy: str = "full"  # or "dots": also keep the dense layers' outputs (ops.py)
    attention: str = "auto"  # "xla", "cudnn" (fused, GPUs), or "auto": cuDNN where it runs
    num_labels: int = 2  # classification head outputs (1 = regression)
    add_pooling_layer: bool = False  # tasks set these for BERT; ModernBERT has neither
    next_sentence: bool = False

    def __post_init__(self):
        if self.classifier_dropout is None:  # config.model's shared default (RoBERTa's None)
            object.__setattr__(self, "classifier_dropout", 0.0)
        types = tuple(self.layer_types) or tuple(
            LOCAL if i % 3 else GLOBAL for i in range(self.num_hidden_layers)
        )
        object.__setattr__(self, "layer_types", types)
        if len(types) != self.num_hidden_layers or set(types) - {GLOBAL, LOCAL}:
            raise ConfigError(
                f"model.layer_types has {len(types)} entries ({', '.join(sorted(set(types)))}) "
                f"for model.num_hidden_layers={self.num_hidden_layers}; give each layer one of "
                f"{GLOBAL!r} or {LOCAL!r}."
            )
        for key in ("hidden_activation", "classifier_activation"):
            if getattr(self, key) not in ACTIVATIONS:
                raise ConfigError(
                    f"model.{key}={getattr(self, key)!r} is unknown; use one of "
                    f"{', '.join(ACTIVATIONS)}."
                )
        if self.classifier_pooling not in ("cls", "mean"):
            raise ConfigError(
                f"model.classifier_pooling={self.classifier_pooling!r} is unknown; use cls or mean."
            )
        if self.local_attention < 2 or self.local_attention % 2:
            raise ConfigError(
                f"model.local_attention={self.local_attention} must be an even number of at "
                "least 2 (the window: half of it on each side)."
            )
        if self.next_sentence:
            raise ConfigError(
                "ModernBERT has no next-sentence head; drop 'nsp' from train.objectives."
            )

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def jnp_dtype(self) -> Any:
        return jnp.dtype(self.dtype)


# --- config.json: the family interface's fields (``models/__init__.py``).

BIASES = ("norm_bias", "attention_bias", "mlp_bias", "decoder_bias", "classifier_bias")
# The fields that decide parameter shapes (a checkpoint fixes them).
SHAPE_FIELDS = (
    *"vocab_size hidden_size num_hidden_layers num_attention_heads intermediate_size".split(),
    "max_position_embeddings",
    *BIASES,
)
# Our numeric fields config.json holds, and their names there.
HF_NAMES = {
    **{k: k for k in SHAPE_FIELDS[:6]},
    "layer_norm_eps": "norm_eps",
    "initializer_cutoff_factor": "initializer_cutoff_factor",
    "local_attention": "local_attention",
    **{k: k for k in ("embedding_dropout", "attention_dropout", "mlp_dropout")},
    "classifier_dropout": "classifier_dropout",
}
WORDS = ("hidden_activation", "classifier_activation", "classifier_pooling")  # strings
ROPE = ("global_rope_theta", "local_rope_theta")
HF_FIELDS = (*HF_NAMES, *BIASES, *WORDS, *ROPE, "layer_types")
# config.json values this family computes: checked on import, written on export.
HF_CONSTANTS = {"model_type": "modernbert", "tie_word_embeddings": True}


def from_hf(hf: dict, where) -> dict:
    """Our fields from a config.json dict (``where``: the file, for messages): v5's
    ``layer_types`` and ``rope_parameters``, or the older ``global_attn_every_n_layers`` and
    ``*_rope_theta``; transformers' defaults (ours) for what it lacks."""
    defaults = {f.name: f.default for f in dataclasses.fields(ModernBertConfig)}
    fields = {k: defaults[k] for k in HF_FIELDS}
    fields |= read_fields(hf, HF_NAMES, SHAPE_FIELDS[:6] + ("local_attention",), where)
    for key in BIASES:
        if not isinstance(hf.get(key, False), bool):
            raise DataError(f"{where} has {key}={hf[key]!r:.40}, not true or false; fix it.")
        fields[key] = hf.get(key, fields[key])
    for key in WORDS:
        fields[key] = hf.get(key, fields[key])
    old = {"every": "global_attn_every_n_layers", **{k: k for k in ROPE}}  # the older keys
    old = read_fields(hf, old, ("every",), where, nullable=("global_attn_every_n_layers",))
    every = old.pop("every", 3)
    if every < 1:
        raise DataError(f"{where} has global_attn_every_n_layers={every}; use 1 or more.")
    n = fields["num_hidden_layers"]
    types = hf.get("layer_types") or [LOCAL if i % every else GLOBAL for i in range(n)]
    rope = hf.get("rope_parameters") or {}
    if not isinstance(rope, dict):
        raise DataError(f"{where} has rope_parameters={rope!r:.40}, not an object; fix it.")
    fields |= old
    for ours, kind in zip(ROPE, (GLOBAL, LOCAL), strict=True):
        params = rope.get(kind) or {}
        if params.get("rope_type", "default") != "default":
            raise DataError(
                f"{where} scales its {kind} rotary positions (rope_type="
                f"{params['rope_type']!r}); ptft_jax computes rope_type 'default' only."
            )
        fields |= read_fields(params, {ours: "rope_theta"}, (), where)
    try:  # the same checks as our own config's, in one sentence naming the file
        ModernBertConfig(**{**fields, "layer_types": tuple(types)})
    except (ConfigError, TypeError) as e:
        raise DataError(f"{where}: {e}") from None
    return fields | {"layer_types": list(types)}


def hf_config(fields: dict) -> dict:
    """The family's part of an exported config.json (``fields``: the model's config), in
    transformers v5's form."""
    cfg = ModernBertConfig(**{k: v for k, v in fields.items() if k in HF_FIELDS})
    rope = {
        kind: {"rope_type": "default", "rope_theta": fields[ours]}
        for ours, kind in zip(ROPE, (GLOBAL, LOCAL), strict=True)
    }
    return {
        **HF_CONSTANTS,
        **{theirs: fields[ours] for ours, theirs in HF_NAMES.items()},
        **{k: fields[k] for k in (*BIASES, *WORDS)},
        "layer_types": list(cfg.layer_types),
        "rope_parameters": rope,
        "initializer_range": fields.get("initializer_range", 0.02),
    }
