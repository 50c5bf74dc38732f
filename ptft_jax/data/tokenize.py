"""Tokenizers (given, or WordPiece trained on the data) and tokenization cached on disk."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import tempfile

import numpy as np

from ptft_jax.data.sources import DataError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(texts: list[str], vocab_size: int, out_dir: pathlib.Path):
    """Train an uncased BERT WordPiece tokenizer on ``texts`` and save it in ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS)
    tok.train_from_iterator(texts, trainer=trainer)
    # The trainer numbers tokens of equal frequency in hash order, which changes from run to
    # run; renumber them (special tokens first, then sorted) so ids do not depend on it. Ties
    # at the vocabulary's cut-off can still pick different tokens: W/tokenizer is the record.
    learned = tok.get_vocab()
    order = SPECIAL_TOKENS + sorted(t for t in learned if t not in SPECIAL_TOKENS)
    tok.model = models.WordPiece(
        vocab={t: i for i, t in enumerate(order)}, unk_token="[UNK]", max_input_chars_per_word=100
    )
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = BertTokenizerFast(tokenizer_object=tok, do_lower_case=True)
    for name in SPECIAL_TOKENS:
        setattr(fast, name.strip("[]").lower() + "_token", name)
    _save_atomically(fast, out_dir)
    return fast


def _save_atomically(tokenizer, out_dir: pathlib.Path) -> None:
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=".tokenizer-"))
    tokenizer.save_pretrained(str(tmp))
    os.replace(tmp, out_dir)


def load_tokenizer(path: str):
    """A BertTokenizerFast from a folder (``vocab.txt`` and/or ``tokenizer.json``) or hub id."""
    from transformers import BertTokenizerFast

    try:
        return BertTokenizerFast.from_pretrained(path)
    except OSError as e:
        raise DataError(
            f"Could not load a tokenizer from {path!r} ({e.__class__.__name__}); set "
            "--config.data.tokenizer to a folder with vocab.txt or tokenizer.json, or to '' to "
            "train one on the data."
        ) from None


def get_tokenizer(data_cfg, workdir: pathlib.Path, texts: list[str], vocab_size: int):
    """The run's tokenizer: ``W/tokenizer`` if present (resume), else given, else trained."""
    saved = workdir / "tokenizer"
    if saved.exists():
        return load_tokenizer(str(saved))
    if data_cfg.tokenizer:
        tokenizer = load_tokenizer(data_cfg.tokenizer)
        _save_atomically(tokenizer, saved)
        return tokenizer
    logging.info("training a WordPiece tokenizer (vocab %d) on %d texts", vocab_size, len(texts))
    return train_wordpiece(texts, vocab_size, saved)


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of the tokenizer's full definition, for cache keys."""
    return hashlib.sha256(tokenizer.backend_tokenizer.to_str().encode()).hexdigest()[:16]


def tokenize_cached(texts: list[str], tokenizer, cache_root: pathlib.Path) -> list[np.ndarray]:
    """Token ids (no special tokens) of every text, computed once per (texts, tokenizer)."""
    h = hashlib.sha256(tokenizer_fingerprint(tokenizer).encode())
    for t in texts:
        h.update(t.encode("utf-8", "replace"))
        h.update(b"\0")
    path = cache_root / "tokenized" / f"{h.hexdigest()[:24]}.npz"
    if path.exists():
        with np.load(path) as f:
            flat, offsets = f["flat"], f["offsets"]
        return np.split(flat, offsets[1:-1])
    encoded = tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]
    lengths = np.array([len(e) for e in encoded], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.fromiter((i for e in encoded for i in e), np.int32, count=int(offsets[-1]))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
    np.savez(tmp, flat=flat, offsets=offsets)
    os.replace(tmp, path)
    return np.split(flat, offsets[1:-1])


def special_ids(tokenizer) -> dict[str, int]:
    """Ids of [PAD], [CLS], [SEP], [MASK]; a clear error when the tokenizer lacks one."""
    ids = {}
    for name in ("pad", "cls", "sep", "mask"):
        tid = getattr(tokenizer, f"{name}_token_id", None)
        if tid is None:
            raise DataError(
                f"The tokenizer has no {name} token; use a BERT tokenizer ([PAD], [CLS], [SEP], "
                "[MASK]) or set --config.data.tokenizer='' to train one."
            )
        ids[name] = int(tid)
    return ids


def describe(tokenizer) -> str:
    """One line naming the tokenizer for logs."""
    return json.dumps({"vocab": len(tokenizer), "class": type(tokenizer).__name__})
