"""Sentence pairs for next-sentence prediction, built from documents as BERT's data builder does.

Each document is split into sentences and walked in chunks of about ``max_seq_length - 3``
tokens. A chunk's first sentences (a random number of them; a one-sentence chunk is cut at a
random token) are segment A; with probability one half segment B is the rest of the chunk
(label 0, "is next"), otherwise B is as many tokens from a random place in another document
(label 1) and the chunk's unused sentences go back to be read again. So the labels are balanced
and B's length does not give them away. A pair longer than the budget loses tokens from its
longer segment, at the front or the back at random. Rows are ``[CLS] A [SEP] B [SEP]`` with
segment ids 0 then 1; the pairs are fixed for the run (seeded), while masking stays dynamic.
"""

from __future__ import annotations

import re

import numpy as np

from ptft_jax.data.pipeline import Blocks
from ptft_jax.data.sources import DataError
from ptft_jax.data.tokenize import special_ids, tokenize_cached

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")


def split_sentences(text: str) -> list[str]:
    """Sentences of ``text``: breaks after . ! ? followed by space, and at line breaks."""
    return [s.strip() for s in _SENTENCE_END.split(text) if s and s.strip()]


def make_pairs(docs: list[list[np.ndarray]], seq_len: int, ids: dict, seed: int) -> Blocks:
    """Pairs from tokenized documents (a list of sentences of token ids each)."""
    rng = np.random.default_rng([seed, 0x45])
    budget = seq_len - 3
    rows = []
    docs = [d for d in docs if d]
    if len(docs) < 2:
        raise DataError("Next-sentence prediction needs at least 2 documents; add data.")
    for d, doc in enumerate(docs):
        chunk, size, i = [], 0, 0
        while i < len(doc):
            chunk.append(doc[i])
            size += len(doc[i])
            if i == len(doc) - 1 or size >= budget:
                a, rest, a_end = _split(chunk, rng)
                label = int(rng.random() < 0.5)
                if label and len(rest):
                    # A random other document's run of sentences, as long as the true
                    # continuation: the length of B says nothing about the label.
                    other = docs[(d + int(rng.integers(1, len(docs)))) % len(docs)]
                    start = int(rng.integers(len(other)))
                    rest = np.concatenate(other[start:])[: len(rest)]
                    i -= len(chunk) - a_end  # the unused sentences are read again
                a, b = _truncate(a, rest, budget, rng)
                if len(a) and len(b):
                    rows.append((a, b, label))
                chunk, size = [], 0
            i += 1
    n = len(rows)
    out_ids = np.full((n, seq_len), ids["pad"], np.int32)
    types = np.zeros((n, seq_len), np.int32)
    lengths = np.zeros(n, np.int64)
    for r, (a, b, _) in enumerate(rows):
        row = np.concatenate([[ids["cls"]], a, [ids["sep"]], b, [ids["sep"]]])
        out_ids[r, : len(row)] = row
        types[r, len(a) + 2 : len(row)] = 1
        lengths[r] = len(row)
    labels = np.array([label for _, _, label in rows], np.int32)
    return Blocks(ids=out_ids, lengths=lengths, types=types, labels=labels)


def _split(chunk: list[np.ndarray], rng) -> tuple[np.ndarray, np.ndarray, int]:
    """``(A, the rest, sentences in A)``: A is the first 1..n-1 sentences of the chunk; a
    one-sentence chunk is cut at a random token instead, so that either label is possible."""
    if len(chunk) > 1:
        a_end = int(rng.integers(1, len(chunk)))
        return np.concatenate(chunk[:a_end]), np.concatenate(chunk[a_end:]), a_end
    tokens = chunk[0]
    cut = int(rng.integers(1, len(tokens))) if len(tokens) > 1 else 1
    return tokens[:cut], tokens[cut:], 1


def _truncate(a: np.ndarray, b: np.ndarray, budget: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """Drop tokens from the longer segment (front or back at random) until both fit."""
    while len(a) + len(b) > budget:
        longer = a if len(a) > len(b) else b
        longer = longer[1:] if rng.random() < 0.5 else longer[:-1]
        a, b = (longer, b) if len(a) > len(b) else (a, longer)
    return a, b


def pair_texts(texts: list[str], tokenizer, seq_len: int, cache_root, seed: int) -> Blocks:
    """Tokenize the documents' sentences (cached on disk) and build the pairs."""
    sentences = [split_sentences(t) for t in texts]
    flat = tokenize_cached([s for doc in sentences for s in doc], tokenizer, cache_root)
    docs, start = [], 0
    for doc in sentences:
        docs.append([x for x in flat[start : start + len(doc)] if len(x)])
        start += len(doc)
    blocks = make_pairs(docs, seq_len, special_ids(tokenizer), seed)
    if not len(blocks):
        raise DataError("A data split gave no sentence pairs; check data.source and text_field.")
    return blocks
