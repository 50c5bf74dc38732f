"""BERT's shape and numerics (``BertConfig``, Hugging Face ``BertConfig``'s field names) and
its config.json both ways. The modules that compute it are ``bert.py``'s, which takes its
family interface's config part from here (RoBERTa's too, with its own constants)."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from ptft_jax.models.config_json import read_fields


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """Shape and numerics of a BERT model; field names are Hugging Face ``BertConfig``'s."""

    family: str = "bert"  # model.family: the models/ file that computes it
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    # Matmul dtype; parameters, LayerNorm and softmax statistics stay float32.
    dtype: str = "float32"
    remat: bool = False  # keep only layer inputs for the backward: less memory, more FLOPs
    remat_policy: str = "full"  # or "dots": also keep the dense layers' outputs (ops.py)
    attention: str = "auto"  # "xla", "cudnn" (fused, GPUs), or "auto": cuDNN where it runs
    add_pooling_layer: bool = False
    next_sentence: bool = False  # the NSP head of HF's BertForPreTraining (needs the pooler)
    num_labels: int = 2  # classification head outputs (1 = regression)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def jnp_dtype(self) -> Any:
        return jnp.dtype(self.dtype)


# The fields that decide parameter shapes (a checkpoint fixes them).
SHAPE_FIELDS = tuple(
    "vocab_size hidden_size num_hidden_layers num_attention_heads intermediate_size "
    "max_position_embeddings type_vocab_size".split()
)
# config.json fields read and written as they are: the shape, dropouts, LayerNorm epsilon.
HF_FIELDS = (*SHAPE_FIELDS, "hidden_dropout_prob", "attention_probs_dropout_prob", "layer_norm_eps")
# config.json values this family computes: checked on import, written on export.
HF_CONSTANTS = {"model_type": "bert", "hidden_act": "gelu", "position_embedding_type": "absolute"}


def from_hf(hf: dict, where) -> dict:
    """Our fields from a config.json dict: HF_FIELDS as they are (``where``: the file)."""
    return read_fields(hf, {k: k for k in HF_FIELDS}, SHAPE_FIELDS, where)


def hf_config(fields: dict) -> dict:
    """The family's part of an exported config.json (``fields``: the model's config)."""
    return {
        "model_type": "bert",
        **{k: fields[k] for k in HF_FIELDS},
        "hidden_act": "gelu",
        "initializer_range": fields.get("initializer_range", 0.02),
        "position_embedding_type": "absolute",
    }
