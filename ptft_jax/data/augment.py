"""A transfer set for distillation: word-level variants of the training texts.

A teacher knows more than the labels of its training texts: how sure it is about parts of
them. Each variant is either a contiguous span of a text's words (a phrase: movie-review
phrases carry sentiment of their own, as SST's phrase labels show) or the text with some words
dropped. Variants have no label; the teacher's soft labels are all the student learns from them
(TinyBERT's data augmentation, without its word-replacement model). Seeded and made once at
start-up, so the batches stay a pure function of (seed, step) and a resume sees the same set.
"""

from __future__ import annotations

import numpy as np

DROP = 0.2  # word-dropout variants drop each word with this probability


def variants(text: str, k: int, rng: np.random.Generator) -> list[str]:
    """``k`` variants of ``text``: even ones a random span of 2 to n-1 words, odd ones the
    text with each word dropped with probability ``DROP`` (at least one word kept, and never
    all of them). A text of one word has no variants."""
    words = text.split()
    n = len(words)
    out = []
    if n < 2:
        return out
    for j in range(k):
        if j % 2 == 0:
            size = int(rng.integers(min(2, n - 1), n))  # 2 <= size <= n - 1 (1 when n == 2)
            start = int(rng.integers(0, n - size + 1))
            kept = words[start : start + size]
        else:
            keep = rng.random(n) >= DROP
            if keep.all():
                keep[rng.integers(n)] = False
            if not keep.any():
                keep[rng.integers(n)] = True
            kept = [w for w, m in zip(words, keep, strict=True) if m]
        out.append(" ".join(kept))
    return out


def transfer_set(texts: list[str], k: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Up to ``k`` variants of every text and, for each, the index of the text it came from."""
    rng = np.random.default_rng([seed, 0x7A5F])
    out, source = [], []
    for i, text in enumerate(texts):
        vs = variants(text, k, rng)
        out += vs
        source += [i] * len(vs)
    return out, np.asarray(source, np.int64)
