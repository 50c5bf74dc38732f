"""Masked-language-model pretraining (``task="mlm"``), with BERT's next-sentence prediction as
an option (``train.objectives=("mlm", "nsp")``).

Training reads packed blocks (or sentence pairs for NSP), masked dynamically; evaluation a
held-out split masked identically every time. The loss is the mean over masked positions,
plus the mean NSP loss over the batch's pairs.
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np

from ptft_jax import losses, scores
from ptft_jax.errors import DataError
from ptft_jax.tasks.base import EvalContext, Task, TaskData, inputs, spec_of, summed

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class MLM(Task):
    seq_len: int = 128
    max_predictions: int = 20
    nsp: bool = False

    name = "mlm"
    head = "mlm"
    accuracy = "mlm_accuracy"
    weight_field = "masked_weights"
    store_blocks = "mlm"
    objectives = (("mlm",), ("mlm", "nsp"))

    @classmethod
    def from_config(cls, cfg) -> MLM:
        d = cfg.data
        nsp = "nsp" in cfg.train.get("objectives", ())
        return cls(d.max_seq_length, d.max_predictions_per_seq, nsp)

    def model_options(self) -> dict:
        return {"add_pooling_layer": self.nsp, "next_sentence": self.nsp}

    def batch_spec(self) -> dict:
        length, k = (self.seq_len,), (self.max_predictions,)
        fields = {
            "input_ids": (length, "int32"),
            "attention_mask": (length, "int32"),
            "token_type_ids": (length, "int32"),
            "masked_positions": (k, "int32"),
            "masked_ids": (k, "int32"),
            "masked_weights": (k, "float32"),
        }
        if self.nsp:
            fields |= {
                "next_sentence_label": ((), "int32"),
                "next_sentence_weight": ((), "float32"),
            }
        return spec_of(fields)

    # --- Data (imported here: the benchmark builds MLM steps without the data stack).

    def data(self, cfg, get_tokenizer, layout, eval_layout, labels_file) -> TaskData:
        """Packed, dynamically masked blocks; a fixed masked evaluation split. From a prepared
        folder (``python -m ptft_jax.prepare``) the blocks are read from disk as batches need
        them; otherwise the source is packed in memory."""
        from ptft_jax.data import coverage, pipeline, store

        if store.is_store(cfg.data.source):
            tokenizer = get_tokenizer([])  # the folder's (data.tokenizer points at it)
            train_blocks, eval_blocks = self.stored(cfg, tokenizer)
        else:
            records = pipeline.load_texts(cfg.data)
            train_texts, eval_texts = pipeline.mlm_texts(cfg.data, records)
            tokenizer = get_tokenizer(train_texts)
            train_blocks = self.blocks(cfg, train_texts, tokenizer, held_out=False)
            eval_blocks = self.blocks(cfg, eval_texts, tokenizer, held_out=True)
            counts = {
                "train": coverage.count_unknown(tokenizer, [train_blocks.ids]),
                "validation": coverage.count_unknown(tokenizer, [eval_blocks.ids]),
            }
            coverage.report_unknown(tokenizer, counts, cfg.data.source)
        spec = pipeline.masking_spec(cfg.data, tokenizer)
        t = cfg.train
        return TaskData(
            tokenizer=tokenizer,
            train=pipeline.train_dataset(train_blocks, spec, layout, t.seed),
            eval=list(
                pipeline.eval_batches(eval_blocks, spec, eval_layout, t.seed, t.eval_batches)
            ),
            summary=f"{len(train_blocks)} train / {len(eval_blocks)} eval blocks of {self.seq_len}",
        )

    def blocks(self, cfg, texts: list[str], tokenizer, held_out: bool):
        """The blocks MLM trains or evaluates on: ``texts`` packed into ``max_seq_length``, or,
        with NSP, sentence pairs (half with a random B, seeded apart for held-out text)."""
        from ptft_jax.data import nsp, pipeline
        from ptft_jax.data.builtin import cache_dir

        segmenter = cfg.data.get("word_segmenter", "")
        if self.nsp:
            if segmenter:
                raise DataError(
                    f"data.word_segmenter={segmenter!r} marks words in packed blocks, not in "
                    "NSP's sentence pairs; drop 'nsp' from train.objectives or the segmenter."
                )
            seed = cfg.train.seed + int(held_out)
            return nsp.pair_texts(texts, tokenizer, self.seq_len, cache_dir(), seed)
        return pipeline.pack_texts(texts, tokenizer, self.seq_len, cache_dir(), segmenter)

    def stored(self, cfg, tokenizer):
        """The train and validation blocks of a prepared folder, checked against the run."""
        from ptft_jax.data import store, tokenize

        folder = cfg.data.source
        pad = tokenize.special_ids(tokenizer)["pad"]
        splits = store.open_for(cfg.data, self, tokenizer, pad)
        if self.nsp:
            raise DataError(
                f"{folder} holds packed blocks, not sentence pairs; train NSP from the source "
                "text, or drop 'nsp' from train.objectives."
            )
        if cfg.data.max_documents:
            # An info line: a config file's cap for raw text, not the user's doing (a cap given
            # on the train command line stops the run before this: config.command_line_wins).
            log.info(
                "data.max_documents=%d is for raw text: the prepared folder %s trains on all of "
                "its blocks",
                cfg.data.max_documents,
                folder,
            )
        return splits

    def split_data(self, cfg, tokenizer, layout, split: str, labels_file) -> TaskData:
        """The held-out validation split as training made it, or the source's test split."""
        from ptft_jax.data import pipeline, store, tokenize

        if store.is_store(cfg.data.source):
            pad = tokenize.special_ids(tokenizer)["pad"]
            blocks = store.held_out_split(cfg.data, self, tokenizer, pad, split)
        else:
            records = pipeline.load_texts(cfg.data)
            texts = pipeline.split_texts(cfg.data, records, split)
            blocks = self.blocks(cfg, texts, tokenizer, held_out=True)  # NSP pairs too
        spec = pipeline.masking_spec(cfg.data, tokenizer)
        batches = list(pipeline.eval_batches(blocks, spec, layout, cfg.train.seed, 0))
        return TaskData(tokenizer=tokenizer, train=None, eval=batches)

    # --- Inside the jitted steps.

    def forward(self, model, mb: dict, rngs):
        logits, nsp_Bx2 = model.pretraining(*inputs(mb), mb["masked_positions"], rngs=rngs)
        sums = losses.mlm_sums(logits, mb["masked_ids"], mb["masked_weights"])
        if nsp_Bx2 is not None:
            sums |= losses.nsp_sums(nsp_Bx2, mb["next_sentence_label"], mb["next_sentence_weight"])
        return logits, sums

    def teacher_outputs(self, model, mb: dict):
        return model(*inputs(mb), mb["masked_positions"])

    def totals(self, batch: dict) -> dict:
        totals = super().totals(batch)  # masked positions
        if self.nsp:  # BERT's second loss: the mean over the batch's pairs
            totals["pairs"] = jnp.maximum(jnp.sum(batch["next_sentence_weight"]), 1.0)
        return totals

    def loss(self, sums: dict, totals: dict):
        nsp = sums["nsp_loss_sum"] / totals["pairs"] if self.nsp else 0
        return sums["loss_sum"] / totals["weight"] + nsp

    def step_metrics(self, sums: dict, totals: dict) -> dict:
        out = super().step_metrics(sums, totals)
        if self.nsp:
            out["nsp_loss"] = sums["nsp_loss_sum"] / totals["pairs"]
            out["nsp_accuracy"] = sums["nsp_correct_sum"] / totals["pairs"]
        return out

    def eval_outputs(self, model, mb: dict) -> dict:
        return self.forward(model, mb, None)[1]

    # --- On the host.

    def evaluate(self, ctx: EvalContext, params, split="validation", with_probe=False) -> dict:
        """Loss, MLM accuracy and perplexity from summed statistics over every batch."""
        batches = ctx.data.eval if split == "validation" else ctx.data.test
        return scores.mlm_eval_metrics(summed(ctx.eval_step, params, batches, ctx.mesh, ctx.rows))

    def predict(self, run, texts, pairs, top_k: int, forward) -> list[dict]:
        return fill_mask(run, texts, top_k, forward)


