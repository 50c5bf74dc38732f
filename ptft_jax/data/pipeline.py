"""MLM data: split, pack into fixed-length blocks, and serve masked batches through Grain.

Global order: example ``i`` of global batch ``b`` is element ``b * G + i`` of a seeded,
per-epoch reshuffled order over all training blocks (Grain ``shuffle().repeat()``). Each
process materialises only its rows ``[start, stop)`` of every microbatch, and the Grain
iterator's state is just the next global batch index: the data position is independent of the
number of hosts and devices.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import grain
import numpy as np

from ptft_jax.data.masking import MaskingSpec, mask_rows
from ptft_jax.data.sources import DataError
from ptft_jax.data.tokenize import (
    continuations_cached,
    special_ids,
    tokenize_cached,
    word_continuations,
)


@dataclasses.dataclass
class Blocks:
    """Fixed-length token blocks ``[N, L]`` with the number of real tokens in each; for
    next-sentence prediction also segment ids ``[N, L]`` and labels ``[N]`` (1: random B); with
    a word segmenter, whether each token continues a word ``[N, L]`` (``segment.py``)."""

    ids: np.ndarray
    lengths: np.ndarray
    types: np.ndarray | None = None
    labels: np.ndarray | None = None
    continues: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, lengths)`` of blocks ``idx`` (a prepared store reads them from disk)."""
        return self.ids[idx], self.lengths[idx]

    def words(self, idx: np.ndarray) -> np.ndarray | None:
        """Whether each token of blocks ``idx`` continues a word; None: the vocabulary says."""
        return None if self.continues is None else self.continues[idx]

    def rows(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """``(ids, lengths, word flags or None)`` of blocks ``idx``."""
        return (*self.take(idx), self.words(idx))


def split_documents(num_docs: int, eval_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Indices of (train, eval) documents: a fixed permutation, the last fraction held out."""
    if num_docs < 2:
        raise DataError(
            f"The data has {num_docs} document(s); at least 2 are needed to hold out an "
            "evaluation split: add text to data.source."
        )
    order = np.random.default_rng(0).permutation(num_docs)
    n_eval = min(num_docs - 1, max(1, int(round(eval_fraction * num_docs))))
    return np.sort(order[: num_docs - n_eval]), np.sort(order[num_docs - n_eval :])


def pack(docs: list[np.ndarray], seq_len: int, cls_id: int, sep_id: int, pad_id: int) -> Blocks:
    """Concatenate documents (each followed by [SEP]) and cut ``[CLS] body [SEP]`` blocks."""
    body = seq_len - 2
    pieces = []
    for d in docs:
        if len(d):
            pieces += [d, np.array([sep_id], np.int32)]
    stream = np.concatenate(pieces) if pieces else np.zeros(0, np.int32)
    n = -(-len(stream) // body)
    padded = np.full(n * body, pad_id, np.int32)
    padded[: len(stream)] = stream
    bodies = padded.reshape(n, body)
    body_len = np.full(n, body, np.int64)
    if n:
        body_len[-1] = len(stream) - (n - 1) * body
    ids = np.full((n, seq_len), pad_id, np.int32)
    ids[:, 0] = cls_id
    ids[:, 1 : body + 1] = bodies
    ids[np.arange(n), body_len + 1] = sep_id
    return Blocks(ids=ids, lengths=body_len + 2)


@dataclasses.dataclass(frozen=True)
class BatchLayout:
    """Shape of one global batch: ``accum`` microbatches of ``micro`` rows; this process's rows."""

    accum: int
    micro: int
    start: int
    stop: int
    shards: int = 1  # the data-parallel shards (data x fsdp) that split every microbatch

    @property
    def global_rows(self) -> int:
        return self.accum * self.micro

    def rows(self) -> np.ndarray:
        """Global row numbers ``[accum, stop - start]`` this process feeds."""
        return np.arange(self.accum)[:, None] * self.micro + np.arange(self.start, self.stop)

    def with_rows(self, rows: int, accum: int | None = None) -> BatchLayout:
        """The same process's share of microbatches of ``rows`` rows (a multiple of ``shards``;
        shards are equal and a process's are contiguous, so its share scales)."""
        assert rows % self.shards == 0 and self.micro % self.shards == 0
        scale = rows // self.shards
        start, stop = (x // (self.micro // self.shards) * scale for x in (self.start, self.stop))
        return BatchLayout(self.accum if accum is None else accum, rows, start, stop, self.shards)


def _pairs(blocks: Blocks, idx: np.ndarray, real: np.ndarray) -> dict:
    """Segment ids and next-sentence labels of rows ``idx`` (nothing for plain MLM blocks)."""
    if blocks.labels is None:
        return {}
    return {
        "token_type_ids": blocks.types[idx],
        "next_sentence_label": blocks.labels[idx],
        "next_sentence_weight": real.astype(np.float32),
    }


def masking_spec(data_cfg, tokenizer) -> MaskingSpec:
    """What masking needs from the tokenizer and ``data.*``."""
    return MaskingSpec(
        vocab_size=len(tokenizer),
        mask_id=special_ids(tokenizer)["mask"],
        special_ids=tuple(sorted(set(tokenizer.all_special_ids))),
        max_predictions=data_cfg.max_predictions_per_seq,
        probability=data_cfg.mlm_probability,
        continuation=(
            word_continuations(tokenizer) if data_cfg.get("whole_word_masking", False) else None
        ),
    )


def served(blocks: Blocks, layout: BatchLayout, seed: int, make_rows):
    """A Grain MapDataset whose element ``b`` is this process's part of global batch ``b``:
    ``make_rows(block ids, global row numbers, b)`` builds the rows' arrays."""
    if len(blocks) < layout.global_rows:
        raise DataError(
            f"The training split has {len(blocks)} blocks, fewer than one global batch "
            f"({layout.global_rows}); add data or lower --config.train.batch_size."
        )
    order = grain.MapDataset.range(len(blocks)).shuffle(seed=seed).repeat(None)

    def local(b: int) -> dict[str, np.ndarray]:
        rows = layout.rows()
        flat = rows.reshape(-1)
        idx = np.array([order[b * layout.global_rows + int(r)] for r in flat])
        out = make_rows(idx, flat, b)
        return {k: v.reshape(*rows.shape, *v.shape[1:]) for k, v in out.items()}

    return grain.MapDataset.range(2**62).map(local)


def train_dataset(blocks: Blocks, spec: MaskingSpec, layout: BatchLayout, seed: int):
    """Masked MLM blocks (``served``): masks drawn anew for every (seed, batch, row)."""

    def make_rows(idx, flat, b):
        ids, lengths, words = blocks.rows(idx)
        out = mask_rows(ids, lengths, flat, spec, seed, b, words)
        return out | _pairs(blocks, idx, np.ones(len(idx), bool))

    return served(blocks, layout, seed, make_rows)


def train_iterator(dataset, num_threads: int, prefetch: int):
    """A checkpointable iterator over ``dataset`` with background threads prefetching."""
    options = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch)
    return iter(dataset.to_iter_dataset(options))


def in_order(count: int, layout: BatchLayout, max_batches: int):
    """``(b, rows, block ids, real)`` of the evaluation batches over ``count`` blocks in order;
    rows past the end are block 0 with ``real`` False (padding)."""
    g = layout.global_rows
    n_batches = -(-count // g)
    if max_batches > 0:
        n_batches = min(n_batches, max_batches)
    for b in range(n_batches):
        rows = layout.rows()
        idx = b * g + rows.reshape(-1)
        real = idx < count
        yield b, rows, np.where(real, idx, 0), real


def eval_batches(
    blocks: Blocks, spec: MaskingSpec, layout: BatchLayout, seed: int, max_batches: int
) -> Iterator[dict[str, np.ndarray]]:
    """The evaluation split in order, masked identically every time; the tail batch is padded.

    Padding rows have no masked positions (weight 0) so they never count in the metrics.
    """
    for b, rows, safe, real in in_order(len(blocks), layout, max_batches):
        ids, lengths, words = blocks.rows(safe)
        lengths = np.where(real, lengths, 1)
        out = mask_rows(ids, lengths, rows.reshape(-1), spec, seed + 1, b, words)
        out["masked_weights"] *= real[:, None]
        out |= _pairs(blocks, safe, real)
        yield {k: v.reshape(*rows.shape, *v.shape[1:]) for k, v in out.items()}


def load_texts(data_cfg) -> dict[str, list[dict]]:
    """The records of ``data.source`` for a task that reads ``data.text_field`` alone; an
    empty text stops the run, or is left out with ``data.skip_empty_texts``."""
    from ptft_jax.data.sources import load_records

    skip = data_cfg.get("skip_empty_texts", False)  # missing from the configs of older runs
    return load_records(data_cfg.source, fields=(data_cfg.text_field,), skip_empty=skip)


def mlm_texts(data_cfg, records: dict[str, list[dict]]) -> tuple[list[str], list[str]]:
    """(train texts, eval texts). A source's own ``validation`` split is the evaluation set;
    otherwise a fixed fraction of the training documents is held out."""
    from ptft_jax.data.sources import text_of

    def texts(split):
        rows = records[split]
        if data_cfg.max_documents:
            rows = rows[: data_cfg.max_documents]
        return [text_of(r, data_cfg.text_field) for r in rows]

    train_texts = texts("train")
    if "validation" in records:
        return train_texts, texts("validation")
    train_idx, eval_idx = split_documents(len(train_texts), data_cfg.eval_fraction)
    return [train_texts[i] for i in train_idx], [train_texts[i] for i in eval_idx]


def split_texts(data_cfg, records: dict[str, list[dict]], split: str) -> list[str]:
    """The texts of one evaluation split: the held-out ``validation`` documents as training
    chose them, or the source's ``test`` split."""
    from ptft_jax.data.sources import text_of

    if split == "validation":
        return mlm_texts(data_cfg, records)[1]
    if "test" not in records:
        raise DataError(
            f"data.source {data_cfg.source!r} has no test split; use --split=validation."
        )
    return [text_of(r, data_cfg.text_field) for r in records["test"]]


def pack_texts(texts: list[str], tokenizer, seq_len: int, cache_root, segmenter="") -> Blocks:
    """Tokenize (cached on disk) and pack ``texts`` into ``seq_len`` blocks; with a word
    ``segmenter``, each token's word flag packed alongside (specials and padding: False)."""
    ids = special_ids(tokenizer)
    docs = tokenize_cached(texts, tokenizer, cache_root)
    blocks = pack(docs, seq_len, ids["cls"], ids["sep"], ids["pad"])
    if not len(blocks):
        raise DataError("A data split tokenized to nothing; check data.source and text_field.")
    if segmenter:
        words = continuations_cached(texts, tokenizer, segmenter, cache_root)
        blocks.continues = pack(words, seq_len, 0, 0, 0).ids.astype(bool)
    return blocks
