"""BERT in Flax NNX, computing exactly what Hugging Face's BertModel computes.

Module attribute names mirror Hugging Face parameter names one-to-one (``bert.encoder.layer.3.
attention.self.query`` here is ``bert.encoder.layer.3.attention.self.query`` there), so weight
conversion is a rename plus a transpose of dense kernels.

Tensor names carry their dimension letters and every parameter its logical axes, as
``models/__init__.py`` describes; this file never names a mesh axis.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ptft_jax import ops
from ptft_jax.models import bert_config, layers, token_heads
from ptft_jax.models.bert_config import BertConfig
from ptft_jax.models.layers import dense, embed, layer_norm, lookup, mean_pool, run_layers
from ptft_jax.ops import add_bias, attention, constrain, dropout, gelu


class BertEmbeddings(nnx.Module):
    def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
        self.word_embeddings = embed(cfg, cfg.vocab_size, ("vocab", "embed"), rngs)
        self.position_embeddings = embed(cfg, cfg.max_position_embeddings, (None, "embed"), rngs)
        self.token_type_embeddings = embed(cfg, cfg.type_vocab_size, (None, "embed"), rngs)
        self.LayerNorm = layer_norm(cfg, rngs)
        self.dropout_rate = cfg.hidden_dropout_prob

    def __call__(self, input_ids_BxL, token_type_ids_BxL, *, rngs=None, position_ids_BxL=None):
        # The sum stays float32 (the tables' dtype) until LayerNorm, which outputs model.dtype.
        if position_ids_BxL is None:  # packed rows restart them at each example
            position_ids_BxL = jnp.arange(input_ids_BxL.shape[1])[None]
        x_BxLxD = (
            lookup(self.word_embeddings, input_ids_BxL)
            + lookup(self.position_embeddings, position_ids_BxL)
            + lookup(self.token_type_embeddings, token_type_ids_BxL)
        )
        x_BxLxD = constrain(x_BxLxD, ("batch", "length", "act_embed"))
        x_BxLxD = self.LayerNorm(x_BxLxD)
        return dropout(x_BxLxD, self.dropout_rate, rngs)


class BertSelfAttention(nnx.Module):
    def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        d = cfg.hidden_size
        self.query = dense(cfg, d, d, ("embed", "heads"), rngs)
        self.key = dense(cfg, d, d, ("embed", "heads"), rngs)
        self.value = dense(cfg, d, d, ("embed", "heads"), rngs)

    def __call__(self, x_BxQxD, x_BxLxD, mask_BxL, *, rngs=None):
        """Attention outputs for the queries ``x_BxQxD``; keys and values from ``x_BxLxD``."""
        cfg = self.cfg
        b, length, _ = x_BxLxD.shape
        heads = (cfg.num_attention_heads, cfg.head_dim)
        names = ("batch", "length", "act_heads", None)
        q_BxQxNxH = constrain(self.query(x_BxQxD).reshape(*x_BxQxD.shape[:2], *heads), names)
        k_BxLxNxH = constrain(self.key(x_BxLxD).reshape(b, length, *heads), names)
        v_BxLxNxH = constrain(self.value(x_BxLxD).reshape(b, length, *heads), names)
        out_BxQxNxH = attention(
            q_BxQxNxH,
            k_BxLxNxH,
            v_BxLxNxH,
            mask_BxL,
            implementation=ops.attention_implementation(cfg.attention, cfg.dtype, cfg.head_dim),
            dropout_rate=cfg.attention_probs_dropout_prob,
            rngs=rngs,
        )
        return out_BxQxNxH.reshape(*x_BxQxD.shape[:2], cfg.hidden_size)


class BertSelfOutput(nnx.Module):
    def __init__(self, cfg: BertConfig, d_in: int, names, rngs: nnx.Rngs):
        self.dense = dense(cfg, d_in, cfg.hidden_size, names, rngs)
        self.LayerNorm = layer_norm(cfg, rngs)
        self.dropout_rate = cfg.hidden_dropout_prob

    def __call__(self, h, residual_BxLxD, *, rngs=None):
        h_BxLxD = dropout(self.dense(h), self.dropout_rate, rngs)
        return self.LayerNorm(h_BxLxD + residual_BxLxD)


class BertAttention(nnx.Module):
    def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
        self.self = BertSelfAttention(cfg, rngs)
        self.output = BertSelfOutput(cfg, cfg.hidden_size, ("heads", "embed"), rngs)

    def __call__(self, x_BxLxD, mask_BxL, *, rngs=None, positions_BxQ=None):
        at = positions_BxQ is not None
        x_BxQxD = jnp.take_along_axis(x_BxLxD, positions_BxQ[..., None], 1) if at else x_BxLxD
        if at and mask_BxL.ndim == 3:  # a pairwise mask: those queries' rows
            mask_BxL = jnp.take_along_axis(mask_BxL, positions_BxQ[..., None], 1)
        h_BxQxD = self.self(x_BxQxD, x_BxLxD, mask_BxL, rngs=rngs)
        return self.output(h_BxQxD, x_BxQxD, rngs=rngs)


class BertIntermediate(nnx.Module):
    def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
        self.dense = dense(cfg, cfg.hidden_size, cfg.intermediate_size, ("embed", "mlp"), rngs)

    def __call__(self, x_BxLxD):
        return constrain(gelu(self.dense(x_BxLxD)), ("batch", "length", "act_mlp"))


class BertLayer(nnx.Module):
    def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
        self.attention = BertAttention(cfg, rngs)
        self.intermediate = BertIntermediate(cfg, rngs)
        self.output = BertSelfOutput(cfg, cfg.intermediate_size, ("mlp", "embed"), rngs)

    def __call__(self, x_BxLxD, mask_BxL, *, rngs=None, positions_BxQ=None):
        """Outputs at ``positions_BxQ`` (every position when None); keys span them all."""
        a_BxLxD = self.attention(x_BxLxD, mask_BxL, rngs=rngs, positions_BxQ=positions_BxQ)
        out_BxLxD = self.output(self.intermediate(a_BxLxD), a_BxLxD, rngs=rngs)
        return constrain(out_BxLxD, ("batch", "length", "act_embed"))


class BertEncoder(nnx.Module):
    def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
        self.layer = nnx.List([BertLayer(cfg, rngs) for _ in range(cfg.num_hidden_layers)])
        self.remat, self.policy = cfg.remat, cfg.remat_policy

    def __call__(self, x_BxLxD, mask_BxL, *, rngs=None, return_all=False, last_positions=None):
        """``last_positions`` ``[B, Q]``: the last layer computes those positions only (what a
        pooled classifier or the MLM head reads), skipping most of that layer's work."""
        hidden = run_layers(
            self.layer,
            x_BxLxD,
            mask_BxL,
            rngs,
            remat=self.remat,
            policy=self.policy,
            last_positions=last_positions,
        )
        return hidden if return_all else hidden[-1]


