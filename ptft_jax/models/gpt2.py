"""GPT-2 in Flax NNX, computing exactly what Hugging Face's GPT2Model computes.

Module attribute names mirror Hugging Face parameter names one-to-one (``transformer.h.3.attn.
c_attn`` here is ``transformer.h.3.attn.c_attn`` there). GPT-2's Conv1D layers store their
weight (in, out), as our kernels do, so conversion is a rename without transposes, except for
the classifier ``score`` (a torch nn.Linear, (out, in)). The LM head is the word embedding
table itself (tied), so it has no parameter of its own.

The config (``GPT2Config``: BERT's field names where they mean the same, ``hidden_size`` for
HF's ``n_embd``) and its config.json translations live in ``gpt2_config.py``. Tensor names carry
their dimension letters and every parameter its logical axes, as ``models/__init__.py``
describes. The ``cached`` methods run the decoder over a key/value cache (``empty_cache``) for
generation.
"""

from __future__ import annotations

import math
import re
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ptft_jax import ops
from ptft_jax.models import gpt2_config, layers
from ptft_jax.models.gpt2_config import GPT2Config
from ptft_jax.models.layers import dense, embed, layer_norm, lookup, run_layers
from ptft_jax.ops import attention, constrain, dropout


class GPT2Attention(nnx.Module):
    def __init__(self, cfg: GPT2Config, rngs: nnx.Rngs):
        self.cfg = cfg
        d = cfg.hidden_size
        # The fused [q | k | v] output is not split over the tensor axis: equal blocks of it
        # would put one device's query heads with other heads' keys and values. Each of q, k
        # and v is split by heads right after (act_heads), a local slice of a replicated dim.
        self.c_attn = dense(cfg, d, 3 * d, ("embed", None), rngs)
        # HF scales the residual projections' init by 1/sqrt(2 * layers) (GPT-2 paper).
        std = cfg.initializer_range / math.sqrt(2 * cfg.num_hidden_layers)
        self.c_proj = dense(cfg, d, d, ("heads", "embed"), rngs, std=std)

    def __call__(self, h_BxLxD, mask_BxQxL, *, rngs=None, positions_BxQ=None):
        """Attention outputs at ``positions_BxQ`` (every position when None)."""
        cfg = self.cfg
        heads = (cfg.num_attention_heads, cfg.head_dim)
        names = ("batch", "length", "act_heads", None)
        q_BxLxD, k_BxLxD, v_BxLxD = jnp.split(self.c_attn(h_BxLxD), 3, axis=-1)
        q_BxQxD = q_BxLxD if positions_BxQ is None else layers.at_positions(q_BxLxD, positions_BxQ)
        q_BxQxNxH = constrain(q_BxQxD.reshape(*q_BxQxD.shape[:2], *heads), names)
        k_BxLxNxH = constrain(k_BxLxD.reshape(*k_BxLxD.shape[:2], *heads), names)
        v_BxLxNxH = constrain(v_BxLxD.reshape(*v_BxLxD.shape[:2], *heads), names)
        out_BxQxNxH = attention(
            q_BxQxNxH,
            k_BxLxNxH,
            v_BxLxNxH,
            mask_BxQxL,
            implementation=ops.attention_implementation(cfg.attention, cfg.dtype, cfg.head_dim),
            dropout_rate=cfg.attention_probs_dropout_prob,
            rngs=rngs,
        )
        out_BxQxD = self.c_proj(out_BxQxNxH.reshape(*q_BxQxD.shape[:2], cfg.hidden_size))
        return dropout(out_BxQxD, cfg.hidden_dropout_prob, rngs)

    def cached(self, h_BxQxD, start_B, k_BxMxNxH, v_BxMxNxH):
        """Attention of Q new tokens at positions ``start_B + 0..Q-1`` over a key/value cache
        ``[B, M, N, H]`` that first takes their keys and values; returns (out, keys, values)."""
        heads = (*h_BxQxD.shape[:2], self.cfg.num_attention_heads, self.cfg.head_dim)
        qkv = [x.reshape(heads) for x in jnp.split(self.c_attn(h_BxQxD), 3, axis=-1)]
        out_BxQxNxH, k_BxMxNxH, v_BxMxNxH = layers.attend_cached(
            *qkv, start_B, k_BxMxNxH, v_BxMxNxH
        )
        return self.c_proj(out_BxQxNxH.reshape(h_BxQxD.shape)), k_BxMxNxH, v_BxMxNxH


