"""Chinese whole-word masking: which tokens continue a word, from a word segmentation of the
raw text (``data.word_segmenter``), as hfl's Chinese-BERT-wwm defines it.

A BERT tokenizer cuts Chinese text into single characters, none of them a ``##`` piece, so the
piece rule alone makes every character a word of its own. Here the raw text is segmented into
words (jieba), and a token continues a word when it starts inside a word made only of CJK
ideographs (after its first character), or inside the character the token before it started
(a byte-level BPE can cut one character into several tokens). Every other token keeps the
piece rule of ``tokenize.word_continuations``: English words in mixed text keep ``##``, and in
a byte-level BPE a token right after one that ends in a CJK character starts a word even
without a space before it.

The result is one flag per token, computed once per (texts, tokenizer, segmenter) and cached
next to the token ids; masking reads them instead of the vocabulary's table.
"""

from __future__ import annotations

import functools
import importlib.util
import logging

import numpy as np

from ptft_jax.errors import ConfigError, DataError

SEGMENTERS = ("", "jieba")


def is_cjk(char: str) -> bool:
    """Whether ``char`` is a CJK ideograph, by the blocks BERT's tokenizer splits around."""
    cp = ord(char)
    return (
        0x4E00 <= cp <= 0x9FFF
        or 0x3400 <= cp <= 0x4DBF
        or 0x20000 <= cp <= 0x2A6DF
        or 0x2A700 <= cp <= 0x2B73F
        or 0x2B740 <= cp <= 0x2B81F
        or 0x2B820 <= cp <= 0x2CEAF
        or 0xF900 <= cp <= 0xFAFF
        or 0x2F800 <= cp <= 0x2FA1F
    )


@functools.cache
def _jieba():
    try:
        import jieba
    except ImportError:
        raise DataError(
            "data.word_segmenter='jieba' needs the jieba package: pip install 'ptft_jax[zh]' "
            "(or pip install jieba)."
        ) from None
    jieba.setLogLevel(logging.WARNING)  # its dictionary-loading lines say nothing to act on
    segmenter = jieba.Tokenizer()
    segmenter.initialize()
    return segmenter


def version(name: str) -> str:
    """What the segmentation depends on, for caches and fingerprints."""
    import importlib.metadata

    return f"{name}-{importlib.metadata.version(name)}"


def word_spans(text: str, name: str) -> np.ndarray:
    """``[n, 2]`` character spans ``[start, end)`` of the words of two or more CJK ideographs
    that segmenter ``name`` finds in ``text`` (jieba's default mode, with its HMM for words
    not in its dictionary: deterministic)."""
    spans = [
        (start, end)
        for word, start, end in _jieba().tokenize(text)
        if end - start > 1 and all(is_cjk(c) for c in word)
    ]
    return np.array(spans, np.int64).reshape(-1, 2)


def continues(text: str, offsets: np.ndarray, by_piece: np.ndarray, name: str) -> np.ndarray:
    """One flag per token of ``text`` (character ``offsets`` ``[n, 2]``): True where the token
    continues a word. ``by_piece`` is the piece rule's flag of each token (its id's entry of
    ``tokenize.word_continuations``)."""
    n = len(offsets)
    if not n:
        return np.zeros(0, bool)
    starts, ends = offsets[:, 0], offsets[:, 1]
    cjk = np.array([e > s and is_cjk(text[s]) for s, e in offsets], bool)
    ends_cjk = np.array([e > s and is_cjk(text[e - 1]) for s, e in offsets], bool)
    prev_end = np.concatenate([[0], ends[:-1]])
    prev_cjk = np.concatenate([[False], ends_cjk[:-1]])
    spans = word_spans(text, name)
    inside = np.zeros(n, bool)
    if len(spans):
        k = np.maximum(np.searchsorted(spans[:, 0], starts, side="right") - 1, 0)
        inside = (starts > spans[k, 0]) & (starts < spans[k, 1])
    same_char = (np.arange(n) > 0) & (starts < prev_end)
    return np.where(cjk, inside | same_char, by_piece & ~prev_cjk | same_char)


def continuations(texts: list[str], tokenizer, name: str, by_piece: np.ndarray) -> list[np.ndarray]:
    """``continues`` of every text, tokenized as ``tokenize_cached`` tokenizes it."""
    encoded = tokenizer(
        texts, add_special_tokens=False, return_attention_mask=False, return_offsets_mapping=True
    )
    out = []
    for text, ids, offsets in zip(
        texts, encoded["input_ids"], encoded["offset_mapping"], strict=True
    ):
        offsets = np.array(offsets, np.int64).reshape(-1, 2)
        out.append(continues(text, offsets, by_piece[np.array(ids, np.int64)], name))
    return out


def check(data_cfg) -> None:
    """One sentence for a segmenter this version does not know, or one without whole-word
    masking (run by ``config.validate``)."""
    name = data_cfg.get("word_segmenter", "")
    if name not in SEGMENTERS:
        raise ConfigError(
            f"data.word_segmenter={name!r} is not one of {SEGMENTERS}; use 'jieba' for Chinese "
            "whole-word masking or '' for none."
        )
    if name and importlib.util.find_spec(name) is None:
        raise ConfigError(
            f"data.word_segmenter={name!r} needs the {name} package: pip install 'ptft_jax[zh]' "
            f"(or pip install {name})."
        )
    if name and not data_cfg.get("whole_word_masking", False):
        raise ConfigError(
            f"data.word_segmenter={name!r} only says what a word is for whole-word masking; set "
            "--config.data.whole_word_masking=True or drop the segmenter."
        )
