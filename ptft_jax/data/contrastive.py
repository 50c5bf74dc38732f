"""Sentence data for contrastive pretraining (SimCSE) and for the linear probe.

Unsupervised: every sentence of the documents (split as for next-sentence prediction) is one
row; the model reads it twice, and dropout makes the two views differ. Supervised: each record
gives ``text`` and its positive ``text_pair``. Rows are ``[CLS] tokens [SEP]`` padded to
``max_seq_length``; every epoch is a seeded permutation, and batch ``b`` is a pure function of
(seed, b), independent of the topology, as for the other tasks.

Packed (``data.packing``), global batch ``b`` holds the same examples, each as its two views
side by side in one row (the text, then its positive or the text again) and several examples a
row (``data/packing.py``'s best-fit decreasing, in rows of ``2 * max_seq_length``): the same
negatives, computed without the padding. Rows a batch and views a row are the most any batch of
the run needs, found by planning every batch once (about 16 microseconds an example).
"""

from __future__ import annotations

import dataclasses

import grain
import numpy as np

from ptft_jax.data import classify, packing, sources
from ptft_jax.data.nsp import split_sentences
from ptft_jax.data.sources import DataError
from ptft_jax.data.tokenize import special_ids, tokenize_cached


@dataclasses.dataclass
class Rows:
    """Padded ``[N, L]`` token ids and masks; ``pair_*`` the positives (supervised)."""

    ids: np.ndarray
    mask: np.ndarray
    pair_ids: np.ndarray | None = None
    pair_mask: np.ndarray | None = None
    labels: np.ndarray | None = None  # probe sets only

    def __len__(self) -> int:
        return len(self.ids)


def encode(texts: list[str], tokenizer, seq_len: int, cache_root) -> tuple[np.ndarray, np.ndarray]:
    """``[CLS] text [SEP]`` truncated and padded to ``seq_len``: (ids, mask)."""
    sp = special_ids(tokenizer)
    ids = np.full((len(texts), seq_len), sp["pad"], np.int32)
    mask = np.zeros((len(texts), seq_len), np.int32)
    for r, body in enumerate(tokenize_cached(texts, tokenizer, cache_root)):
        body = body[: seq_len - 2]
        ids[r, : len(body) + 2] = [sp["cls"], *body, sp["sep"]]
        mask[r, : len(body) + 2] = 1
    return ids, mask


def sentences(texts: list[str], min_words: int = 4) -> list[str]:
    """The sentences of documents, without fragments shorter than ``min_words`` words."""
    return [s for t in texts for s in split_sentences(t) if len(s.split()) >= min_words]


def rows(data_cfg, texts: list[str], pairs: list[str] | None, tokenizer, cache_root) -> Rows:
    """Unsupervised rows from documents, or supervised (text, pair) rows."""
    seq = data_cfg.max_seq_length
    if pairs is None:
        texts = sentences(texts)
        if not texts:
            raise DataError("The data has no sentences of 4 words or more; check data.source.")
        return Rows(*encode(texts, tokenizer, seq, cache_root))
    return Rows(
        *encode(texts, tokenizer, seq, cache_root), *encode(pairs, tokenizer, seq, cache_root)
    )


def _batch(data: Rows, idx: np.ndarray) -> dict:
    real = idx >= 0
    safe = np.where(real, idx, 0)
    out = {"input_ids": data.ids[safe], "attention_mask": data.mask[safe]}
    if data.pair_ids is not None:
        out |= {"pair_input_ids": data.pair_ids[safe], "pair_attention_mask": data.pair_mask[safe]}
    out["weights"] = real.astype(np.float32)
    return out


def check_batch_size(data: Rows, global_batch: int) -> None:
    if len(data) < global_batch:
        raise DataError(
            f"The training split has {len(data)} rows, fewer than one global batch "
            f"({global_batch}); add data or lower --config.train.batch_size."
        )


def train_dataset(data: Rows, layout, seed: int):
    """Grain MapDataset: element ``b`` is this process's rows of global batch ``b``."""
    g = layout.global_rows
    check_batch_size(data, g)
    order = grain.MapDataset.range(len(data)).shuffle(seed=seed).repeat(None)
    spe = len(data) // g  # an epoch drops its last partial batch

    def local(b: int) -> dict:
        epoch, i = divmod(b, spe)
        rows_ = layout.rows()
        idx = np.array([order[epoch * len(data) + i * g + int(r)] for r in rows_.reshape(-1)])
        out = _batch(data, idx)
        return {k: v.reshape(*rows_.shape, *v.shape[1:]) for k, v in out.items()}

    return grain.MapDataset.range(2**62).map(local), spe