class BertPooler(nnx.Module):
    def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
        self.dense = dense(cfg, cfg.hidden_size, cfg.hidden_size, ("embed", None), rngs)

    def __call__(self, x_BxLxD):
        return jnp.tanh(self.dense(x_BxLxD[:, 0]))


class BertModel(nnx.Module):
    """The encoder: embeddings, post-LN Transformer layers and (optionally) the pooler."""

    def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embeddings = BertEmbeddings(cfg, rngs)
        self.encoder = BertEncoder(cfg, rngs)
        self.pooler = BertPooler(cfg, rngs) if cfg.add_pooling_layer else None

    def __call__(
        self,
        input_ids_BxL,
        attention_mask_BxL,
        token_type_ids_BxL=None,
        *,
        rngs: nnx.Rngs | None = None,
        return_all_hidden: bool = False,
        positions_BxQ: jax.Array | None = None,
        position_ids_BxL: jax.Array | None = None,
    ) -> dict[str, Any]:
        """Returns ``last_hidden_state`` (float32), ``pooler_output`` and optionally all layers.

        ``rngs`` with a ``dropout`` stream turns dropout on; ``None`` is deterministic.
        ``positions_BxQ``: the last layer computes these positions alone (its keys and values
        still span the sequence), so ``last_hidden_state`` is ``[B, Q, D]``, those positions'
        states; the pooler reads the first of them, so put position 0 first when it is used.
        ``position_ids_BxL`` given: packed rows, whose ``attention_mask_BxL`` numbers the
        examples of each row (``layers.segment_mask``); attention never crosses them.
        """
        if token_type_ids_BxL is None:
            token_type_ids_BxL = jnp.zeros_like(input_ids_BxL)
        packed = position_ids_BxL is not None
        mask_BxL = layers.segment_mask(attention_mask_BxL) if packed else attention_mask_BxL > 0
        x_BxLxD = self.embeddings(
            input_ids_BxL, token_type_ids_BxL, rngs=rngs, position_ids_BxL=position_ids_BxL
        )
        x_BxLxD = constrain(x_BxLxD, ("batch", "length", "act_embed"))
        last = positions_BxQ
        hidden = self.encoder(x_BxLxD, mask_BxL, rngs=rngs, return_all=True, last_positions=last)
        out = {"last_hidden_state": hidden[-1]}
        if self.pooler is not None:
            out["pooler_output"] = self.pooler(hidden[-1])
        if return_all_hidden:
            out["hidden_states"] = hidden
        return out


