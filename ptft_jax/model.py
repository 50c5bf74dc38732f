"""BERT in Flax NNX, computing exactly what Hugging Face's BertModel computes.

Module attribute names mirror Hugging Face parameter names one-to-one (``bert.encoder.layer.3.
attention.self.query`` here is ``bert.encoder.layer.3.attention.self.query`` there), so weight
conversion is a rename plus a transpose of dense kernels.

Dimension letters used in tensor names:
  B: batch, L: sequence length, K: masked positions per sequence (max_predictions_per_seq),
  D: hidden size, N: attention heads, H: head size, F: intermediate (MLP) size, V: vocab size.

Every parameter carries logical axis names (``embed``, ``vocab``, ``heads``, ``mlp``, ``norm``);
main activations are constrained with ``batch``, ``length``, ``act_*`` names. ``sharding.py``
maps them onto mesh axes; this file never names a mesh axis.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ptft_jax import ops
from ptft_jax.ops import add_bias, attention, constrain, dropout, gelu


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shape and numerics of a BERT model; field names are Hugging Face ``BertConfig``'s."""

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


def _init(init, names: tuple[str | None, ...]):
    # Eager sharding stays off: parameters are placed by jit(init, out_shardings=...) instead.
    return nnx.with_partitioning(init, names, eager_sharding=False)


def _param_init(cfg: ModelConfig, names: tuple[str | None, ...]):
    return _init(nnx.initializers.normal(cfg.initializer_range), names)


def dense(cfg: ModelConfig, d_in: int, d_out: int, names: tuple[str | None, str | None], rngs):
    """A Linear whose kernel is (in, out) with logical names and HF's normal(0.02) init."""
    return nnx.Linear(
        d_in,
        d_out,
        dtype=cfg.jnp_dtype,
        kernel_init=_param_init(cfg, names),
        bias_init=_init(nnx.initializers.zeros_init(), (names[1],)),
        rngs=rngs,
    )


def layer_norm(cfg: ModelConfig, rngs) -> nnx.LayerNorm:
    """LayerNorm with float32 statistics (flax reduces in float32 whatever the input dtype)."""
    return nnx.LayerNorm(
        cfg.hidden_size,
        epsilon=cfg.layer_norm_eps,
        dtype=cfg.jnp_dtype,
        scale_init=_init(nnx.initializers.ones_init(), ("norm",)),
        bias_init=_init(nnx.initializers.zeros_init(), ("norm",)),
        rngs=rngs,
    )