class GPT2MLP(nnx.Module):
    def __init__(self, cfg: GPT2Config, rngs: nnx.Rngs):
        d, f = cfg.hidden_size, cfg.intermediate_size
        self.c_fc = dense(cfg, d, f, ("embed", "mlp"), rngs)
        std = cfg.initializer_range / math.sqrt(2 * cfg.num_hidden_layers)
        self.c_proj = dense(cfg, f, d, ("mlp", "embed"), rngs, std=std)
        self.dropout_rate = cfg.hidden_dropout_prob

    def __call__(self, h_BxLxD, *, rngs=None):
        # HF's gelu_new: the tanh approximation of GELU.
        a_BxLxF = jax.nn.gelu(self.c_fc(h_BxLxD), approximate=True)
        a_BxLxF = constrain(a_BxLxF, ("batch", "length", "act_mlp"))
        return dropout(self.c_proj(a_BxLxF), self.dropout_rate, rngs)


class GPT2Block(nnx.Module):
    """Pre-LayerNorm: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))``."""

    def __init__(self, cfg: GPT2Config, rngs: nnx.Rngs):
        self.ln_1 = layer_norm(cfg, rngs)
        self.attn = GPT2Attention(cfg, rngs)
        self.ln_2 = layer_norm(cfg, rngs)
        self.mlp = GPT2MLP(cfg, rngs)

    def __call__(self, x_BxLxD, mask_BxLxL, *, rngs=None, positions_BxQ=None):
        """Outputs at ``positions_BxQ`` (every position when None); keys span them all."""
        x_BxQxD, mask_BxQxL = x_BxLxD, mask_BxLxL
        if positions_BxQ is not None:
            x_BxQxD, mask_BxQxL = (
                layers.at_positions(x_BxLxD, positions_BxQ),
                layers.at_positions(mask_BxLxL, positions_BxQ),
            )
        a_BxQxD = self.attn(self.ln_1(x_BxLxD), mask_BxQxL, rngs=rngs, positions_BxQ=positions_BxQ)
        # The residual stream keeps the embeddings' dtype (float32) under 16-bit matmuls.
        x_BxQxD = x_BxQxD + a_BxQxD
        x_BxQxD = x_BxQxD + self.mlp(self.ln_2(x_BxQxD), rngs=rngs)
        return constrain(x_BxQxD, ("batch", "length", "act_embed"))

    def cached(self, x_BxQxD, start_B, k_BxMxNxH, v_BxMxNxH):
        """``__call__`` (no dropout) of Q new tokens over a key/value cache
        (``GPT2Attention.cached``); returns (outputs, keys, values)."""
        a_BxQxD, k_BxMxNxH, v_BxMxNxH = self.attn.cached(
            self.ln_1(x_BxQxD), start_B, k_BxMxNxH, v_BxMxNxH
        )
        x_BxQxD = x_BxQxD + a_BxQxD
        return x_BxQxD + self.mlp(self.ln_2(x_BxQxD)), k_BxMxNxH, v_BxMxNxH


