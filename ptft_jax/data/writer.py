"""Tokenize and pack a corpus's inputs into the token store (``store.py``): the functions that
both writers run, the local process pool of ``python -m ptft_jax.prepare`` and its Apache Beam
pipeline (``beam.py``), so the two write the same records.

A worker process loads the tokenizer once (``start_worker``) and turns chunks of documents into
each split's token stream (``encode``); one ``store.Unit`` per input packs those streams, in
order, into that input's shards.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Iterable, Iterator

import numpy as np

from ptft_jax.data import store, stream, tokenize

CHUNK = 512  # documents per tokenization job
_WORKER = {}


def separators(tokenizer, blocks: str) -> dict[str, int]:
    """The ids a packer of ``blocks`` records needs: ``sep`` ends every document ([SEP], or
    the end of text for next-token blocks), ``cls`` starts an MLM block."""
    if blocks == "next_token":
        return {"sep": tokenize.end_of_text_id(tokenizer)}
    return tokenize.special_ids(tokenizer)


def start_worker(tokenizer_dir: str, fraction: float, blocks: str, segmenter: str = "") -> None:
    """Load the store's tokenizer in this process, for ``encode`` and ``pack_input``; with a
    word ``segmenter``, ``encode`` also marks the tokens that continue a word (``segment.py``)."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the processes are the parallelism
    tokenizer = tokenize.load_tokenizer(tokenizer_dir)
    # encode() calls the Rust tokenizer directly, which applies the padding and truncation a
    # tokenizer.json may carry (sentence-transformers' pad every text to 128): documents are
    # tokenized whole, without either.
    tokenizer.backend_tokenizer.no_padding()
    tokenizer.backend_tokenizer.no_truncation()
    _WORKER.update(tokenizer=tokenizer, fraction=fraction, blocks=blocks, segmenter=segmenter)
    _WORKER["ids"] = separators(tokenizer, blocks)
    if segmenter:
        _WORKER["by_piece"] = tokenize.word_continuations(tokenizer)


def encode(texts: list[str]) -> dict:
    """One chunk of documents as each split's token stream (``store.stream_of``), with counts;
    with a word segmenter also each split's stream of word flags (``<split>_words``: 1 where a
    token continues a word, 0 at the separators)."""
    backend, segmenter = _WORKER["tokenizer"].backend_tokenizer, _WORKER["segmenter"]
    if segmenter:  # the offsets locate each token in the text the segmenter cuts into words
        from ptft_jax.data import segment

        full = backend.encode_batch(texts, add_special_tokens=False)
        encoded = [e.ids for e in full]
        words = [
            segment.continues(t, np.array(e.offsets, np.int64).reshape(-1, 2),
                              _WORKER["by_piece"][np.array(e.ids, np.int64)], segmenter)
            for t, e in zip(texts, full, strict=True)
        ]  # fmt: skip
    else:  # the Rust tokenizer without offsets or masks: the same ids, faster
        encoded = [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
        words = [None] * len(texts)
    split = {name: [] for name in store.SPLITS}
    flags = {name: [] for name in store.SPLITS}
    for text, ids, w in zip(texts, encoded, words, strict=True):
        held = "validation" if store.held_out(text, _WORKER["fraction"]) else "train"
        split[held].append(np.asarray(ids, np.int32))
        flags[held].append(w)
    out = {name: store.stream_of(docs, _WORKER["ids"]["sep"]) for name, docs in split.items()}
    if segmenter:
        out |= {f"{name}_words": store.stream_of(f, 0) for name, f in flags.items()}
    out["documents"], out["tokens"] = len(texts), sum(map(len, encoded))
    out["bytes"] = sum(len(t.encode("utf-8")) for t in texts)
    return out


def chunks(todo: Iterable[tuple[int, str]], field: str) -> Iterator[tuple[tuple, list[str]]]:
    """``((input index, last), texts)``: the documents of each input of ``todo`` in chunks of
    ``CHUNK``; the last chunk of an input says so (it may be empty)."""
    for index, name in todo:
        chunk = []
        for _, text in stream.input_documents(name, field):
            chunk.append(text)
            if len(chunk) == CHUNK:
                yield (index, False), chunk
                chunk = []
        yield (index, True), chunk


def dtype_of(tokenizer) -> str:
    """The narrowest type that holds every token id."""
    return "uint16" if len(tokenizer) <= 2**16 else "int32"


def pack_input(out: pathlib.Path, index: int, name: str, field: str, seq_len: int, per_shard: int):
    """Tokenize and pack one whole input in this process (after ``start_worker``): its shards
    and record (``store.Unit``)."""
    ids, dtype, blocks = _WORKER["ids"], dtype_of(_WORKER["tokenizer"]), _WORKER["blocks"]
    words = bool(_WORKER["segmenter"])
    unit = store.Unit(out, index, name, seq_len, ids, dtype, per_shard, blocks, words)
    for _, texts in chunks([(index, name)], field):
        unit.add(encode(texts))
    return unit.finish()