class BertEmbeddings(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        def embed(n, names):
            return nnx.Embed(
                n,
                cfg.hidden_size,
                dtype=cfg.jnp_dtype,
                embedding_init=_param_init(cfg, names),
                rngs=rngs,
            )

        self.word_embeddings = embed(cfg.vocab_size, ("vocab", "embed"))
        self.position_embeddings = embed(cfg.max_position_embeddings, (None, "embed"))
        self.token_type_embeddings = embed(cfg.type_vocab_size, (None, "embed"))
        self.LayerNorm = layer_norm(cfg, rngs)
        self.dropout_rate = cfg.hidden_dropout_prob

    def __call__(self, input_ids_BxL, token_type_ids_BxL, *, rngs=None):
        length = input_ids_BxL.shape[1]

        # FSDP: all-gather the tables before the lookups, so each lookup and its gradient
        # (reduce-scattered back by XLA) work on whole rows. The sum stays float32 (the tables'
        # dtype) until LayerNorm, which outputs model.dtype.
        def lookup(embed: nnx.Embed, ids):
            return jnp.take(constrain(embed.embedding[...], (None, None)), ids, axis=0)

        positions_L = jnp.arange(length)
        x_BxLxD = (
            lookup(self.word_embeddings, input_ids_BxL)
            + lookup(self.position_embeddings, positions_L)[None]
            + lookup(self.token_type_embeddings, token_type_ids_BxL)
        )
        x_BxLxD = constrain(x_BxLxD, ("batch", "length", "act_embed"))
        x_BxLxD = self.LayerNorm(x_BxLxD)
        return dropout(x_BxLxD, self.dropout_rate, rngs)


class BertSelfAttention(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
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
    def __init__(self, cfg: ModelConfig, d_in: int, names, rngs: nnx.Rngs):
        self.dense = dense(cfg, d_in, cfg.hidden_size, names, rngs)
        self.LayerNorm = layer_norm(cfg, rngs)
        self.dropout_rate = cfg.hidden_dropout_prob

    def __call__(self, h, residual_BxLxD, *, rngs=None):
        h_BxLxD = dropout(self.dense(h), self.dropout_rate, rngs)
        return self.LayerNorm(h_BxLxD + residual_BxLxD)


class BertAttention(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.self = BertSelfAttention(cfg, rngs)
        self.output = BertSelfOutput(cfg, cfg.hidden_size, ("heads", "embed"), rngs)

    def __call__(self, x_BxLxD, mask_BxL, *, rngs=None, positions_BxQ=None):
        at = positions_BxQ is not None
        x_BxQxD = jnp.take_along_axis(x_BxLxD, positions_BxQ[..., None], 1) if at else x_BxLxD
        h_BxQxD = self.self(x_BxQxD, x_BxLxD, mask_BxL, rngs=rngs)
        return self.output(h_BxQxD, x_BxQxD, rngs=rngs)


class BertIntermediate(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.dense = dense(cfg, cfg.hidden_size, cfg.intermediate_size, ("embed", "mlp"), rngs)

    def __call__(self, x_BxLxD):
        return constrain(gelu(self.dense(x_BxLxD)), ("batch", "length", "act_mlp"))


class BertLayer(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.attention = BertAttention(cfg, rngs)
        self.intermediate = BertIntermediate(cfg, rngs)
        self.output = BertSelfOutput(cfg, cfg.intermediate_size, ("mlp", "embed"), rngs)

    def __call__(self, x_BxLxD, mask_BxL, *, rngs=None, positions_BxQ=None):
        """Outputs at ``positions_BxQ`` (every position when None); keys span them all."""
        a_BxLxD = self.attention(x_BxLxD, mask_BxL, rngs=rngs, positions_BxQ=positions_BxQ)
        out_BxLxD = self.output(self.intermediate(a_BxLxD), a_BxLxD, rngs=rngs)
        return constrain(out_BxLxD, ("batch", "length", "act_embed"))


class BertEncoder(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.layer = nnx.List([BertLayer(cfg, rngs) for _ in range(cfg.num_hidden_layers)])
        self.remat = cfg.remat
        self.policy = ops.REMAT_POLICIES[cfg.remat_policy]

    def __call__(self, x_BxLxD, mask_BxL, *, rngs=None, return_all=False, last_positions=None):
        """``last_positions`` ``[B, Q]``: the last layer computes those positions only (what a
        pooled classifier or the MLM head reads), skipping most of that layer's work."""
        hidden = [x_BxLxD]
        # Unrolled on purpose: on one GPU a Python loop over layers measured faster than scan.
        for i, layer in enumerate(self.layer):
            q = last_positions if i == len(self.layer) - 1 else None

            def call(m, x, mask, r, q=q):
                return m(x, mask, rngs=r, positions_BxQ=q)

            call = nnx.remat(call, policy=self.policy) if self.remat else call  # backward reruns
            hidden.append(call(layer, hidden[-1], mask_BxL, rngs))
        return hidden if return_all else hidden[-1]


class BertPooler(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.dense = dense(cfg, cfg.hidden_size, cfg.hidden_size, ("embed", None), rngs)

    def __call__(self, x_BxLxD):
        return jnp.tanh(self.dense(x_BxLxD[:, 0]))


class BertModel(nnx.Module):
    """The encoder: embeddings, post-LN Transformer layers and (optionally) the pooler."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
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
    ) -> dict[str, Any]:
        """Returns ``last_hidden_state`` (float32), ``pooler_output`` and optionally all layers.

        ``rngs`` with a ``dropout`` stream turns dropout on; ``None`` is deterministic.
        ``positions_BxQ``: the last layer computes these positions alone (its keys and values
        still span the sequence), so ``last_hidden_state`` is ``[B, Q, D]``, those positions'
        states; the pooler reads the first of them, so put position 0 first when it is used.
        """
        if token_type_ids_BxL is None:
            token_type_ids_BxL = jnp.zeros_like(input_ids_BxL)
        mask_BxL = attention_mask_BxL.astype(jnp.bool_)
        x_BxLxD = self.embeddings(input_ids_BxL, token_type_ids_BxL, rngs=rngs)
        x_BxLxD = constrain(x_BxLxD, ("batch", "length", "act_embed"))
        hidden = self.encoder(
            x_BxLxD,
            mask_BxL,
            rngs=rngs,
            return_all=True,
            last_positions=positions_BxQ,
        )
        out = {"last_hidden_state": hidden[-1]}
        if self.pooler is not None:
            out["pooler_output"] = self.pooler(hidden[-1])
        if return_all_hidden:
            out["hidden_states"] = hidden
        return out


class BertPredictionHeadTransform(nnx.Module):
    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.dense = dense(cfg, cfg.hidden_size, cfg.hidden_size, ("embed", None), rngs)
        self.LayerNorm = layer_norm(cfg, rngs)

    def __call__(self, x):
        return self.LayerNorm(gelu(self.dense(x)))


class BertLMPredictionHead(nnx.Module):
    """Transform, then the decoder tied to the word embeddings, plus its own bias."""

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
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

    def __init__(self, cfg: ModelConfig, rngs: nnx.Rngs):
        self.predictions = BertLMPredictionHead(cfg, rngs)
        if cfg.next_sentence:
            self.seq_relationship = dense(cfg, cfg.hidden_size, 2, ("embed", None), rngs)


class BertForMaskedLM(nnx.Module):
    """Encoder + MLM head evaluated only at gathered masked positions (HF's BertForMaskedLM;
    with ``cfg.next_sentence``, HF's BertForPreTraining)."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
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

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.bert = BertModel(dataclasses.replace(cfg, add_pooling_layer=True), rngs)
        self.dropout_rate = cfg.hidden_dropout_prob
        self.classifier = dense(cfg, cfg.hidden_size, cfg.num_labels, ("embed", None), rngs)

    def __call__(self, input_ids_BxL, attention_mask_BxL, token_type_ids_BxL=None, *, rngs=None):
        """Logits ``[B, num_labels]`` in float32."""
        first_Bx1 = jnp.zeros((input_ids_BxL.shape[0], 1), jnp.int32)  # all the pooler reads
        inputs = (input_ids_BxL, attention_mask_BxL, token_type_ids_BxL)
        pooled_BxD = self.bert(*inputs, rngs=rngs, positions_BxQ=first_Bx1)["pooler_output"]
        pooled_BxD = dropout(pooled_BxD, self.dropout_rate, rngs)
        return self.classifier(pooled_BxD).astype(jnp.float32)


class BertForSentenceEmbedding(nnx.Module):
    """The last hidden states averaged over real tokens (sentence-transformers' pooling) of
    HF's BertModel without pooler: one float32 vector per text."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        self.bert = BertModel(cfg, rngs)

    def __call__(self, input_ids_BxL, attention_mask_BxL, token_type_ids_BxL=None, *, rngs=None):
        out = self.bert(input_ids_BxL, attention_mask_BxL, token_type_ids_BxL, rngs=rngs)
        mask_BxL = attention_mask_BxL.astype(jnp.float32)
        sum_BxD = jnp.einsum("bld,bl->bd", out["last_hidden_state"].astype(jnp.float32), mask_BxL)
        return sum_BxD / jnp.maximum(mask_BxL.sum(-1, keepdims=True), 1.0)


MODELS = {
    "mlm": BertForMaskedLM,
    "classification": BertForSequenceClassification,
    "contrastive": BertForSentenceEmbedding,
}


def build_model(cfg: ModelConfig, task: str, seed: int) -> nnx.Module:
    """The model for ``task``, initialised from ``seed`` (call under jit/eval_shape to shard)."""
    return MODELS[task](cfg, rngs=nnx.Rngs(params=seed))