class GPT2Model(nnx.Module):
    """Token and learned position embeddings, causal pre-LN blocks, a final LayerNorm."""

    def __init__(self, cfg: GPT2Config, rngs: nnx.Rngs):
        self.cfg = cfg
        self.wte = embed(cfg, cfg.vocab_size, ("vocab", "embed"), rngs)
        self.wpe = embed(cfg, cfg.max_position_embeddings, (None, "embed"), rngs)
        self.h = nnx.List([GPT2Block(cfg, rngs) for _ in range(cfg.num_hidden_layers)])
        self.ln_f = layer_norm(cfg, rngs)

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
        """Returns ``last_hidden_state`` (after ``ln_f``) and optionally ``hidden_states``: the
        embeddings and each block's output (before ``ln_f``).

        ``token_type_ids_BxL`` is ignored: GPT-2 has no segment embeddings (HF would add word
        embedding rows for them). ``rngs`` with a ``dropout`` stream turns dropout on.
        ``positions_BxQ``: the last block computes these positions alone, so
        ``last_hidden_state`` is ``[B, Q, D]``. ``position_ids_BxL`` (default 0, 1, ...: HF's,
        whatever the padding) given: packed rows, whose ``attention_mask_BxL`` numbers the
        examples of each row; attention never crosses them.
        """
        del token_type_ids_BxL
        if position_ids_BxL is None:
            position_ids_BxL = jnp.arange(input_ids_BxL.shape[1])[None]
        # Sum in float32 (the tables' dtype): the residual stream stays float32.
        x_BxLxD = lookup(self.wte, input_ids_BxL) + lookup(self.wpe, position_ids_BxL)
        x_BxLxD = constrain(x_BxLxD, ("batch", "length", "act_embed"))
        x_BxLxD = dropout(x_BxLxD, self.cfg.hidden_dropout_prob, rngs)
        hidden = run_layers(
            self.h,
            x_BxLxD,
            layers.causal_mask(attention_mask_BxL),
            rngs,
            remat=self.cfg.remat,
            policy=self.cfg.remat_policy,
            last_positions=positions_BxQ,
        )
        out = {"last_hidden_state": self.ln_f(hidden[-1])}
        if return_all_hidden:
            out["hidden_states"] = hidden
        return out

    def cached(self, input_ids_BxQ, start_B, cache: dict) -> tuple[jax.Array, dict]:
        """``last_hidden_state`` of Q new tokens at positions ``start_B + 0..Q-1`` of each row,
        each attending to its row's cached positions up to its own; their keys and values go
        into ``cache`` (``empty_cache``), which is returned updated."""
        positions_BxQ = start_B[:, None] + jnp.arange(input_ids_BxQ.shape[1])
        x_BxQxD = lookup(self.wte, input_ids_BxQ) + lookup(self.wpe, positions_BxQ)
        x_BxQxD, cache = layers.run_cached(self.h, x_BxQxD, start_B, cache)
        return self.ln_f(x_BxQxD), cache


