"""ModernBERT's encoder in Flax NNX, computing exactly what Hugging Face's ModernBertModel
computes.

A pre-LN encoder without position embeddings: rotary positions (RoPE) in every attention layer,
one base (theta) for the global layers and another for the local ones, which see only the
``local_attention // 2`` tokens on each side (a window kernel: ``ops.attention``); a GeGLU MLP
(``Wi`` makes the input and its gate at once); LayerNorms and dense layers without biases unless
config.json asks; a final norm. The first layer has no attention norm (the embeddings are normed
already). Its heads and the family interface are in ``modernbert.py``, its config and
config.json in ``modernbert_config.py``.

Module attribute names mirror Hugging Face parameter names one-to-one (``model.layers.3.attn.
Wqkv`` here and there). Tensor names carry their dimension letters and every parameter its
logical axes, as ``models/__init__.py`` describes; this file never names a mesh axis.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from ptft_jax import ops
from ptft_jax.models import layers
from ptft_jax.models.layers import layer_norm, lookup, run_layers
from ptft_jax.models.modernbert_config import ACTIVATIONS, LOCAL, ModernBertConfig
from ptft_jax.ops import constrain, dropout


def _init(cfg: ModernBertConfig, names, std: float | None = None):
    """HF's truncated normal init (``initializer_cutoff_factor`` std each side) with logical
    ``names``; ``std``: another standard deviation than ``initializer_range``."""
    std = cfg.initializer_range if std is None else std
    cut = cfg.initializer_cutoff_factor
    # jax scales by 1/0.8796 (the std of a standard normal cut at +-2): undo it.
    sample = nnx.initializers.truncated_normal(std * 0.87962566103423978, lower=-cut, upper=cut)
    return layers.init(sample, names)


def truncated_dense(cfg, d_in, d_out, names, rngs, bias, std=None) -> nnx.Linear:
    return nnx.Linear(
        d_in,
        d_out,
        use_bias=bias,
        dtype=cfg.jnp_dtype,
        kernel_init=_init(cfg, names, std),
        bias_init=layers.init(nnx.initializers.zeros_init(), (names[1],)),
        rngs=rngs,
    )


def out_std(cfg: ModernBertConfig) -> float:
    """HF's init of the layers writing into the residual stream."""
    return cfg.initializer_range / math.sqrt(2.0 * cfg.num_hidden_layers)