def eval_batches(data: Rows, layout, max_batches: int = 0):
    """Every row once, in order; the tail batch is padded with rows of weight 0."""
    g = layout.global_rows
    n = -(-len(data) // g)
    for b in range(min(n, max_batches) if max_batches else n):
        rows_ = layout.rows()
        idx = b * g + rows_.reshape(-1)
        out = _batch(data, np.where(idx < len(data), idx, -1))
        yield {k: v.reshape(*rows_.shape, *v.shape[1:]) for k, v in out.items()}


def probe_sets(
    source: str, fields: tuple[str, str], data_cfg, tokenizer, cache_root, max_examples: int = 0
) -> dict:
    """The labelled ``train`` and ``test`` splits of ``source`` (the project's split rule) as
    Rows with labels, for a linear probe of sentence embeddings; ``fields`` are its text and
    label fields."""
    text, label = fields
    split = classify.splits(sources.load_records(source), (text,), label)
    classes = sorted({str(r.get(label)) for r in split["train"]})
    out = {}
    for name in ("train", "test"):
        records = split[name]
        if max_examples:
            records = classify.subsample(records, label, max_examples, 0)
        texts = [sources.text_of(r, text) for r in records]
        out[name] = Rows(*encode(texts, tokenizer, data_cfg.max_seq_length, cache_root))
        labels = [str(r.get(label)) for r in records]
        out[name].labels = np.array([classes.index(v) if v in classes else -1 for v in labels])
    return out


class PackedPlan:
    """Packed batches of ``Rows``: global batch ``b`` (of ``global_batch`` examples, in the
    unpacked run's seeded order) or evaluation group ``g`` (``global_batch`` examples in order),
    packed into rows of ``row_len``."""

    def __init__(self, data: Rows, global_batch: int, seed: int, row_len: int):
        self.data, self.g, self.row_len = data, global_batch, row_len
        first = data.mask.sum(1)
        second = first if data.pair_mask is None else data.pair_mask.sum(1)
        self.views = np.stack([first, second], 1)  # [N, 2] view lengths
        self.order = grain.MapDataset.range(len(data)).shuffle(seed=seed).repeat(None)
        self.spe = len(data) // global_batch

    def members(self, b: int) -> np.ndarray:
        epoch, i = divmod(b, self.spe)
        at = epoch * len(self.data) + i * self.g
        return np.array([self.order[at + r] for r in range(self.g)])

    def pack(self, ids: np.ndarray) -> list[list[int]]:
        """Examples ``ids`` in rows, both views of each in the same row."""
        return packing.fit_rows(ids, self.views[ids].sum(1), self.row_len)

    def rows(self, b: int) -> list[list[int]]:
        return self.pack(self.members(b))

    def batch(self, rows: list[list[int]], shape: packing.Shape, pad_id: int) -> dict:
        """Arrays ``[len(rows), row_len]`` (tokens), ``[len(rows), 2 * slots]`` (views' first
        tokens) and ``[len(rows), slots]`` (example weights); the views of slot ``j`` are
        segments ``2j + 1`` and ``2j + 2``. An empty row attends to one position."""
        d, n, k = self.data, len(rows), shape.slots
        ids = np.full((n, self.row_len), pad_id, np.int32)
        segments, positions = (np.zeros((n, self.row_len), np.int32) for _ in range(2))
        firsts = np.zeros((n, 2 * k), np.int32)
        weights = np.zeros((n, k), np.float32)
        second = d.ids if d.pair_ids is None else d.pair_ids
        for r, members in enumerate(rows):
            segments[r, 0] = 1  # an empty row's one position (a first example's anyway)
            at = 0
            for j, e in enumerate(members):
                for v, source in enumerate((d.ids, second)):
                    m = int(self.views[e, v])
                    ids[r, at : at + m] = source[e, :m]
                    segments[r, at : at + m] = 2 * j + v + 1
                    positions[r, at : at + m] = np.arange(m)
                    firsts[r, 2 * j + v] = at
                    at += m
                weights[r, j] = 1.0
        return {
            "input_ids": ids,
            "attention_mask": segments,
            "position_ids": positions,
            "cls_positions": firsts,
            "weights": weights,
        }


def packed_shape(plan: PackedPlan, batches: int, eval_groups, shards: int):
    """The ``Shape`` every one of the run's ``batches`` training batches and ``eval_groups``
    (lists of rows) fits, and the share of its positions that hold tokens in training."""
    most_rows, most_slots, tokens = 0, 1, 0
    for b in range(batches):
        members = plan.members(b)
        rows = plan.pack(members)
        most_rows, most_slots = max(most_rows, len(rows)), max(most_slots, *map(len, rows))
        tokens += int(plan.views[members].sum())
    for rows in eval_groups:
        most_rows, most_slots = max(most_rows, len(rows)), max(most_slots, *map(len, rows))
    shape = packing.Shape(-(-most_rows // shards) * shards, most_slots)
    return shape, tokens / max(batches * shape.rows * plan.row_len, 1)


def packed_train_dataset(plan: PackedPlan, shape: packing.Shape, layout, pad_id: int):
    """Grain MapDataset: element ``b`` is this process's rows of packed global batch ``b``."""

    return grain.MapDataset.range(2**62).map(
        lambda b: _local(plan, plan.rows(b), shape, layout, pad_id)
    )


def packed_eval_groups(plan: PackedPlan, max_batches: int = 0) -> list[list[list[int]]]:
    """Every example once, ``global_batch`` consecutive ones a group, each group in rows."""
    n = len(plan.data)
    groups = range(0, n, plan.g)
    if max_batches:
        groups = groups[:max_batches]
    return [plan.pack(np.arange(i, min(i + plan.g, n))) for i in groups]


def packed_eval_batches(plan, groups, shape: packing.Shape, layout, pad_id: int):
    for rows in groups:
        yield _local(plan, rows, shape, layout, pad_id)


def _local(plan: PackedPlan, rows: list, shape: packing.Shape, layout, pad_id: int) -> dict:
    """This process's part of the global batch of ``rows``, padded with empty rows to
    ``shape.rows``."""
    rows = rows + [[]] * (shape.rows - len(rows))
    take = layout.rows()
    out = plan.batch([rows[i] for i in take.reshape(-1)], shape, pad_id)
    return {k: v.reshape(*take.shape, *v.shape[1:]) for k, v in out.items()}
