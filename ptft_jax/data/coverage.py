"""How much of a text a tokenizer can spell: the share of its tokens that are ``[UNK]``, which
the model cannot see. What reads data (MLM from raw text, ``prepare``, fine-tuning) logs it for
every split it read, and warns above ``UNKNOWN_WARN``."""

from __future__ import annotations

import logging

import numpy as np

from ptft_jax.data.tokenize import is_byte_level

log = logging.getLogger(__name__)

UNKNOWN_WARN = 0.01  # a larger [UNK] share of the data is a warning


def unknown_id(tokenizer) -> int | None:
    """The id text becomes where the vocabulary lacks a character (``[UNK]``); None for a
    byte-level BPE, which spells every text in its bytes (GPT-2's unknown is its end of text)."""
    if is_byte_level(tokenizer):
        return None
    return tokenizer.unk_token_id


def report_unknown(tokenizer, counts: dict[str, tuple[int, int]], what: str) -> None:
    """Log the ``[UNK]`` share of the data read (``counts``: split -> (unknown, text tokens)),
    one line; a warning naming the fix when a split's share is above ``UNKNOWN_WARN``."""
    if unknown_id(tokenizer) is None or not counts:
        return
    shares = {k: u / max(n, 1) for k, (u, n) in counts.items()}
    text = ", ".join(f"{k} {shares[k]:.2%}" for k in counts)
    total = sum(n for _, n in counts.values())
    if max(shares.values()) <= UNKNOWN_WARN:
        log.info("[UNK] share of %s: %s of %s text tokens", what, text, f"{total:,}")
        return
    log.warning(
        "[UNK] share of %s: %s of %s text tokens, above %.0f%%: the vocabulary lacks characters "
        "this text uses, which the model cannot see; train the tokenizer on text like this "
        "(for Chinese with data.vocab_characters='gb2312') or start from a model whose "
        "vocabulary covers it.",
        what, text, f"{total:,}", 100 * UNKNOWN_WARN,
    )  # fmt: skip


def count_unknown(tokenizer, rows) -> tuple[int, int]:
    """``(unknown, text tokens)`` over rows of ids, the special tokens around the text left
    out; (0, 0) for a tokenizer without ``[UNK]``."""
    unk = unknown_id(tokenizer)
    if unk is None:
        return 0, 0
    special = np.array(sorted(set(tokenizer.all_special_ids) - {unk}), np.int64)
    unknown = text = 0
    for row in rows:
        row = np.asarray(row)
        text += int(np.sum(~np.isin(row, special)))
        unknown += int(np.sum(row == unk))
    return unknown, text
