"""Packed rows of labelled examples: several examples a row, no padding between them.

A row of ``row_len`` tokens holds whole examples one after the other; its attention mask
numbers them from 1 (0: padding), positions restart at each example, and ``cls_positions``
gives each example's first token (the [CLS] its head reads). Shapes stay static: every batch
has ``rows`` rows and ``slots`` example slots a row.

Rows are filled best-fit decreasing: longest example first, each into the fullest row it fits.
Only lengths decide how full the rows are; which of the equally long examples goes where
follows a seeded permutation. So every epoch has the same number of rows, and the shape a run
needs is known from the lengths alone. Training: an epoch's rows, shuffled, are dealt to its
``steps * accum`` microbatches in equal runs (one row more or less); a run takes as many steps
an epoch as unpacked batches would, ``batch_size`` examples a step on average, and batch ``b``
is a pure function of (seed, b), whatever the topology. Evaluation packs a whole split.
"""

from __future__ import annotations

import dataclasses
import functools

import grain
import numpy as np


@dataclasses.dataclass(frozen=True)
class Shape:
    """Rows of a microbatch (a multiple of the data-parallel shards) and slots a row."""

    rows: int
    slots: int


def fit_rows(ids: np.ndarray, lengths: np.ndarray, row_len: int) -> list[list[int]]:
    """Example ``ids`` (of ``lengths``, each at most ``row_len``) in rows: longest first
    (equal lengths in the given order), each into the row with the least room that holds it."""
    by_room: list[list[int]] = [[] for _ in range(row_len + 1)]  # rows by the room left
    has_room = np.zeros(row_len + 1, bool)
    rows: list[list[int]] = []
    for i in np.argsort(-lengths, kind="stable"):
        n = int(lengths[i])
        fits = np.flatnonzero(has_room[n:])
        if len(fits):
            room = n + int(fits[0])
            r = by_room[room].pop()
            has_room[room] = bool(by_room[room])
        else:
            room, r = row_len, len(rows)
            rows.append([])
        rows[r].append(int(ids[i]))
        by_room[room - n].append(r)
        has_room[room - n] = True
    return rows


def epoch_rows(lengths: np.ndarray, row_len: int, seed: int, epoch: int) -> list[list[int]]:
    """An epoch's rows of example ids, in a seeded order."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(lengths))
    rows = fit_rows(order, lengths[order], row_len)
    return [rows[i] for i in rng.permutation(len(rows))]


def split_rows(lengths: np.ndarray, row_len: int) -> list[list[int]]:
    """Every example of an evaluation split once, in rows."""
    return fit_rows(np.arange(len(lengths)), lengths, row_len)


def make_batch(ex, rows: list[list[int]], row_len: int, slots: int, pad_id: int) -> dict:
    """Arrays ``[len(rows), row_len]`` (tokens) and ``[len(rows), slots]`` (examples) of
    ``rows`` of example ids (``ex``: ``classify.Examples``); an empty row is padding and
    attends to one position, so its softmax stays finite."""
    n = len(rows)
    ids = np.full((n, row_len), pad_id, np.int32)
    types, segments, positions = (np.zeros((n, row_len), np.int32) for _ in range(3))
    firsts = np.zeros((n, slots), np.int32)
    labels = np.zeros((n, slots), ex.labels.dtype)
    weights = np.zeros((n, slots), np.float32)
    label_weights = np.zeros((n, slots), np.float32)
    for r, members in enumerate(rows):
        if not members:
            segments[r, 0] = 1
        at = 0
        for j, e in enumerate(members):
            m = len(ex.ids[e])
            ids[r, at : at + m], types[r, at : at + m] = ex.ids[e], ex.type_ids[e]
            segments[r, at : at + m], positions[r, at : at + m] = j + 1, np.arange(m)
            firsts[r, j], labels[r, j], weights[r, j] = at, ex.labels[e], 1.0
            label_weights[r, j] = 1.0 if ex.label_weights is None else ex.label_weights[e]
            at += m
    return {
        "input_ids": ids,
        "attention_mask": segments,
        "token_type_ids": types,
        "position_ids": positions,
        "cls_positions": firsts,
        "labels": labels,
        "weights": weights,
        "label_weights": label_weights,
    }


def slot_ids(rows: list[list[int]], slots: int) -> np.ndarray:
    """``[len(rows), slots]``: the example in each slot, -1 for an empty one."""
    out = np.full((len(rows), slots), -1, np.int64)
    for r, members in enumerate(rows):
        out[r, : len(members)] = members
    return out


class TrainRows:
    """The packed training batches of a run: ``steps_per_epoch`` global batches an epoch of
    ``accum`` microbatches each."""

    def __init__(self, lengths, steps_per_epoch: int, accum: int, row_len: int, seed: int):
        self.lengths, self.spe, self.accum = lengths, steps_per_epoch, accum
        self.row_len, self.seed = row_len, seed
        self.epoch = functools.lru_cache(maxsize=2)(lambda e: epoch_rows(lengths, row_len, seed, e))

    def _bounds(self, count: int) -> np.ndarray:
        """Where each microbatch's run of an epoch's ``count`` rows starts (and the end)."""
        return np.arange(self.spe * self.accum + 1) * count // (self.spe * self.accum)

    def shape(self, shards: int) -> Shape:
        """Rows and slots every microbatch fits in (every epoch has the same rows)."""
        rows = self.epoch(0)
        most = int(np.diff(self._bounds(len(rows))).max())
        return Shape(rows=-(-most // shards) * shards, slots=max(map(len, rows)))

    def batch(self, b: int) -> list:
        """Global batch ``b``: its ``accum`` microbatches, each a list of rows."""
        rows = self.epoch(b // self.spe)
        ends = self._bounds(len(rows))
        first = (b % self.spe) * self.accum
        return [rows[ends[m] : ends[m + 1]] for m in range(first, first + self.accum)]


def train_dataset(ex, plan: TrainRows, shape: Shape, layout, pad_id: int, make=make_batch):
    """Grain MapDataset: element ``b`` is this process's rows of packed global batch ``b``
    (``make``: how rows are made of examples, ``make_batch``'s signature)."""

    def local(b: int) -> dict:
        flat = [row for micro in plan.batch(b) for row in micro + [[]] * (shape.rows - len(micro))]
        rows = layout.rows()
        out = make(ex, [flat[i] for i in rows.reshape(-1)], plan.row_len, shape.slots, pad_id)
        return {k: v.reshape(*rows.shape, *v.shape[1:]) for k, v in out.items()}

    return grain.MapDataset.range(2**62).map(local)


def eval_batches(
    ex, rows: list[list[int]], shape: Shape, layout, row_len: int, pad_id: int, make=make_batch
):
    """``(batch, example ids [rows, slots])`` over ``rows`` (``split_rows``), ``shape.rows`` rows
    a batch."""
    for i in range(0, len(rows), shape.rows):
        chunk = rows[i : i + shape.rows]
        chunk = chunk + [[]] * (shape.rows - len(chunk))
        take = layout.rows()
        picked = [chunk[j] for j in take.reshape(-1)]
        out = make(ex, picked, row_len, shape.slots, pad_id)
        yield (
            {k: v.reshape(*take.shape, *v.shape[1:]) for k, v in out.items()},
            slot_ids(chunk, shape.slots),
        )
