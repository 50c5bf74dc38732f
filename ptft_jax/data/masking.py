"""Dynamic MLM masking (BERT's 15%, 80/10/10), a pure function of (seed, batch, row).

Token-level by default; with whole-word masking, 15% of the *words* are chosen and every piece
of a chosen word is predicted (each piece then gets its own 80/10/10 draw, as in BERT's
release), so no word is ever masked in part. A word is a piece and the pieces that continue it
(``tokenize.word_continuations``: WordPiece's ``##`` pieces, or byte-level BPE pieces without
a leading space), or, with a word segmenter (``segment.py``: Chinese words, which have no
``##`` pieces), the flags the segmentation gave each token.

Each row's randomness comes from ``default_rng([seed, batch_index, row])`` where ``row`` is the
row's position in the *global* batch, so masks are the same whatever the number of hosts or
devices, and a resumed run masks exactly as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class MaskingSpec:
    """What masking needs to know about the vocabulary and the budget."""

    vocab_size: int
    mask_id: int
    special_ids: tuple[int, ...]
    max_predictions: int
    probability: float = 0.15
    # Whole-word masking: True at the ids of pieces that continue a word; None = off.
    continuation: np.ndarray | None = dataclasses.field(default=None, compare=False)


def _whole_words(ids_L, candidates, spec: MaskingSpec, rng, continues_L=None) -> np.ndarray:
    """Positions of whole words (a piece and its continuations), ``probability`` of the
    words, never more than ``max_predictions`` positions; sorted. ``continues_L``: which
    tokens continue a word, by a word segmentation (else the vocabulary's table says)."""
    if not len(candidates):
        return candidates
    if continues_L is not None:
        cont = continues_L[candidates]
    else:
        cont = spec.continuation[ids_L[candidates]]
    # A word starts at a piece that is not a continuation, or after a gap (a special token).
    starts = ~cont | (np.diff(candidates, prepend=-2) > 1)
    words = np.split(candidates, np.flatnonzero(starts)[1:])
    target = max(1, int(round(len(words) * spec.probability)))
    chosen, budget = [], spec.max_predictions
    for w in rng.permutation(len(words)):
        if len(chosen) == target:
            break
        if len(words[w]) <= budget:  # a word that does not fit is skipped, never cut
            chosen.append(words[w])
            budget -= len(words[w])
    return np.sort(np.concatenate(chosen)) if chosen else candidates[:0]


def mask_row(
    ids_L: np.ndarray, length: int, spec: MaskingSpec, rng: np.random.Generator, continues_L=None
):
    """Mask one sequence; returns (input_ids, positions_K, label_ids_K, weights_K).
    ``continues_L``: each token's word flag from a word segmentation (whole-word masking)."""
    k = spec.max_predictions
    candidates = np.flatnonzero(~np.isin(ids_L[:length], spec.special_ids))
    if spec.continuation is not None:
        chosen = _whole_words(ids_L, candidates, spec, rng, continues_L)
    else:
        num = min(k, max(1, round(len(candidates) * spec.probability))) if len(candidates) else 0
        chosen = np.sort(rng.choice(candidates, size=num, replace=False)) if num else candidates[:0]
    num = len(chosen)
    action = rng.random(num)
    random_ids = rng.integers(0, spec.vocab_size, size=num)
    out = ids_L.copy()
    labels = ids_L[chosen]
    out[chosen] = np.where(action < 0.8, spec.mask_id, np.where(action < 0.9, random_ids, labels))
    positions = np.zeros(k, np.int32)
    label_ids = np.zeros(k, np.int32)
    weights = np.zeros(k, np.float32)
    positions[:num], label_ids[:num], weights[:num] = chosen, labels, 1.0
    return out, positions, label_ids, weights


def mask_rows(
    ids_BxL: np.ndarray,
    lengths_B: np.ndarray,
    rows_B: np.ndarray,
    spec: MaskingSpec,
    seed: int,
    batch_index: int,
    continues_BxL: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Mask a block of rows whose global row numbers are ``rows_B``; MLM batch fields.
    ``continues_BxL``: the rows' word flags from a word segmentation, if any."""
    words = [None] * len(ids_BxL) if continues_BxL is None else continues_BxL
    out = [
        mask_row(ids, int(n), spec, np.random.default_rng([seed, batch_index, int(r)]), w)
        for ids, n, r, w in zip(ids_BxL, lengths_B, rows_B, words, strict=True)
    ]
    input_ids, positions, label_ids, weights = (np.stack(x) for x in zip(*out, strict=True))
    length = ids_BxL.shape[1]
    return {
        "input_ids": input_ids.astype(np.int32),
        "attention_mask": (np.arange(length)[None] < lengths_B[:, None]).astype(np.int32),
        "token_type_ids": np.zeros_like(input_ids, np.int32),
        "masked_positions": positions,
        "masked_ids": label_ids,
        "masked_weights": weights,
    }