class GPT2LMHeadModel(nnx.Module):
    """The decoder and next-token logits from the tied word embeddings (HF's GPT2LMHeadModel)."""

    def __init__(self, cfg: GPT2Config, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.transformer = GPT2Model(cfg, rngs)

    def __call__(
        self,
        input_ids_BxL,
        attention_mask_BxL,
        token_type_ids_BxL=None,
        *,
        rngs=None,
        position_ids_BxL=None,
    ) -> jax.Array:
        """Float32 logits ``[B, L, V]``: at position i, the scores of the token at i + 1.
        ``position_ids_BxL`` given: packed rows (``GPT2Model``)."""
        out = self.transformer(
            input_ids_BxL, attention_mask_BxL, rngs=rngs, position_ids_BxL=position_ids_BxL
        )
        return self.logits(out["last_hidden_state"])

    def logits(self, hidden_BxLxD) -> jax.Array:
        """Float32 next-token logits ``[B, L, V]`` of final hidden states (after ``ln_f``)."""
        dtype = self.cfg.jnp_dtype
        logits_BxLxV = jnp.einsum(
            "bld,vd->blv",
            hidden_BxLxD.astype(dtype),
            self.transformer.wte.embedding[...].astype(dtype),
            preferred_element_type=jnp.float32,
        )
        return constrain(logits_BxLxV, ("batch", "length", "act_vocab"))

    def cached(self, input_ids_BxQ, start_B, cache: dict, at_BxK=None) -> tuple[jax.Array, dict]:
        """Logits of Q new tokens over a key/value cache (``GPT2Model.cached``), only at their
        indices ``at_BxK`` when given (a prefill needs each row's last); returns (logits,
        cache)."""
        hidden_BxQxD, cache = self.transformer.cached(input_ids_BxQ, start_B, cache)
        if at_BxK is not None:
            hidden_BxQxD = layers.at_positions(hidden_BxQxD, at_BxK)
        return self.logits(hidden_BxQxD), cache


class GPT2ForSequenceClassification(nnx.Module):
    """A bias-free ``score`` on the state at each example's last token, as HF's
    GPT2ForSequenceClassification. HF finds that token as the rightmost id that is not its
    config's ``pad_token_id`` (an export writes the tokenizer's pad id there: GPT-2's
    ``<|endoftext|>``); ours is the last position the mask holds. They are the same token on
    right- and left-padded rows whose last real token is not the pad id (the classification
    task stops at a text that ends with it)."""

    def __init__(self, cfg: GPT2Config, *, rngs: nnx.Rngs):
        self.transformer = GPT2Model(cfg, rngs)
        self.score = dense(cfg, cfg.hidden_size, cfg.num_labels, ("embed", None), rngs, bias=False)

    def __call__(
        self,
        input_ids_BxL,
        attention_mask_BxL,
        token_type_ids_BxL=None,
        *,
        rngs=None,
        position_ids_BxL=None,
        cls_positions_BxK=None,
    ) -> jax.Array:
        """Logits ``[B, num_labels]`` in float32; of packed rows (``position_ids_BxL`` and
        ``cls_positions_BxK``, whose shape alone counts: K example slots a row),
        ``[B, K, num_labels]``, each from its example's last token."""
        slots = 1 if cls_positions_BxK is None else cls_positions_BxK.shape[1]
        last_BxK = layers.last_positions(attention_mask_BxL, slots)
        out = self.transformer(
            input_ids_BxL,
            attention_mask_BxL,
            rngs=rngs,
            positions_BxQ=last_BxK,  # the last block computes only the states the head reads
            position_ids_BxL=position_ids_BxL,
        )
        logits_BxKxC = self.score(out["last_hidden_state"]).astype(jnp.float32)
        return logits_BxKxC if cls_positions_BxK is not None else logits_BxKxC[:, 0]


# --- The family interface (``models/__init__.py``): heads, config.json, parameter names.

# Shape fields, config.json's names and constants, and both translations: gpt2_config.py.
SHAPE_FIELDS = gpt2_config.SHAPE_FIELDS
HF_NAMES = gpt2_config.HF_NAMES
HF_FIELDS = gpt2_config.HF_FIELDS
HF_CONSTANTS = gpt2_config.HF_CONSTANTS
from_hf = gpt2_config.from_hf
hf_config = gpt2_config.hf_config
CONFIG = GPT2Config
HEADS = {"causal_lm": GPT2LMHeadModel, "classification": GPT2ForSequenceClassification}
ARCHITECTURES = {
    "causal_lm": "GPT2LMHeadModel",
    "classification": "GPT2ForSequenceClassification",
}
DEFAULT_HEAD = "causal_lm"  # a config.json without architectures
# config.json token ids -> the tokenizer's attribute holding each (HF's default: 50256)
TOKEN_IDS = {"bos_token_id": "bos_token_id", "eos_token_id": "eos_token_id"}
# What data.tokenizer='' trains for a classifier too: the causal LM's, GPT-2's byte-level BPE,
# whose <|endoftext|> ends documents, pads rows and separates a pair's texts (classification).
TOKENIZER = "byte_bpe"
BACKBONE = "transformer"  # the decoder's top-level name (bare GPT2Model checkpoints omit it)
TOP = ("transformer", "lm_head", "score")  # top-level names of checkpoint tensors
CLASSIFIER = "score"  # the label head: another label count starts it fresh
LAYER_NAME = re.compile(r"(transformer\.h\.)(\d+)(\..*)")  # HF names in block i
# HF name prefixes of the input embeddings (wte is also the LM head: tied)
EMBEDDINGS = ("transformer.wte.", "transformer.wpe.")
# Causal-mask buffers older checkpoints hold, not parameters (c_attn.bias is one).
BUFFERS = re.compile(r"(transformer\.)?h\.\d+\.attn\.(bias|masked_bias)")
TIED = ("lm_head.weight",)  # the word embeddings


def build_model(cfg: GPT2Config, head: str, seed: int) -> nnx.Module:
    """The model with ``head`` (``HEADS``), initialised from ``seed`` (call under jit or
    eval_shape to shard)."""
    return HEADS[head](cfg, rngs=nnx.Rngs(params=seed))


empty_cache = layers.empty_cache  # the key/value cache generation fills


def architecture(head: str, cfg: GPT2Config) -> str:
    """The transformers class an export with ``head`` loads as."""
    return ARCHITECTURES[head]


def head_of(architecture_name: str) -> str:
    """The head a checkpoint of this transformers class has."""
    return "classification" if "SequenceClassification" in architecture_name else "causal_lm"


def module_kind(name: str) -> str:
    """How the torch module called ``name`` stores its weight: ``norm`` (LayerNorm),
    ``embedding`` (nn.Embedding), ``linear`` (nn.Linear, (out, in)) or ``conv1d`` (HF's
    Conv1D, (in, out))."""
    if name.startswith("ln_"):
        return "norm"
    if name in ("wte", "wpe"):
        return "embedding"
    return "linear" if name in ("score", "lm_head") else "conv1d"


def optional(path: tuple) -> bool:
    """Whether ``path`` is a head: a checkpoint may lack it, and another task's may have it."""
    return path[0] != BACKBONE