def rotate(x_BxLxNxH, position_ids_BxL, theta: float):
    """RoPE as HF computes it (float32 angles ``position * theta^(-2i/H)``, halves rotated)."""
    h = x_BxLxNxH.shape[-1]
    inv_freq = 1.0 / (theta ** (jnp.arange(0, h, 2, dtype=jnp.float32) / h))
    angles_BxLxH = position_ids_BxL[..., None].astype(jnp.float32) * inv_freq
    angles_BxLxH = jnp.concatenate([angles_BxLxH, angles_BxLxH], axis=-1)[:, :, None]
    x = x_BxLxNxH.astype(jnp.float32)
    turned = jnp.concatenate([-x[..., h // 2 :], x[..., : h // 2]], axis=-1)
    out = x * jnp.cos(angles_BxLxH) + turned * jnp.sin(angles_BxLxH)
    return out.astype(x_BxLxNxH.dtype)


class ModernBertEmbeddings(nnx.Module):
    def __init__(self, cfg: ModernBertConfig, rngs: nnx.Rngs):
        self.tok_embeddings = nnx.Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            dtype=cfg.jnp_dtype,
            embedding_init=_init(cfg, ("vocab", "embed")),
            rngs=rngs,
        )
        self.norm = layer_norm(cfg, rngs, bias=cfg.norm_bias)
        self.dropout_rate = cfg.embedding_dropout

    def __call__(self, input_ids_BxL, *, rngs=None):
        x_BxLxD = constrain(
            lookup(self.tok_embeddings, input_ids_BxL), ("batch", "length", "act_embed")
        )
        return dropout(self.norm(x_BxLxD), self.dropout_rate, rngs)


class ModernBertAttention(nnx.Module):
    def __init__(self, cfg: ModernBertConfig, local: bool, rngs: nnx.Rngs):
        self.cfg = cfg
        d = cfg.hidden_size
        # The fused [q | k | v] output is not split over the tensor axis (as GPT-2's c_attn).
        self.Wqkv = truncated_dense(cfg, d, 3 * d, ("embed", None), rngs, cfg.attention_bias)
        self.Wo = truncated_dense(
            cfg, d, d, ("heads", "embed"), rngs, cfg.attention_bias, out_std(cfg)
        )
        self.window = cfg.local_attention // 2 if local else None
        self.theta = cfg.local_rope_theta if local else cfg.global_rope_theta

    def __call__(self, x_BxLxD, context, *, rngs=None, positions_BxQ=None):
        """Attention outputs at ``positions_BxQ`` (every position when None); ``context``:
        ``(mask, position ids)`` as ``ModernBertModel`` makes them."""
        cfg = self.cfg
        mask, position_ids_BxL = context
        b, length, _ = x_BxLxD.shape
        names = ("batch", "length", "act_heads", None)
        qkv = self.Wqkv(x_BxLxD).reshape(b, length, 3, cfg.num_attention_heads, cfg.head_dim)
        q_BxLxNxH, k_BxLxNxH, v_BxLxNxH = (constrain(qkv[:, :, i], names) for i in range(3))
        q_BxLxNxH = rotate(q_BxLxNxH, position_ids_BxL, self.theta)
        k_BxLxNxH = rotate(k_BxLxNxH, position_ids_BxL, self.theta)
        window = self.window
        if positions_BxQ is not None:  # these queries only: a mask row each
            q_BxLxNxH = layers.at_positions(q_BxLxNxH, positions_BxQ)
            mask = layers.at_positions(mask, positions_BxQ) if mask.ndim == 3 else mask[:, None, :]
        if window is not None and mask.ndim == 3:  # the band, as pairs (packed or gathered)
            mask = mask & ops.band(length, window, positions_BxQ)
            window = None
        out_BxQxNxH = ops.attention(
            q_BxLxNxH,
            k_BxLxNxH,
            v_BxLxNxH,
            mask,
            implementation=ops.attention_implementation(cfg.attention, cfg.dtype, cfg.head_dim),
            dropout_rate=cfg.attention_dropout,
            rngs=rngs,
            local_window=window,
        )
        out_BxQxD = self.Wo(out_BxQxNxH.reshape(*out_BxQxNxH.shape[:2], cfg.hidden_size))
        return dropout(out_BxQxD, cfg.attention_dropout, rngs)


class ModernBertMLP(nnx.Module):
    """GeGLU: ``Wo(act(input) * gate)``, where ``Wi`` makes ``[input | gate]``."""

    def __init__(self, cfg: ModernBertConfig, rngs: nnx.Rngs):
        d, f = cfg.hidden_size, cfg.intermediate_size
        # [input | gate] is not split over the tensor axis either: each half is, right after.
        self.Wi = truncated_dense(cfg, d, 2 * f, ("embed", None), rngs, cfg.mlp_bias)
        self.Wo = truncated_dense(cfg, f, d, ("mlp", "embed"), rngs, cfg.mlp_bias, out_std(cfg))
        self.act = ACTIVATIONS[cfg.hidden_activation]
        self.dropout_rate = cfg.mlp_dropout

    def __call__(self, x_BxLxD, *, rngs=None):
        input_BxLxF, gate_BxLxF = jnp.split(self.Wi(x_BxLxD), 2, axis=-1)
        h_BxLxF = constrain(self.act(input_BxLxF) * gate_BxLxF, ("batch", "length", "act_mlp"))
        return self.Wo(dropout(h_BxLxF, self.dropout_rate, rngs))


class ModernBertEncoderLayer(nnx.Module):
    def __init__(self, cfg: ModernBertConfig, index: int, rngs: nnx.Rngs):
        # The first layer reads the normed embeddings as they are (HF: nn.Identity).
        self.attn_norm = layer_norm(cfg, rngs, bias=cfg.norm_bias) if index else None
        self.attn = ModernBertAttention(cfg, cfg.layer_types[index] == LOCAL, rngs)
        self.mlp_norm = layer_norm(cfg, rngs, bias=cfg.norm_bias)
        self.mlp = ModernBertMLP(cfg, rngs)

    def __call__(self, x_BxLxD, context, *, rngs=None, positions_BxQ=None):
        """Outputs at ``positions_BxQ`` (every position when None); keys span them all."""
        h_BxLxD = x_BxLxD if self.attn_norm is None else self.attn_norm(x_BxLxD)
        a_BxQxD = self.attn(h_BxLxD, context, rngs=rngs, positions_BxQ=positions_BxQ)
        if positions_BxQ is not None:
            x_BxLxD = layers.at_positions(x_BxLxD, positions_BxQ)
        x_BxQxD = x_BxLxD + a_BxQxD
        x_BxQxD = x_BxQxD + self.mlp(self.mlp_norm(x_BxQxD), rngs=rngs)
        return constrain(x_BxQxD, ("batch", "length", "act_embed"))


class ModernBertModel(nnx.Module):
    """The encoder: normed embeddings, pre-LN layers with RoPE, the final norm."""

    def __init__(self, cfg: ModernBertConfig, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embeddings = ModernBertEmbeddings(cfg, rngs)
        self.layers = nnx.List(
            [ModernBertEncoderLayer(cfg, i, rngs) for i in range(cfg.num_hidden_layers)]
        )
        self.final_norm = layer_norm(cfg, rngs, bias=cfg.norm_bias)

    def __call__(
        self,
        input_ids_BxL,
        attention_mask_BxL,
        token_type_ids_BxL=None,  # ModernBERT has no token types; accepted and unused
        *,
        rngs: nnx.Rngs | None = None,
        return_all_hidden: bool = False,
        positions_BxQ: jax.Array | None = None,
        position_ids_BxL: jax.Array | None = None,
    ) -> dict[str, Any]:
        """``last_hidden_state`` (after the final norm) and optionally every layer's input and
        then ``last_hidden_state`` (``hidden_states``, as HF gives them). ``rngs`` with a
        ``dropout`` stream turns dropout on. ``positions_BxQ``: the last layer computes these
        positions alone. ``position_ids_BxL`` given: packed rows, whose ``attention_mask_BxL``
        numbers the examples of each row (``layers.segment_mask``); attention never crosses
        them."""
        packed = position_ids_BxL is not None
        mask = layers.segment_mask(attention_mask_BxL) if packed else attention_mask_BxL > 0
        if not packed:
            position_ids_BxL = jnp.arange(input_ids_BxL.shape[1])[None]
        x_BxLxD = self.embeddings(input_ids_BxL, rngs=rngs)
        hidden = run_layers(
            self.layers,
            x_BxLxD,
            (mask, position_ids_BxL),
            rngs,
            remat=self.cfg.remat,
            policy=self.cfg.remat_policy,
            last_positions=positions_BxQ,
        )
        out = {"last_hidden_state": self.final_norm(hidden[-1])}
        if return_all_hidden:  # HF's last entry is after the final norm too
            out["hidden_states"] = [*hidden[:-1], out["last_hidden_state"]]
        return out