def fill_mask(run, texts: list[str], top_k: int, forward) -> list[dict]:
    """Top-k fills (softmax probabilities) for every ``[MASK]`` of every text, in one padded
    batch; ``forward`` is the run's jitted forward pass (``steps.jit_forward``)."""
    tok = run.tokenizer
    max_length = run.model_cfg.max_position_embeddings
    enc = tok(texts, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    ids = enc["input_ids"]
    is_mask = ids == tok.mask_token_id
    for text, row in zip(texts, is_mask, strict=True):
        if not row.any():
            raise DataError(f"{text!r} has no {tok.mask_token}; put one where a word is missing.")
    positions = np.zeros((len(texts), int(is_mask.sum(1).max())), np.int32)
    for i, row in enumerate(is_mask):
        where = np.flatnonzero(row)
        positions[i, : len(where)] = where
    batch = {
        "input_ids": ids.astype(np.int32),
        "attention_mask": enc["attention_mask"].astype(np.int32),
        "token_type_ids": enc.get("token_type_ids", np.zeros_like(ids)).astype(np.int32),
        "masked_positions": positions,
    }
    with jax.set_mesh(run.mesh):
        logits = forward(run.params, batch)
        scores_, top = jax.device_get(jax.lax.top_k(jax.nn.softmax(logits, axis=-1), top_k))
    out = []
    for i, text in enumerate(texts):
        fills = [
            [
                {"token": tok.convert_ids_to_tokens(int(t)), "score": float(s)}
                for t, s in zip(top[i, j], scores_[i, j], strict=True)
            ]
            for j in range(int(is_mask[i].sum()))
        ]
        out.append({"text": text, "fills": fills})
    return out
