"""RoBERTa in Flax NNX, computing exactly what Hugging Face's RobertaModel computes.

RoBERTa is BERT's post-LN encoder with fairseq's position numbers: a real token's position id
counts the real tokens up to it from ``pad_token_id + 1`` (padding sits at ``pad_token_id``),
so a 512-token input needs 514 position embeddings. Its heads differ from BERT's: the MLM head
(``lm_head``) keeps its dense and LayerNorm at its top level, and the classifier
(``classifier.dense -> tanh -> classifier.out_proj``) reads the first token's state itself, with
no pooler in between. The encoder's modules and names are BERT's (``roberta.encoder.layer.3.
attention.self.query`` here and there), so this file reuses ``bert.py``'s and adds only what
differs. There is no next-sentence head.

Tensor names carry their dimension letters and every parameter its logical axes, as
``models/__init__.py`` describes; this file never names a mesh axis.
"""

from __future__ import annotations

import dataclasses
import re

import jax.numpy as jnp
from flax import nnx

from ptft_jax.errors import ConfigError
from ptft_jax.models import bert, layers, token_heads
from ptft_jax.models.config_json import read_fields
from ptft_jax.models.layers import dense, layer_norm
from ptft_jax.ops import dropout, gelu


@dataclasses.dataclass(frozen=True)
class RobertaConfig(bert.BertConfig):
    """Shape and numerics of a RoBERTa model (``roberta-base``'s by default); field names are
    Hugging Face ``RobertaConfig``'s. The numerics fields are ``BertConfig``'s."""

    family: str = "roberta"
    vocab_size: int = 50265
    max_position_embeddings: int = 514  # pad_token_id + 1 + the longest input
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1  # padding_idx: real tokens' positions start one above it
    classifier_dropout: float | None = None  # None: hidden_dropout_prob


class RobertaEmbeddings(bert.BertEmbeddings):
    """BERT's embeddings at RoBERTa's position ids (HF's ``create_position_ids_from_input_ids``:
    ``cumsum(real) * real + pad_token_id``, where ``real`` marks ids other than the pad id)."""

    def __init__(self, cfg: RobertaConfig, rngs: nnx.Rngs):
        super().__init__(cfg, rngs)
        self.padding_idx = cfg.pad_token_id
        self.max_positions = cfg.max_position_embeddings

    def __call__(self, input_ids_BxL, token_type_ids_BxL, *, rngs=None, position_ids_BxL=None):
        length = input_ids_BxL.shape[1]
        if length + self.padding_idx + 1 > self.max_positions:  # the lookup would return NaNs
            fix = "shorten data.max_seq_length or raise model.max_position_embeddings"
            if position_ids_BxL is not None:  # packed: bounds every example by the row's length
                fix += ", or set data.packing=False"
            raise ConfigError(
                f"RoBERTa numbers positions from pad_token_id + 1 = {self.padding_idx + 1}, so "
                f"rows of {length} tokens need max_position_embeddings >= "
                f"{length + self.padding_idx + 1} (it is {self.max_positions}); {fix}."
            )
        if position_ids_BxL is None:
            real_BxL = (input_ids_BxL != self.padding_idx).astype(jnp.int32)
            position_ids_BxL = jnp.cumsum(real_BxL, axis=1) * real_BxL + self.padding_idx
        else:  # packed rows number each example from 0: its first token is padding_idx + 1
            position_ids_BxL = position_ids_BxL + (self.padding_idx + 1)
        return super().__call__(
            input_ids_BxL, token_type_ids_BxL, rngs=rngs, position_ids_BxL=position_ids_BxL
        )


