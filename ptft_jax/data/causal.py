"""Causal-LM data: documents joined by the end-of-text token into one stream, cut into blocks
that each predict their next tokens.

Block ``i`` holds stream tokens ``[i*L, i*L + L]`` (L + 1 of them): the model reads the first
``L`` and learns to predict the last ``L``, so every token of the stream after the first is a
target exactly once. Attention within a block may cross a document's end, as GPT-2's own
training let it; the end-of-text token between them says where one stops.
"""

from __future__ import annotations

import numpy as np

from ptft_jax.data.pipeline import Blocks, in_order, served
from ptft_jax.data.sources import DataError
from ptft_jax.data.tokenize import end_of_text_id, tokenize_cached


def pack_stream(docs: list[np.ndarray], seq_len: int, eot_id: int) -> Blocks:
    """Next-token blocks ``[N, seq_len + 1]`` of ``docs``, each document followed by
    ``eot_id``; the last block is padded with ``eot_id`` past its ``lengths``."""
    pieces = [p for d in docs if len(d) for p in (d, np.array([eot_id], np.int32))]
    stream = np.concatenate(pieces).astype(np.int32) if pieces else np.zeros(0, np.int32)
    n = max(-(-(len(stream) - 1) // seq_len), 0)  # blocks whose targets start in the stream
    padded = np.full(n * seq_len + 1, eot_id, np.int32)
    padded[: len(stream)] = stream
    starts = np.arange(n) * seq_len
    ids = padded[starts[:, None] + np.arange(seq_len + 1)]
    lengths = np.minimum(len(stream) - starts, seq_len + 1)
    return Blocks(ids=ids, lengths=lengths)


def pack_texts(texts: list[str], tokenizer, seq_len: int, cache_root) -> Blocks:
    """Tokenize (cached on disk) and cut ``texts`` into next-token blocks."""
    docs = tokenize_cached(texts, tokenizer, cache_root)
    blocks = pack_stream(docs, seq_len, end_of_text_id(tokenizer))
    if not len(blocks):
        raise DataError("A data split tokenized to nothing; check data.source and text_field.")
    return blocks


def make_rows(ids: np.ndarray, lengths: np.ndarray, real: np.ndarray) -> dict[str, np.ndarray]:
    """Inputs, targets and their weights of blocks ``ids`` ``[R, L + 1]`` with ``lengths`` real
    tokens; rows not ``real`` (padding) weigh nothing and attend to one position."""
    seq_len = ids.shape[1] - 1
    position = np.arange(seq_len)[None]
    mask = (position < np.maximum(lengths, 2)[:, None] - 1) | (position == 0)
    return {
        "input_ids": ids[:, :-1],
        "attention_mask": mask.astype(np.int32),
        "labels": ids[:, 1:],
        "label_weights": ((position < lengths[:, None] - 1) & real[:, None]).astype(np.float32),
    }


def train_dataset(blocks: Blocks, layout, seed: int):
    """Grain MapDataset: element ``b`` is this process's rows of global batch ``b`` (blocks in
    a seeded order, reshuffled every epoch)."""

    def rows(idx, flat, b):
        ids, lengths = blocks.take(idx)
        return make_rows(ids, lengths, np.ones(len(idx), bool))

    return served(blocks, layout, seed, rows)


def eval_batches(blocks: Blocks, layout, max_batches: int):
    """The evaluation blocks in order; the tail batch's padding rows weigh nothing."""
    for _, rows, safe, real in in_order(len(blocks), layout, max_batches):
        ids, lengths = blocks.take(safe)
        out = make_rows(ids, np.where(real, lengths, 2), real)
        yield {k: v.reshape(*rows.shape, *v.shape[1:]) for k, v in out.items()}
