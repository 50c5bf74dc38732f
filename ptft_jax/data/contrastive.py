"""Sentence data for contrastive pretraining (SimCSE) and for the linear probe.

Unsupervised: every sentence of the documents (split as for next-sentence prediction) is one
row; the model reads it twice, and dropout makes the two views differ. Supervised: each record
gives ``text`` and its positive ``text_pair``. Rows are ``[CLS] tokens [SEP]`` padded to
``max_seq_length``; every epoch is a seeded permutation, and batch ``b`` is a pure function of
(seed, b), independent of the topology, as for the other tasks.
"""

from __future__ import annotations

import dataclasses

import grain
import numpy as np

from ptft_jax.data import classify, sources
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


def train_dataset(data: Rows, layout, seed: int):
    """Grain MapDataset: element ``b`` is this process's rows of global batch ``b``."""
    g = layout.global_rows
    if len(data) < g:
        raise DataError(
            f"The training split has {len(data)} rows, fewer than one global batch ({g}); add "
            "data or lower --config.train.batch_size."
        )
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
