"""Words with a tag each, for token classification: BIO checks, the label set, the alignment of
word tags to subword pieces, and rows with a label at every position.

A sentence is a list of words and a tag for each (``B-PER``, ``I-PER``, ``O``). Each distinct
word is tokenized on its own (a byte-level BPE's with a space in front, as transformers' pre-split
words with ``add_prefix_space``), so every word has at least one piece (an empty one: the unknown
token); the sentence gets the tokenizer's special tokens around its words. The first piece of a
word carries the word's tag; the other pieces and the special tokens weigh 0 (transformers' -100),
or, with ``data.label_all_subwords``, carry ``I-`` of the word's type. Words past
``max_seq_length`` are cut; evaluation counts them as predicted ``O`` and says how many.
"""

from __future__ import annotations

import dataclasses
import logging
import re

import numpy as np

from ptft_jax.data.files import DataError, origin
from ptft_jax.data.tokenize import is_byte_level

log = logging.getLogger(__name__)
OUTSIDE = "O"


@dataclasses.dataclass
class TaggedExamples:
    """Tokenized sentences of one split (ragged arrays kept as lists)."""

    ids: list[np.ndarray]
    type_ids: list[np.ndarray]
    labels: list[np.ndarray]  # a class id at every position (0 where the weight is 0)
    weights: list[np.ndarray]  # 1 at the positions trained and scored on
    firsts: list[np.ndarray]  # the position of each kept word's first piece
    tags: list[list[str]]  # the gold tag of every word, kept or cut

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def cut_words(self) -> int:
        return sum(len(t) - len(f) for t, f in zip(self.tags, self.firsts, strict=True))


def sentences(records, tokens_field: str, tags_field: str | None, split: str):
    """``(words, tags)`` of every record (tags None without ``tags_field``); DataError naming the
    first record whose fields are missing, not lists of strings, or of unequal length."""
    out = []
    for record in records:
        words = record.get(tokens_field)
        tags = record.get(tags_field) if tags_field else [OUTSIDE] * len(words or [])
        for field, value in ((tokens_field, words), (tags_field, tags)):
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                have = ", ".join(map(repr, record)) or "none"
                raise DataError(
                    f"{origin(record)} has no list of strings in {field!r} (its fields: {have}); "
                    "set --config.data.tokens_field and --config.data.tags_field to its word and "
                    "tag lists."
                )
        if len(words) != len(tags) or not words:
            raise DataError(
                f"{origin(record)} has {len(words)} words but {len(tags)} tags in the {split} "
                "split; give every word one tag."
            )
        out.append((words, tags))
    return out


def check_bio(records, tagged, split: str) -> None:
    """Stop at a tag that is not BIO (``O``, ``B-TYPE``, ``I-TYPE``), naming its record; an
    ``I-`` tag that begins an entity (after ``O`` or another type) is scored as a beginning,
    as seqeval does: one line counts them."""
    begins, first = 0, None
    for record, (_, tags) in zip(records, tagged, strict=True):
        before = OUTSIDE
        for tag in tags:
            if tag != OUTSIDE and not re.fullmatch(r"[BI]-\S+", tag):
                raise DataError(
                    f"{origin(record)} has the tag {tag!r:.40}, not BIO (O, B-TYPE or I-TYPE); "
                    "convert the tags to BIO."
                )
            if tag.startswith("I-") and before[2:] != tag[2:]:
                begins += 1
                first = record if first is None else first
            before = tag
    if begins:
        log.warning(
            "%d %s-split entities begin with an I- tag (first at %s); they are scored as "
            "beginnings, as seqeval does",
            begins,
            split,
            origin(first),
        )


def label_names(tagged) -> list[str]:
    """``O``, then ``B-`` and ``I-`` of every entity type of the training split, sorted."""
    types = sorted({t[2:] for _, tags in tagged for t in tags if t != OUTSIDE})
    return [OUTSIDE] + [f"{p}-{t}" for t in types for p in "BI"]


def check_known(records, tagged, names: list[str], split: str) -> None:
    """Stop at the first entity type that the training split never has."""
    known = set(names)
    for record, (_, tags) in zip(records, tagged, strict=True):
        for tag in tags:
            if tag not in known:
                raise DataError(
                    f"{origin(record)} has the entity type {tag[2:]!r}, which the training split "
                    "never has; add examples of it to the training split or fix the tag."
                )


def special_template(tokenizer) -> tuple[list[int], list[int]]:
    """The special ids a tokenizer puts before and after one text (``[CLS]``, ``[SEP]``)."""
    plain = tokenizer("a", add_special_tokens=False)["input_ids"]
    full = tokenizer("a")["input_ids"]
    at = next(i for i in range(len(full)) if full[i : i + len(plain)] == plain)
    return full[:at], full[at + len(plain) :]