class BertPredictionHeadTransform(nnx.Module):
    def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
        self.dense = dense(cfg, cfg.hidden_size, cfg.hidden_size, ("embed", None), rngs)
        self.LayerNorm = layer_norm(cfg, rngs)

    def __call__(self, x):
        return self.LayerNorm(gelu(self.dense(x)))


class BertLMPredictionHead(nnx.Module):
    """Transform, then the decoder tied to the word embeddings, plus its own bias."""

    def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        self.transform = BertPredictionHeadTransform(cfg, rngs)
        self.bias = nnx.Param(
            jnp.zeros((cfg.vocab_size,), jnp.float32), out_sharding=("vocab",), eager_sharding=False
        )

    def __call__(self, x_BxKxD, word_embeddings_VxD):
        h_BxKxD = self.transform(x_BxKxD).astype(self.cfg.jnp_dtype)
        logits_BxKxV = jnp.einsum(
            "bkd,vd->bkv",
            h_BxKxD,
            word_embeddings_VxD.astype(self.cfg.jnp_dtype),
            preferred_element_type=jnp.float32,
        )
        return constrain(add_bias(logits_BxKxV, self.bias[...]), ("batch", None, "act_vocab"))


class BertPreTrainingHeads(nnx.Module):
    """MLM head, plus HF's next-sentence head when ``cfg.next_sentence`` (HF's ``cls``)."""

    def __init__(self, cfg: BertConfig, rngs: nnx.Rngs):
        self.predictions = BertLMPredictionHead(cfg, rngs)
        if cfg.next_sentence:
            self.seq_relationship = dense(cfg, cfg.hidden_size, 2, ("embed", None), rngs)


class BertForMaskedLM(nnx.Module):
    """Encoder + MLM head evaluated only at gathered masked positions (HF's BertForMaskedLM;
    with ``cfg.next_sentence``, HF's BertForPreTraining)."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.bert = BertModel(cfg, rngs)
        self.cls = BertPreTrainingHeads(cfg, rngs)

    def __call__(self, *args, **kwargs) -> jax.Array:
        """MLM logits (float32) at ``masked_positions_BxK``, or at every position when None."""
        return self.pretraining(*args, **kwargs)[0]

    def pretraining(
        self, ids_BxL, mask_BxL, types_BxL=None, masked_positions_BxK=None, *, rngs=None
    ):
        """``(MLM logits, next-sentence logits [B, 2] or None)``, both float32."""
        # The last layer computes only what the loss reads: the masked positions (and position
        # 0 for the pooler), e.g. 608 of 4,096 rows at 15% masking.
        positions_BxQ = masked_positions_BxK
        with_first = masked_positions_BxK is not None and self.bert.pooler is not None
        if with_first:
            positions_BxQ = jnp.pad(masked_positions_BxK, ((0, 0), (1, 0)))  # position 0 first
        out = self.bert(ids_BxL, mask_BxL, types_BxL, rngs=rngs, positions_BxQ=positions_BxQ)
        x_BxLxD = out["last_hidden_state"][:, 1:] if with_first else out["last_hidden_state"]
        word_VxD = self.bert.embeddings.word_embeddings.embedding[...]
        nsp_Bx2 = None
        if self.cfg.next_sentence:
            nsp_Bx2 = self.cls.seq_relationship(out["pooler_output"]).astype(jnp.float32)
        return self.cls.predictions(x_BxLxD, word_VxD), nsp_Bx2


class BertForSequenceClassification(nnx.Module):
    """Pooled [CLS] -> dropout -> dense, as HF's BertForSequenceClassification."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.bert = BertModel(dataclasses.replace(cfg, add_pooling_layer=True), rngs)
        self.dropout_rate = cfg.hidden_dropout_prob
        self.classifier = dense(cfg, cfg.hidden_size, cfg.num_labels, ("embed", None), rngs)

    def __call__(
        self, input_ids_BxL, attention_mask_BxL, token_type_ids_BxL=None, *, rngs=None, **packed
    ):
        """Logits ``[B, num_labels]`` in float32; of packed rows (``position_ids_BxL`` and each
        example's [CLS] position, ``cls_positions_BxK``), ``[B, K, num_labels]``."""
        first_BxK = packed.pop("cls_positions_BxK", None)
        if first_BxK is None:  # one example a row: its [CLS], all the pooler reads
            first_BxK = jnp.zeros((input_ids_BxL.shape[0], 1), jnp.int32)
        inputs = (input_ids_BxL, attention_mask_BxL, token_type_ids_BxL)
        out = self.bert(*inputs, rngs=rngs, positions_BxQ=first_BxK, **packed)
        pooled_BxKxD = jnp.tanh(self.bert.pooler.dense(out["last_hidden_state"]))
        pooled_BxKxD = dropout(pooled_BxKxD, self.dropout_rate, rngs)
        logits_BxKxC = self.classifier(pooled_BxKxD).astype(jnp.float32)
        return logits_BxKxC if packed else logits_BxKxC[:, 0]


