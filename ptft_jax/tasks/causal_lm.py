"""Causal-language-model pretraining (``task="causal_lm"``): next-token prediction for GPT
models (``model.family="gpt2"``).

Documents, each ended by the end-of-text token, are cut into blocks of ``max_seq_length``
inputs (``data/causal.py``); the loss is the mean cross-entropy over every real next token of
the batch. Evaluation reports the loss, perplexity and next-token accuracy over a held-out
split. Without ``data.tokenizer`` a byte-level BPE is trained on the data.
"""

from __future__ import annotations

import dataclasses
import math

from ptft_jax import losses
from ptft_jax.errors import ConfigError
from ptft_jax.tasks.base import EvalContext, Task, TaskData, spec_of, summed

CAUSAL_FAMILIES = ("gpt2",)  # families with a "causal_lm" head


@dataclasses.dataclass(frozen=True)
class CausalLM(Task):
    seq_len: int = 128

    name = "causal_lm"
    head = "causal_lm"
    accuracy = "next_token_accuracy"
    weight_field = "label_weights"
    tokenizer_kind = "byte_bpe"
    store_blocks = "next_token"

    @classmethod
    def from_config(cls, cfg) -> CausalLM:
        return cls(cfg.data.max_seq_length)

    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        if cfg.model.family not in CAUSAL_FAMILIES:
            raise ConfigError(
                f"task=causal_lm needs a decoder, but model.family={cfg.model.family!r}; set "
                f"--config.model.family={CAUSAL_FAMILIES[0]} (or train an encoder with task=mlm)."
            )

    def batch_spec(self) -> dict:
        length = (self.seq_len,)
        return spec_of(
            {
                "input_ids": (length, "int32"),
                "attention_mask": (length, "int32"),
                "labels": (length, "int32"),  # the next token at each position
                "label_weights": (length, "float32"),  # 1 where that token is real
            }
        )

    # --- Data (imported here, as MLM's: the benchmark builds steps without the data stack).

    def data(self, cfg, get_tokenizer, layout, eval_layout, labels_file) -> TaskData:
        """Next-token blocks of the source's documents and of a held-out split; from a
        prepared folder (``python -m ptft_jax.prepare`` with this task) they are read from disk
        as batches need them."""
        from ptft_jax.data import causal, pipeline, store, tokenize
        from ptft_jax.data.builtin import cache_dir

        if store.is_store(cfg.data.source):  # a prepared folder, read as batches need it
            tokenizer = get_tokenizer([])  # the folder's (data.tokenizer points at it)
            eot = tokenize.end_of_text_id(tokenizer)
            train, held_out = store.open_for(cfg.data, self, tokenizer, eot)
        else:
            records = pipeline.load_texts(cfg.data)
            train_texts, eval_texts = pipeline.mlm_texts(cfg.data, records)
            tokenizer = get_tokenizer(train_texts)
            train = causal.pack_texts(train_texts, tokenizer, self.seq_len, cache_dir())
            held_out = causal.pack_texts(eval_texts, tokenizer, self.seq_len, cache_dir())
        return TaskData(
            tokenizer=tokenizer,
            train=causal.train_dataset(train, layout, cfg.train.seed),
            eval=list(causal.eval_batches(held_out, eval_layout, cfg.train.eval_batches)),
            summary=f"{len(train)} train / {len(held_out)} eval blocks of {self.seq_len} tokens",
        )

    def split_data(self, cfg, tokenizer, layout, split: str, labels_file) -> TaskData:
        """The held-out validation split as training made it, or the source's test split."""
        from ptft_jax.data import causal, pipeline, store, tokenize
        from ptft_jax.data.builtin import cache_dir

        if store.is_store(cfg.data.source):
            eot = tokenize.end_of_text_id(tokenizer)
            blocks = store.held_out_split(cfg.data, self, tokenizer, eot, split)
        else:
            records = pipeline.load_texts(cfg.data)
            texts = pipeline.split_texts(cfg.data, records, split)
            blocks = causal.pack_texts(texts, tokenizer, self.seq_len, cache_dir())
        return TaskData(
            tokenizer=tokenizer, train=None, eval=list(causal.eval_batches(blocks, layout, 0))
        )

    # --- Inside the jitted steps.

    def forward(self, model, mb: dict, rngs):
        logits_BxLxV = model(mb["input_ids"], mb["attention_mask"], rngs=rngs)
        return logits_BxLxV, losses.mlm_sums(logits_BxLxV, mb["labels"], mb["label_weights"])

    def teacher_outputs(self, model, mb: dict):
        return model(mb["input_ids"], mb["attention_mask"])

    def eval_outputs(self, model, mb: dict) -> dict:
        return self.forward(model, mb, None)[1]

    # --- On the host.

    def evaluate(self, ctx: EvalContext, params, split="validation", with_probe=False) -> dict:
        """Loss, perplexity and next-token accuracy over every real next token of the split."""
        batches = ctx.data.eval if split == "validation" else ctx.data.test
        sums = summed(ctx.eval_step, params, batches, ctx.mesh, ctx.rows)
        weight = max(float(sums["weight_sum"]), 1.0)
        loss = float(sums["loss_sum"]) / weight
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
            "next_token_accuracy": float(sums["correct_sum"]) / weight,
        }
