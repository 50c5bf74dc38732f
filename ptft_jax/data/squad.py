"""Extractive question answering data: answer checks, and the windows (features) a long
context is cut into.

A SQuAD JSON file is one record a question (``files.read_squad``), in the flat layout of the
hub's ``squad`` datasets: ``id``, ``title``, ``question``, ``context`` and ``answers: {"text":
[...], "answer_start": [...]}`` (empty lists: no answer, SQuAD v2). Each question and its
context become windows of ``max_seq_length`` tokens, ``[CLS] question [SEP] context part
[SEP]``, the parts overlapping by ``doc_stride`` tokens (the fast tokenizer's overflowing
windows and offset mapping, as transformers' run_qa does). A window holding the whole first
answer is trained on its span; any other window points at ``[CLS]`` (position 0: "not in this
window").
"""

from __future__ import annotations

import dataclasses

import numpy as np

from ptft_jax.data.files import DataError, origin


def check_answers(records, question: str, context: str, answers: str, allow_empty: bool) -> None:
    """Stop at the first record whose fields are not text, whose answer is not at its
    ``answer_start`` in the context, or that has none when every question must have one."""
    for r in records:
        for field in (question, context):
            if not isinstance(r.get(field), str) or not r[field].strip():
                raise DataError(
                    f"{origin(r)} has no text in {field!r}; fill it in or set "
                    "--config.data.question_field / context_field."
                )
        given = r.get(answers)
        if not isinstance(given, dict) or not {"text", "answer_start"} <= set(given):
            raise DataError(
                f"{origin(r)} has no {answers!r} with text and answer_start lists; write them as "
                'SQuAD does ({"text": ["..."], "answer_start": [17]}).'
            )
        if not given["text"] and not allow_empty:
            raise DataError(
                f"{origin(r)} has no answer; SQuAD v2 questions without one need "
                "--config.data.version_2_with_negative=True."
            )
        for text, start in zip(given["text"], given["answer_start"], strict=True):
            if r[context][start : start + len(text)] != text:
                raise DataError(
                    f"{origin(r)}: the answer {text!r:.40} is not at answer_start {start} of the "
                    f"context (which has {r[context][start : start + len(text)]!r:.40} there); "
                    "fix answer_start."
                )


@dataclasses.dataclass
class Windows:
    """The windows of one split: token rows, their example, and for each token its character
    span in the context ((-1, -1) outside it)."""

    ids: list[np.ndarray]
    type_ids: list[np.ndarray]
    example: np.ndarray  # the record each window belongs to
    offsets: list[np.ndarray]  # [n, 2] character spans in the context
    starts: np.ndarray  # the answer's first and last token (0, 0: not in this window)
    ends: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)


def windows(records, tokenizer, cfg) -> Windows:
    """The windows of ``records`` (``cfg``: ``data.*``: fields, ``max_seq_length``,
    ``doc_stride``); one sentence for a question that leaves no room for its context."""
    questions = [r[cfg.question_field].lstrip() for r in records]
    contexts = [r[cfg.context_field] for r in records]
    enc = tokenizer(
        questions,
        contexts,
        truncation="only_second",
        max_length=cfg.max_seq_length,
        stride=cfg.doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        return_token_type_ids=True,
    )
    out = Windows([], [], np.zeros(0, np.int64), [], np.zeros(0, np.int64), np.zeros(0, np.int64))
    examples, starts, ends = [], [], []
    for i, e in enumerate(enc["overflow_to_sample_mapping"]):
        seq = enc.sequence_ids(i)
        offsets = np.array(
            [o if s == 1 else (-1, -1) for o, s in zip(enc["offset_mapping"][i], seq, strict=True)],
            np.int64,
        ).reshape(-1, 2)
        inside = np.flatnonzero(offsets[:, 0] >= 0)
        if not len(inside):
            raise DataError(
                f"{origin(records[e])}: its question fills data.max_seq_length="
                f"{cfg.max_seq_length} tokens, leaving no room for the context; raise "
                "max_seq_length or shorten the question."
            )
        answer = records[e][cfg.answers_field]
        start = end = 0
        if answer["text"]:
            first = answer["answer_start"][0]
            last = first + len(answer["text"][0])
            lo, hi = offsets[inside[0], 0], offsets[inside[-1], 1]
            if lo <= first and last <= hi:  # the whole answer is in this window
                start = int(inside[np.searchsorted(offsets[inside, 1], first, side="right")])
                end = int(inside[np.searchsorted(offsets[inside, 0], last, side="left") - 1])
        out.ids.append(np.asarray(enc["input_ids"][i], np.int32))
        types = enc["token_type_ids"][i] if "token_type_ids" in enc else [0] * len(seq)
        out.type_ids.append(np.asarray(types, np.int32))
        out.offsets.append(offsets)
        examples.append(e)
        starts.append(start)
        ends.append(end)
    out.example, out.starts, out.ends = (np.asarray(x, np.int64) for x in (examples, starts, ends))
    return out


def check_stride(cfg) -> None:
    """``doc_stride`` (the overlap of two windows) must leave each window new context."""
    if not 0 <= cfg.doc_stride < cfg.max_seq_length // 2:
        raise DataError(
            f"data.doc_stride={cfg.doc_stride} must be below half of data.max_seq_length="
            f"{cfg.max_seq_length} (windows overlap by doc_stride tokens); lower it, for "
            f"example to {cfg.max_seq_length // 4}."
        )


def make_batch(ex: Windows, idx: np.ndarray, length: int, pad_id: int) -> dict:
    """Arrays for windows ``idx``, one a row (-1: a padding row, weight 0)."""
    rows = len(idx)
    ids = np.full((rows, length), pad_id, np.int32)
    types = np.zeros((rows, length), np.int32)
    mask = np.zeros((rows, length), np.int32)
    starts, ends = np.zeros(rows, np.int32), np.zeros(rows, np.int32)
    for r, i in enumerate(idx):
        if i < 0:
            mask[r, 0] = 1
            continue
        n = len(ex.ids[i])
        ids[r, :n], types[r, :n], mask[r, :n] = ex.ids[i], ex.type_ids[i], 1
        starts[r], ends[r] = ex.starts[i], ex.ends[i]
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "token_type_ids": types,
        "start_positions": starts,
        "end_positions": ends,
        "weights": (np.asarray(idx) >= 0).astype(np.float32),
    }
