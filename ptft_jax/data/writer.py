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


def start_worker(tokenizer_dir: str, fraction: float, blocks: str) -> None:
    """Load the store's tokenizer in this process, for ``encode`` and ``pack_input``."""
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the processes are the parallelism
    tokenizer = tokenize.load_tokenizer(tokenizer_dir)
    # encode() calls the Rust tokenizer directly, which applies the padding and truncation a
    # tokenizer.json may carry (sentence-transformers' pad every text to 128): documents are
    # tokenized whole, without either.
    tokenizer.backend_tokenizer.no_padding()
    tokenizer.backend_tokenizer.no_truncation()
    _WORKER.update(tokenizer=tokenizer, fraction=fraction, blocks=blocks)
    _WORKER["ids"] = separators(tokenizer, blocks)


def encode(texts: list[str]) -> dict:
    """One chunk of documents as each split's token stream (``store.stream_of``), with counts."""
    # The Rust tokenizer without offsets or masks: the same ids as tokenizer(texts), faster.
    backend = _WORKER["tokenizer"].backend_tokenizer
    encoded = [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
    split = {name: [] for name in store.SPLITS}
    for text, ids in zip(texts, encoded, strict=True):
        held = store.held_out(text, _WORKER["fraction"])
        split["validation" if held else "train"].append(np.asarray(ids, np.int32))
    out = {name: store.stream_of(docs, _WORKER["ids"]["sep"]) for name, docs in split.items()}
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
    unit = store.Unit(out, index, name, seq_len, ids, dtype, per_shard, blocks)
    for _, texts in chunks([(index, name)], field):
        unit.add(encode(texts))
    return unit.finish()
