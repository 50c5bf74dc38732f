"""Heads that read every token, shared by the encoder families: a label per token
(transformers' ``*ForTokenClassification``) and an answer's start and end
(``*ForQuestionAnswering``).

BERT and RoBERTa put dropout and one dense layer (``classifier``) on the encoder's last hidden
states, and a dense layer without dropout (``qa_outputs``) for spans; ModernBERT first runs its
prediction head (``head``: dense, activation, norm), then dropout, and names both outputs
``classifier``. A family subclasses these two with its encoder class and attribute names, so
parameter names stay Hugging Face's one-to-one.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import nnx

from ptft_jax.models.layers import dense
from ptft_jax.ops import dropout


class _PerToken(nnx.Module):
    """Encoder (no pooler) -> [prediction head] -> dropout -> ``outputs`` logits per position."""

    backbone: str  # the encoder's attribute (HF's top-level name): bert, roberta, model
    encoder: type  # the family's encoder module
    prediction_head: type | None = None  # ModernBERT's dense-activation-norm before the output
    output: str = "classifier"  # the output layer's name
    with_dropout: bool = True

    def __init__(self, cfg, *, rngs: nnx.Rngs):
        self.cfg = cfg
        fields = {f.name for f in dataclasses.fields(cfg)}
        plain = cfg
        if "add_pooling_layer" in fields:  # HF's token heads build their encoder without one
            plain = dataclasses.replace(cfg, add_pooling_layer=False)
        setattr(self, self.backbone, self.encoder(plain, rngs))
        if self.prediction_head is not None:
            self.head = self.prediction_head(cfg, rngs)
        rate = getattr(cfg, "classifier_dropout", None)
        self.dropout_rate = cfg.hidden_dropout_prob if rate is None else rate
        setattr(self, self.output, self.output_layer(cfg, self.outputs(cfg), rngs))

    def outputs(self, cfg) -> int:
        """The logits per position: one per label (a span head: start and end)."""
        return cfg.num_labels

    def output_layer(self, cfg, n: int, rngs) -> nnx.Linear:
        """The output layer (the family's init; BERT's: normal(initializer_range))."""
        return dense(cfg, cfg.hidden_size, n, ("embed", None), rngs)

    def logits(self, input_ids_BxL, attention_mask_BxL, token_type_ids_BxL, rngs, packed):
        """``[B, L, outputs]`` in float32 (``packed``: ``position_ids_BxL`` of packed rows,
        whose attention mask numbers their examples)."""
        encoder = getattr(self, self.backbone)
        inputs = (input_ids_BxL, attention_mask_BxL, token_type_ids_BxL)
        x_BxLxD = encoder(*inputs, rngs=rngs, **packed)["last_hidden_state"]
        if self.prediction_head is not None:
            x_BxLxD = self.head(x_BxLxD)
        if self.with_dropout:
            x_BxLxD = dropout(x_BxLxD, self.dropout_rate, rngs)
        return getattr(self, self.output)(x_BxLxD).astype(jnp.float32)


class TokenClassifier(_PerToken):
    """Label logits ``[B, L, num_labels]`` at every position (HF's *ForTokenClassification)."""

    def __call__(
        self, input_ids_BxL, attention_mask_BxL, token_type_ids_BxL=None, *, rngs=None, **packed
    ):
        packed.pop("cls_positions_BxK", None)  # every position is read
        return self.logits(input_ids_BxL, attention_mask_BxL, token_type_ids_BxL, rngs, packed)


class SpanClassifier(_PerToken):
    """Start and end logits ``[B, L, 2]`` of an answer span (HF's *ForQuestionAnswering:
    ``logits.split(1, -1)``)."""

    output = "qa_outputs"
    with_dropout = False

    def outputs(self, cfg) -> int:
        return 2

    def __call__(
        self, input_ids_BxL, attention_mask_BxL, token_type_ids_BxL=None, *, rngs=None, **packed
    ):
        packed.pop("cls_positions_BxK", None)
        return self.logits(input_ids_BxL, attention_mask_BxL, token_type_ids_BxL, rngs, packed)


def head_of(architecture_name: str) -> str:
    """The head of a checkpoint of this transformers class (an encoder family's)."""
    for kind, head in (
        ("SequenceClassification", "classification"),
        ("TokenClassification", "token_classification"),
        ("QuestionAnswering", "question_answering"),
    ):
        if kind in architecture_name:
            return head
    return "mlm"
