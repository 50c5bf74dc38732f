"""GPT-2's shape and numerics (``GPT2Config``, BERT's field names where the meaning matches)
and its config.json both ways (HF's ``n_embd``, ``n_layer``, ... translated). The modules that
compute it are ``gpt2.py``'s, which takes its family interface's config part from here."""

from __future__ import annotations

import dataclasses
from typing import Any

import jax.numpy as jnp

from ptft_jax.models.config_json import read_fields


@dataclasses.dataclass(frozen=True)
class GPT2Config:
    """Shape and numerics of a GPT-2 model; field names are BERT's where the meaning matches
    (``from_hf`` maps HF's ``n_embd``, ``n_layer``, ... onto them)."""

    family: str = "gpt2"  # model.family: the models/ file that computes it
    vocab_size: int = 50257
    hidden_size: int = 768  # n_embd
    num_hidden_layers: int = 12  # n_layer
    num_attention_heads: int = 12  # n_head
    intermediate_size: int = 3072  # n_inner (null in HF: 4 * n_embd)
    max_position_embeddings: int = 1024  # n_positions
    hidden_dropout_prob: float = 0.1  # resid_pdrop and embd_pdrop
    attention_probs_dropout_prob: float = 0.1  # attn_pdrop
    layer_norm_eps: float = 1e-5  # layer_norm_epsilon
    initializer_range: float = 0.02
    # Matmul dtype; parameters, LayerNorm and softmax statistics stay float32.
    dtype: str = "float32"
    remat: bool = False  # keep only layer inputs for the backward: less memory, more FLOPs
    remat_policy: str = "full"  # or "dots": also keep the dense layers' outputs (ops.py)
    attention: str = "auto"  # "xla", "cudnn" (fused, GPUs), or "auto": cuDNN where it runs
    num_labels: int = 2  # classification head outputs (1 = regression)
    add_pooling_layer: bool = False  # tasks set these for BERT; GPT-2 has neither
    next_sentence: bool = False

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def jnp_dtype(self) -> Any:
        return jnp.dtype(self.dtype)


# The fields that decide parameter shapes (a checkpoint fixes them).
SHAPE_FIELDS = tuple(
    "vocab_size hidden_size num_hidden_layers num_attention_heads intermediate_size "
    "max_position_embeddings".split()
)
# Our fields config.json holds, and their names there (resid_pdrop also writes embd_pdrop).
HF_NAMES = {
    "vocab_size": "vocab_size",
    "hidden_size": "n_embd",
    "num_hidden_layers": "n_layer",
    "num_attention_heads": "n_head",
    "intermediate_size": "n_inner",
    "max_position_embeddings": "n_positions",
    "hidden_dropout_prob": "resid_pdrop",
    "attention_probs_dropout_prob": "attn_pdrop",
    "layer_norm_eps": "layer_norm_epsilon",
}
HF_FIELDS = tuple(HF_NAMES)
# config.json values this family computes: checked on import, written on export.
HF_CONSTANTS = {
    "model_type": "gpt2",
    "activation_function": "gelu_new",
    "scale_attn_weights": True,
    "scale_attn_by_inverse_layer_idx": False,
}


def from_hf(hf: dict, where) -> dict:
    """Our fields from a config.json dict (``where``: the file, for messages); HF's defaults
    for what it lacks where they differ from ours (n_inner: 4 * n_embd)."""
    fields = read_fields(hf, HF_NAMES, SHAPE_FIELDS, where, nullable=("n_inner",))
    if "intermediate_size" not in fields:
        fields["intermediate_size"] = 4 * fields.get("hidden_size", GPT2Config.hidden_size)
    return fields


def hf_config(fields: dict) -> dict:
    """The family's part of an exported config.json (``fields``: the model's config)."""
    return {
        **HF_CONSTANTS,
        **{theirs: fields[ours] for ours, theirs in HF_NAMES.items()},
        "embd_pdrop": fields["hidden_dropout_prob"],
        "initializer_range": fields.get("initializer_range", 0.02),
    }