class RobertaModel(bert.BertModel):
    """BERT's encoder (``BertModel.__call__``: its inputs, outputs, packed rows) with RoBERTa's
    embeddings; the pooler only with ``cfg.add_pooling_layer`` (HF's bare RobertaModel)."""

    def __init__(self, cfg: RobertaConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embeddings = RobertaEmbeddings(cfg, rngs)
        self.encoder = bert.BertEncoder(cfg, rngs)
        self.pooler = bert.BertPooler(cfg, rngs) if cfg.add_pooling_layer else None


class RobertaLMHead(bert.BertLMPredictionHead):
    """BERT's MLM head (``dense -> gelu -> LayerNorm``, then the decoder tied to the word
    embeddings plus its own bias), its transform's parts named as HF's RobertaLMHead names
    them: ``lm_head.dense``, ``lm_head.layer_norm``, ``lm_head.bias``."""

    def __init__(self, cfg: RobertaConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        self.dense = dense(cfg, cfg.hidden_size, cfg.hidden_size, ("embed", None), rngs)
        self.layer_norm = layer_norm(cfg, rngs)
        self.bias = nnx.Param(
            jnp.zeros((cfg.vocab_size,), jnp.float32), out_sharding=("vocab",), eager_sharding=False
        )

    def transform(self, x_BxKxD):
        """What ``BertLMPredictionHead.__call__`` applies before the decoder."""
        return self.layer_norm(gelu(self.dense(x_BxKxD)))


class RobertaForMaskedLM(nnx.Module):
    """Encoder (no pooler) + MLM head evaluated only at gathered masked positions (HF's
    RobertaForMaskedLM)."""

    def __init__(self, cfg: RobertaConfig, *, rngs: nnx.Rngs):
        if cfg.next_sentence:
            raise ConfigError(
                "RoBERTa has no next-sentence head; drop 'nsp' from train.objectives."
            )
        self.cfg = cfg
        self.roberta = RobertaModel(dataclasses.replace(cfg, add_pooling_layer=False), rngs)
        self.lm_head = RobertaLMHead(cfg, rngs)

    def __call__(self, *args, **kwargs):
        """MLM logits (float32) at ``masked_positions_BxK``, or at every position when None."""
        return self.pretraining(*args, **kwargs)[0]

    def pretraining(
        self, ids_BxL, mask_BxL, types_BxL=None, masked_positions_BxK=None, *, rngs=None
    ):
        """``(MLM logits, None)``: BERT's ``pretraining`` without a next-sentence head."""
        # The last layer computes only the masked positions, all the head reads.
        out = self.roberta(
            ids_BxL, mask_BxL, types_BxL, rngs=rngs, positions_BxQ=masked_positions_BxK
        )
        word_VxD = self.roberta.embeddings.word_embeddings.embedding[...]
        return self.lm_head(out["last_hidden_state"], word_VxD), None


class RobertaClassificationHead(nnx.Module):
    """HF's RobertaClassificationHead on given states: dropout -> dense -> tanh -> dropout ->
    out_proj (``classifier_dropout``, else ``hidden_dropout_prob``)."""

    def __init__(self, cfg: RobertaConfig, rngs: nnx.Rngs):
        d = cfg.hidden_size
        self.dense = dense(cfg, d, d, ("embed", None), rngs)
        self.out_proj = dense(cfg, d, cfg.num_labels, ("embed", None), rngs)
        rate = cfg.classifier_dropout
        self.dropout_rate = cfg.hidden_dropout_prob if rate is None else rate

    def __call__(self, x_BxKxD, *, rngs=None):
        h_BxKxD = jnp.tanh(self.dense(dropout(x_BxKxD, self.dropout_rate, rngs)))
        h_BxKxD = dropout(h_BxKxD, self.dropout_rate, rngs)
        return self.out_proj(h_BxKxD).astype(jnp.float32)


class RobertaForSequenceClassification(nnx.Module):
    """The first token's (``<s>``) final state -> the classification head, as HF's
    RobertaForSequenceClassification (no pooler, whatever ``cfg.add_pooling_layer`` says)."""

    def __init__(self, cfg: RobertaConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.roberta = RobertaModel(dataclasses.replace(cfg, add_pooling_layer=False), rngs)
        self.classifier = RobertaClassificationHead(cfg, rngs)

    def __call__(
        self, input_ids_BxL, attention_mask_BxL, token_type_ids_BxL=None, *, rngs=None, **packed
    ):
        """Logits ``[B, num_labels]`` in float32; of packed rows (``position_ids_BxL`` and each
        example's ``<s>`` position, ``cls_positions_BxK``), ``[B, K, num_labels]``."""
        first_BxK = packed.pop("cls_positions_BxK", None)
        if first_BxK is None:  # one example a row: its <s>, all the head reads
            first_BxK = jnp.zeros((input_ids_BxL.shape[0], 1), jnp.int32)
        inputs = (input_ids_BxL, attention_mask_BxL, token_type_ids_BxL)
        out = self.roberta(*inputs, rngs=rngs, positions_BxQ=first_BxK, **packed)
        logits_BxKxC = self.classifier(out["last_hidden_state"], rngs=rngs)
        return logits_BxKxC if packed else logits_BxKxC[:, 0]


class RobertaForSentenceEmbedding(nnx.Module):
    """The last hidden states averaged over real tokens (sentence-transformers' pooling) of
    HF's RobertaModel: one float32 vector per text."""

    def __init__(self, cfg: RobertaConfig, *, rngs: nnx.Rngs):
        self.roberta = RobertaModel(dataclasses.replace(cfg, add_pooling_layer=False), rngs)

    def __call__(
        self, input_ids_BxL, attention_mask_BxL, token_type_ids_BxL=None, *, rngs=None, **packed
    ):
        """``[B, D]``; of packed rows, ``[B, K, D]`` (K: ``cls_positions_BxK``'s slots)."""
        slots = packed.pop("cls_positions_BxK", None)
        inputs = (input_ids_BxL, attention_mask_BxL, token_type_ids_BxL)
        hidden_BxLxD = self.roberta(*inputs, rngs=rngs, **packed)["last_hidden_state"]
        if slots is not None:
            return layers.segment_mean_pool(hidden_BxLxD, attention_mask_BxL, slots.shape[1])
        return layers.mean_pool(hidden_BxLxD, attention_mask_BxL)


class RobertaForTokenClassification(token_heads.TokenClassifier):
    """HF's RobertaForTokenClassification: dropout -> ``classifier`` at every position."""

    backbone, encoder = "roberta", RobertaModel


class RobertaForQuestionAnswering(token_heads.SpanClassifier):
    """HF's RobertaForQuestionAnswering: ``qa_outputs`` (start, end) at every position."""

    backbone, encoder = "roberta", RobertaModel


# --- The family interface (``models/__init__.py``): heads, config.json, parameter names.

SHAPE_FIELDS = bert.SHAPE_FIELDS  # the fields that decide parameter shapes
# config.json fields read and written as they are: BERT's, the pad id the positions count
# from, and the classifier's dropout (null: hidden_dropout_prob).
HF_FIELDS = (*bert.HF_FIELDS, "pad_token_id", "classifier_dropout")
# transformers' RobertaConfig defaults where they are not ours (roberta-base's): what it
# computes from a config.json that lacks the key.
HF_DEFAULTS = {"max_position_embeddings": 512, "type_vocab_size": 2, "layer_norm_eps": 1e-12}
CONFIG = RobertaConfig
HEADS = {
    "mlm": RobertaForMaskedLM,
    "classification": RobertaForSequenceClassification,
    "embedding": RobertaForSentenceEmbedding,
    "token_classification": RobertaForTokenClassification,
    "question_answering": RobertaForQuestionAnswering,
}
ARCHITECTURES = {
    "mlm": "RobertaForMaskedLM",
    "classification": "RobertaForSequenceClassification",
    "embedding": "RobertaModel",
    "token_classification": "RobertaForTokenClassification",
    "question_answering": "RobertaForQuestionAnswering",
}
DEFAULT_HEAD = "mlm"  # a config.json without architectures
# config.json values this family computes: checked on import, written on export (a decoder,
# RobertaForCausalLM's is_decoder=True, attends causally: not this encoder).
HF_CONSTANTS = {
    "model_type": "roberta",
    "hidden_act": "gelu",
    "position_embedding_type": "absolute",
    "is_decoder": False,
    "add_cross_attention": False,
}
BACKBONE = "roberta"  # the encoder's top-level name (bare RobertaModel checkpoints omit it)
TOP = ("roberta", "lm_head", "classifier", "qa_outputs")  # top-level names of checkpoint tensors
CLASSIFIER = "classifier"  # the label head: another label count starts it fresh
LAYER_NAME = re.compile(r"(roberta\.encoder\.layer\.)(\d+)(\..*)")  # HF names in encoder layer i
EMBEDDINGS = ("roberta.embeddings.",)  # HF name prefixes of the input embeddings
BUFFERS = bert.BUFFERS  # embeddings.position_ids and token_type_ids: in HF state dicts only
TIED = ("lm_head.decoder.weight", "lm_head.decoder.bias")  # word embeddings, lm_head.bias
# config.json token ids -> the tokenizer's attribute holding each: <s> and </s>
TOKEN_IDS = {"bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id"}
TOKENIZER = "roberta_bpe"  # what data.tokenizer='' trains for an encoder task: RoBERTa's BPE


def build_model(cfg: RobertaConfig, head: str, seed: int) -> nnx.Module:
    """The model with ``head`` (``HEADS``), initialised from ``seed`` (call under jit or
    eval_shape to shard)."""
    return HEADS[head](cfg, rngs=nnx.Rngs(params=seed))


def architecture(head: str, cfg: RobertaConfig) -> str:
    """The transformers class an export with ``head`` loads as."""
    return ARCHITECTURES[head]


def head_of(architecture_name: str) -> str:
    """The head a checkpoint of this transformers class has."""
    return token_heads.head_of(architecture_name)


def module_kind(name: str) -> str:
    """How the torch module called ``name`` stores its weight: ``norm`` (``LayerNorm``,
    ``lm_head.layer_norm``), ``embedding`` (nn.Embedding) or ``linear`` (nn.Linear,
    (out, in))."""
    if name in ("LayerNorm", "layer_norm"):
        return "norm"
    return "embedding" if name.endswith("embeddings") else "linear"


def optional(path: tuple) -> bool:
    """Whether ``path`` is a head or the pooler: a checkpoint may lack it (only a bare
    RobertaModel has a pooler, and no head here reads it), and another task's may have it."""
    return path[0] != BACKBONE or path[1] == "pooler"


def from_hf(hf: dict, where) -> dict:
    """Our fields from a config.json dict (``where``: the file): HF_FIELDS as they are, and
    transformers' defaults for those it lacks."""
    defaults = {f.name: f.default for f in dataclasses.fields(RobertaConfig)}
    fields = {k: defaults[k] for k in HF_FIELDS} | HF_DEFAULTS
    integers = (*SHAPE_FIELDS, "pad_token_id")
    names = {k: k for k in HF_FIELDS}
    return fields | read_fields(hf, names, integers, where, nullable=("classifier_dropout",))


def hf_config(fields: dict) -> dict:
    """The family's part of an exported config.json (``fields``: the model's config)."""
    return {
        **HF_CONSTANTS,
        **{k: fields[k] for k in HF_FIELDS},
        "initializer_range": fields.get("initializer_range", 0.02),
    }