class BertForSentenceEmbedding(nnx.Module):
    """The last hidden states averaged over real tokens (sentence-transformers' pooling) of
    HF's BertModel without pooler: one float32 vector per text."""

    def __init__(self, cfg: BertConfig, *, rngs: nnx.Rngs):
        self.bert = BertModel(cfg, rngs)

    def __call__(
        self, input_ids_BxL, attention_mask_BxL, token_type_ids_BxL=None, *, rngs=None, **packed
    ):
        """``[B, D]``; of packed rows, ``[B, K, D]`` (K: ``cls_positions_BxK``'s slots)."""
        slots = packed.pop("cls_positions_BxK", None)
        out = self.bert(input_ids_BxL, attention_mask_BxL, token_type_ids_BxL, rngs=rngs, **packed)
        if slots is not None:
            return layers.segment_mean_pool(
                out["last_hidden_state"], attention_mask_BxL, slots.shape[1]
            )
        return mean_pool(out["last_hidden_state"], attention_mask_BxL)


class BertForTokenClassification(token_heads.TokenClassifier):
    """HF's BertForTokenClassification: dropout -> ``classifier`` at every position."""

    backbone, encoder = "bert", BertModel


class BertForQuestionAnswering(token_heads.SpanClassifier):
    """HF's BertForQuestionAnswering: ``qa_outputs`` (start, end) at every position."""

    backbone, encoder = "bert", BertModel


# --- The family interface (``models/__init__.py``): heads, config.json, parameter names.

# Shape fields, config.json's fields and constants, and both translations: bert_config.py.
SHAPE_FIELDS = bert_config.SHAPE_FIELDS
HF_FIELDS = bert_config.HF_FIELDS
HF_CONSTANTS = bert_config.HF_CONSTANTS
from_hf = bert_config.from_hf
hf_config = bert_config.hf_config
CONFIG = BertConfig
HEADS = {
    "mlm": BertForMaskedLM,
    "classification": BertForSequenceClassification,
    "embedding": BertForSentenceEmbedding,
    "token_classification": BertForTokenClassification,
    "question_answering": BertForQuestionAnswering,
}
ARCHITECTURES = {
    "mlm": "BertForMaskedLM",
    "classification": "BertForSequenceClassification",
    "embedding": "BertModel",
    "token_classification": "BertForTokenClassification",
    "question_answering": "BertForQuestionAnswering",
}
DEFAULT_HEAD = "mlm"  # a config.json without architectures
BACKBONE = "bert"  # the encoder's top-level name (bare BertModel checkpoints omit it)
# top-level names of checkpoint tensors: the encoder and the heads
TOP = ("bert", "cls", "classifier", "qa_outputs")
CLASSIFIER = "classifier"  # the label head: another label count starts it fresh
LAYER_NAME = re.compile(r"(bert\.encoder\.layer\.)(\d+)(\..*)")  # HF names in encoder layer i
EMBEDDINGS = ("bert.embeddings.",)  # HF name prefixes of the input embeddings
BUFFERS = re.compile(r"(.+\.)?(position_ids|token_type_ids)")  # in HF state dicts, not params
TIED = ("cls.predictions.decoder.weight", "cls.predictions.decoder.bias")  # word embeddings
TOKEN_IDS = {}  # config.json token ids besides pad_token_id: none


def build_model(cfg: BertConfig, head: str, seed: int) -> nnx.Module:
    """The model with ``head`` (``HEADS``), initialised from ``seed`` (call under jit or
    eval_shape to shard)."""
    return HEADS[head](cfg, rngs=nnx.Rngs(params=seed))


def architecture(head: str, cfg: BertConfig) -> str:
    """The transformers class an export with ``head`` loads as."""
    return "BertForPreTraining" if cfg.next_sentence else ARCHITECTURES[head]


def head_of(architecture_name: str) -> str:
    """The head a checkpoint of this transformers class has."""
    return token_heads.head_of(architecture_name)


def module_kind(name: str) -> str:
    """How the torch module called ``name`` stores its weight: ``norm`` (LayerNorm),
    ``embedding`` (nn.Embedding) or ``linear`` (nn.Linear, (out, in))."""
    if name == "LayerNorm":
        return "norm"
    return "embedding" if name.endswith("embeddings") else "linear"


def optional(path: tuple) -> bool:
    """Whether ``path`` is a head or the pooler: a checkpoint may lack it (MLM checkpoints have
    no pooler, and HF starts it fresh too), and another task's checkpoint may have it."""
    return path[0] != BACKBONE or path[1] == "pooler"
