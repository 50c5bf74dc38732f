"""ModernBERT in Flax NNX: the heads on its encoder (``modernbert_encoder.py``) and the family
interface (``models/__init__.py``).

The MLM head (``head``: dense, activation, norm) feeds a decoder tied to the token embeddings
with its own bias; the classifier reads the first token's state or the mean over real tokens
(``classifier_pooling``) through the same kind of head, and so do the per-token heads (labels,
answer spans: ``token_heads.py``). Module attribute names mirror Hugging Face parameter names
one-to-one.
"""

from __future__ import annotations

import re

import jax.numpy as jnp
from flax import nnx

from ptft_jax.models import layers, modernbert_config, token_heads
from ptft_jax.models.layers import layer_norm
from ptft_jax.models.modernbert_config import ACTIVATIONS, ModernBertConfig
from ptft_jax.models.modernbert_encoder import ModernBertModel, out_std, truncated_dense
from ptft_jax.ops import add_bias, constrain, dropout


class ModernBertPredictionHead(nnx.Module):
    """``norm(act(dense(x)))``: the MLM head's transform and the classifier's pooler."""

    def __init__(self, cfg: ModernBertConfig, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.dense = truncated_dense(
            cfg, d, d, ("embed", None), rngs, cfg.classifier_bias, out_std(cfg)
        )
        self.norm = layer_norm(cfg, rngs, bias=cfg.norm_bias)
        self.act = ACTIVATIONS[cfg.classifier_activation]

    def __call__(self, x_BxKxD):
        return self.norm(self.act(self.dense(x_BxKxD)))


class ModernBertDecoder(nnx.Module):
    """The MLM decoder: the token embeddings (tied) and, with ``decoder_bias``, a bias."""

    def __init__(self, cfg: ModernBertConfig):
        self.cfg = cfg
        zeros_V = jnp.zeros((cfg.vocab_size,), jnp.float32)
        bias = nnx.Param(zeros_V, out_sharding=("vocab",), eager_sharding=False)
        self.bias = bias if cfg.decoder_bias else None

    def __call__(self, h_BxKxD, word_embeddings_VxD):
        dtype = self.cfg.jnp_dtype
        logits_BxKxV = jnp.einsum(
            "bkd,vd->bkv",
            h_BxKxD.astype(dtype),
            word_embeddings_VxD.astype(dtype),
            preferred_element_type=jnp.float32,
        )
        if self.bias is not None:
            logits_BxKxV = add_bias(logits_BxKxV, self.bias[...])
        return constrain(logits_BxKxV, ("batch", None, "act_vocab"))


class ModernBertForMaskedLM(nnx.Module):
    """Encoder + MLM head evaluated only at gathered masked positions (HF's
    ModernBertForMaskedLM)."""

    def __init__(self, cfg: ModernBertConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.model = ModernBertModel(cfg, rngs)
        self.head = ModernBertPredictionHead(cfg, rngs)
        self.decoder = ModernBertDecoder(cfg)

    def __call__(self, *args, **kwargs):
        """MLM logits (float32) at ``masked_positions_BxK``, or at every position when None."""
        return self.pretraining(*args, **kwargs)[0]

    def pretraining(
        self, ids_BxL, mask_BxL, types_BxL=None, masked_positions_BxK=None, *, rngs=None
    ):
        """``(MLM logits, None)``: there is no next-sentence head."""
        out = self.model(ids_BxL, mask_BxL, rngs=rngs, positions_BxQ=masked_positions_BxK)
        word_VxD = self.model.embeddings.tok_embeddings.embedding[...]
        return self.decoder(self.head(out["last_hidden_state"]), word_VxD), None


class ModernBertForSequenceClassification(nnx.Module):
    """The first token's final state (``classifier_pooling="cls"``) or the mean over real
    tokens (``"mean"``) -> head -> dropout -> classifier, as HF's
    ModernBertForSequenceClassification."""

    def __init__(self, cfg: ModernBertConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.model = ModernBertModel(cfg, rngs)
        self.head = ModernBertPredictionHead(cfg, rngs)
        d = cfg.hidden_size
        self.classifier = truncated_dense(
            cfg, d, cfg.num_labels, ("embed", None), rngs, True, d**-0.5
        )

    def __call__(
        self, input_ids_BxL, attention_mask_BxL, token_type_ids_BxL=None, *, rngs=None, **packed
    ):
        """Logits ``[B, num_labels]`` in float32; of packed rows (``position_ids_BxL`` and each
        example's first position, ``cls_positions_BxK``), ``[B, K, num_labels]``."""
        first_BxK = packed.pop("cls_positions_BxK", None)
        slots = 1 if first_BxK is None else first_BxK.shape[1]
        if self.cfg.classifier_pooling == "cls":
            if first_BxK is None:  # one example a row: its first token, all the head reads
                first_BxK = jnp.zeros((input_ids_BxL.shape[0], 1), jnp.int32)
            out = self.model(
                input_ids_BxL, attention_mask_BxL, rngs=rngs, positions_BxQ=first_BxK, **packed
            )
            pooled_BxKxD = out["last_hidden_state"]
        else:
            out = self.model(input_ids_BxL, attention_mask_BxL, rngs=rngs, **packed)
            segments_BxL = attention_mask_BxL if packed else attention_mask_BxL > 0
            pooled_BxKxD = layers.segment_mean_pool(out["last_hidden_state"], segments_BxL, slots)
        h_BxKxD = dropout(self.head(pooled_BxKxD), self.cfg.classifier_dropout, rngs)
        logits_BxKxC = self.classifier(h_BxKxD).astype(jnp.float32)
        return logits_BxKxC if packed else logits_BxKxC[:, 0]


class ModernBertForSentenceEmbedding(nnx.Module):
    """The last hidden states averaged over real tokens (sentence-transformers' pooling) of
    HF's ModernBertModel: one float32 vector per text."""

    def __init__(self, cfg: ModernBertConfig, *, rngs: nnx.Rngs):
        self.model = ModernBertModel(cfg, rngs)

    def __call__(
        self, input_ids_BxL, attention_mask_BxL, token_type_ids_BxL=None, *, rngs=None, **packed
    ):
        """``[B, D]``; of packed rows, ``[B, K, D]`` (K: ``cls_positions_BxK``'s slots)."""
        slots = packed.pop("cls_positions_BxK", None)
        hidden_BxLxD = self.model(input_ids_BxL, attention_mask_BxL, rngs=rngs, **packed)[
            "last_hidden_state"
        ]
        if slots is not None:
            return layers.segment_mean_pool(hidden_BxLxD, attention_mask_BxL, slots.shape[1])
        return layers.mean_pool(hidden_BxLxD, attention_mask_BxL)


class _ModernBertPerToken:
    """ModernBERT's per-token heads: encoder -> ``head`` -> dropout -> ``classifier``."""

    backbone, encoder, prediction_head = "model", ModernBertModel, ModernBertPredictionHead
    output, with_dropout = "classifier", True

    def output_layer(self, cfg, n: int, rngs) -> nnx.Linear:
        d = cfg.hidden_size
        return truncated_dense(cfg, d, n, ("embed", None), rngs, True, d**-0.5)


class ModernBertForTokenClassification(_ModernBertPerToken, token_heads.TokenClassifier):
    """HF's ModernBertForTokenClassification."""


class ModernBertForQuestionAnswering(_ModernBertPerToken, token_heads.SpanClassifier):
    """HF's ModernBertForQuestionAnswering (its two outputs: ``classifier``)."""


# --- The family interface (``models/__init__.py``): heads, config.json, parameter names.

# Shape fields, config.json's fields and constants, and both translations: modernbert_config.py.
SHAPE_FIELDS = modernbert_config.SHAPE_FIELDS
HF_FIELDS = modernbert_config.HF_FIELDS
HF_CONSTANTS = modernbert_config.HF_CONSTANTS
from_hf = modernbert_config.from_hf
hf_config = modernbert_config.hf_config
CONFIG = ModernBertConfig
HEADS = {
    "mlm": ModernBertForMaskedLM,
    "classification": ModernBertForSequenceClassification,
    "embedding": ModernBertForSentenceEmbedding,
    "token_classification": ModernBertForTokenClassification,
    "question_answering": ModernBertForQuestionAnswering,
}
ARCHITECTURES = {
    "mlm": "ModernBertForMaskedLM",
    "classification": "ModernBertForSequenceClassification",
    "embedding": "ModernBertModel",
    "token_classification": "ModernBertForTokenClassification",
    "question_answering": "ModernBertForQuestionAnswering",
}
DEFAULT_HEAD = "mlm"  # a config.json without architectures
BACKBONE = "model"  # the encoder's top-level name (bare ModernBertModel checkpoints omit it)
TOP = ("model", "head", "decoder", "classifier")  # top-level names of checkpoint tensors
CLASSIFIER = "classifier"  # the label head: another label count starts it fresh
LAYER_NAME = re.compile(r"(model\.layers\.)(\d+)(\..*)")  # HF names in encoder layer i
EMBEDDINGS = ("model.embeddings.",)  # HF name prefixes of the input embeddings
# A student's first layer from a later teacher layer leaves this out (HF's first has none).
NOT_IN_FIRST_LAYER = ("attn_norm",)
BUFFERS = re.compile(r"(.+\.)?rotary_emb\..+")  # RoPE frequencies: computed, not parameters
TIED = ("decoder.weight",)  # the token embeddings
# config.json token ids -> the tokenizer's attribute holding each: ModernBERT-base's begin
# and end its texts with [CLS] and [SEP].
TOKEN_IDS = {
    "bos_token_id": "cls_token_id",
    "eos_token_id": "sep_token_id",
    "cls_token_id": "cls_token_id",
    "sep_token_id": "sep_token_id",
}
TOKENIZER = "modernbert_bpe"  # what data.tokenizer='' trains: byte-level BPE, BERT's specials


def build_model(cfg: ModernBertConfig, head: str, seed: int) -> nnx.Module:
    """The model with ``head`` (``HEADS``), initialised from ``seed`` (call under jit or
    eval_shape to shard)."""
    return HEADS[head](cfg, rngs=nnx.Rngs(params=seed))


def architecture(head: str, cfg: ModernBertConfig) -> str:
    """The transformers class an export with ``head`` loads as."""
    return ARCHITECTURES[head]


def head_of(architecture_name: str) -> str:
    """The head a checkpoint of this transformers class has."""
    return token_heads.head_of(architecture_name)


def module_kind(name: str) -> str:
    """How the torch module called ``name`` stores its weight: ``norm`` (the LayerNorms:
    ``norm``, ``attn_norm``, ``mlp_norm``, ``final_norm``), ``embedding`` (``tok_embeddings``)
    or ``linear`` (nn.Linear, (out, in))."""
    if name.endswith("norm"):
        return "norm"
    return "embedding" if name == "tok_embeddings" else "linear"


def optional(path: tuple) -> bool:
    """Whether ``path`` is a head: a checkpoint may lack it, and another task's may have it."""
    return path[0] != BACKBONE