def word_pieces(tokenizer, words) -> dict[str, list[int]]:
    """The pieces of each distinct word (one batched call)."""
    distinct = sorted(set(words))
    space = " " if is_byte_level(tokenizer) else ""
    pieces = tokenizer([space + w for w in distinct], add_special_tokens=False)["input_ids"]
    unk = [tokenizer.unk_token_id if tokenizer.unk_token_id is not None else 0]
    return {w: p or unk for w, p in zip(distinct, pieces, strict=True)}


def encode(tagged, tokenizer, names, max_len: int, all_subwords: bool) -> TaggedExamples:
    """Token ids, labels and weights of sentences ``tagged`` (``(words, tags)``), cut to
    ``max_len`` tokens with the special ones."""
    before, after = special_template(tokenizer)
    pieces = word_pieces(tokenizer, [w for words, _ in tagged for w in words])
    index = {n: i for i, n in enumerate(names)}
    room = max_len - len(before) - len(after)
    out = TaggedExamples([], [], [], [], [], [])
    for words, tags in tagged:
        ids, labels, weights, firsts = list(before), [0] * len(before), [0.0] * len(before), []
        for word, tag in zip(words, tags, strict=True):
            p = pieces[word]
            if len(ids) - len(before) + len(p) > room:
                break
            firsts.append(len(ids))
            inside = tag if tag == OUTSIDE else f"I-{tag[2:]}"
            rest = (index.get(inside, 0), 1.0) if all_subwords else (0, 0.0)
            ids += p
            labels += [index.get(tag, 0)] + [rest[0]] * (len(p) - 1)
            weights += [1.0] + [rest[1]] * (len(p) - 1)
        ids += after
        labels += [0] * len(after)
        weights += [0.0] * len(after)
        out.ids.append(np.asarray(ids, np.int32))
        out.type_ids.append(np.zeros(len(ids), np.int32))
        out.labels.append(np.asarray(labels, np.int32))
        out.weights.append(np.asarray(weights, np.float32))
        out.firsts.append(np.asarray(firsts, np.int64))
        out.tags.append(list(tags))
    return out


def make_batch(ex: TaggedExamples, idx: np.ndarray, length: int, pad_id: int) -> dict:
    """Arrays ``[rows, length]`` for example ids ``idx``, one a row (-1: a padding row, which
    attends to one position and weighs nothing)."""
    rows = len(idx)
    out = _empty(rows, length, pad_id)
    for r, i in enumerate(idx):
        if i < 0:
            out["attention_mask"][r, 0] = 1
            continue
        _put(out, r, 0, ex, i, 1)
    return out


def make_packed(ex: TaggedExamples, rows: list[list[int]], row_len: int, slots: int, pad_id: int):
    """Packed rows (``data/packing.py``): examples one after another, the attention mask
    numbering them from 1, positions restarting at each (``slots`` is unused: labels are per
    position)."""
    out = _empty(len(rows), row_len, pad_id)
    out["position_ids"] = np.zeros((len(rows), row_len), np.int32)
    for r, members in enumerate(rows):
        if not members:
            out["attention_mask"][r, 0] = 1
        at = 0
        for j, e in enumerate(members):
            at = _put(out, r, at, ex, e, j + 1)
    return out


def _empty(rows: int, length: int, pad_id: int) -> dict:
    zeros = np.zeros((rows, length), np.int32)
    return {
        "input_ids": np.full((rows, length), pad_id, np.int32),
        "attention_mask": zeros.copy(),
        "token_type_ids": zeros.copy(),
        "labels": zeros.copy(),
        "weights": np.zeros((rows, length), np.float32),
    }


def _put(out: dict, r: int, at: int, ex: TaggedExamples, e: int, segment: int) -> int:
    """Example ``e`` into row ``r`` from position ``at``; returns where it ends."""
    n = len(ex.ids[e])
    span = slice(at, at + n)
    out["input_ids"][r, span], out["token_type_ids"][r, span] = ex.ids[e], ex.type_ids[e]
    out["labels"][r, span], out["weights"][r, span] = ex.labels[e], ex.weights[e]
    out["attention_mask"][r, span] = segment
    if "position_ids" in out:
        out["position_ids"][r, span] = np.arange(n)
    return at + n


# A word for predict: a run of letters and digits (not CJK), one CJK character, or one other
# visible character (punctuation), as BERT's basic tokenizer splits text.
_CJK = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u3000-\u303f\uff00-\uffef"
WORD = re.compile(rf"[{_CJK}]|[^\W{_CJK}]+|[^\w\s]")


def split_words(text: str) -> list[tuple[str, int, int]]:
    """``(word, start, end)`` character spans of ``text``'s words (``WORD``)."""
    return [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]
