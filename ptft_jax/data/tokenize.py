"""Tokenizers (given, or WordPiece trained on the data) and tokenization cached on disk."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import shutil
import tempfile

import jax
import numpy as np
from jax.experimental import multihost_utils

from ptft_jax.data.sources import DataError

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(texts: list[str], vocab_size: int):
    """Train an uncased BERT WordPiece tokenizer on ``texts`` (in memory)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import WordPieceTrainer
    from transformers import BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = WordPieceTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, show_progress=False
    )
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
    if len(fast) > vocab_size:
        raise DataError(
            f"The data's alphabet alone needs {len(fast)} tokens, more than model.vocab_size="
            f"{vocab_size}; raise --config.model.vocab_size to at least {len(fast)}."
        )
    return fast


def save_tokenizer(tokenizer, out_dir: pathlib.Path) -> None:
    """Write the tokenizer files into ``out_dir`` at once (a temp folder, then a rename)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.exists():
        shutil.rmtree(out_dir)
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


def get_tokenizer(data_cfg, workdir: pathlib.Path, texts: list[str], vocab_size: int, resuming):
    """The run's tokenizer, not yet saved: ``W/tokenizer`` when resuming, else the one given in
    ``data.tokenizer``, else WordPiece trained on ``texts``."""
    if resuming:  # the run's own tokenizer, never a new one
        if not (workdir / "tokenizer").is_dir():
            raise DataError(
                f"{workdir / 'tokenizer'} is missing, but the checkpoints in {workdir} were "
                "trained with it; restore that folder or start a new --workdir."
            )
        tokenizer = load_tokenizer(str(workdir / "tokenizer"))
    elif data_cfg.tokenizer:
        tokenizer = load_tokenizer(data_cfg.tokenizer)
    else:
        log.info("training a WordPiece tokenizer (vocab %d) on %d texts", vocab_size, len(texts))
        return train_wordpiece(texts, vocab_size)
    if len(tokenizer) > vocab_size:
        raise DataError(
            f"The tokenizer has {len(tokenizer)} tokens but model.vocab_size is {vocab_size}; "
            f"set --config.model.vocab_size={len(tokenizer)}."
        )
    return tokenizer


def factory(data_cfg, workdir: pathlib.Path, vocab_size: int, resuming: bool):
    """``texts -> tokenizer``: W's on resume, else the given one, else WordPiece on ``texts``."""

    def get(texts):
        tokenizer = get_tokenizer(data_cfg, workdir, texts, vocab_size, resuming)
        if jax.process_count() > 1 and not resuming and not data_cfg.tokenizer:
            # Every host must use process 0's tokenizer (training may break ties differently).
            # Only then is W written before every check ran: the processes must agree.
            if jax.process_index() == 0:
                save_tokenizer(tokenizer, workdir / "tokenizer")
            multihost_utils.sync_global_devices("ptft_jax:tokenizer")
            tokenizer = load_tokenizer(str(workdir / "tokenizer"))
        return tokenizer

    return get


def tokenizer_fingerprint(tokenizer) -> str:
    """A hash of the tokenizer's definition (vocabulary, normaliser, pre-tokeniser, model), for
    cache keys and to tie a checkpoint to its tokenizer. The truncation and padding a call sets
    on the backend are left out: they change with every call, not the tokens."""
    definition = json.loads(tokenizer.backend_tokenizer.to_str())
    definition.pop("truncation", None)
    definition.pop("padding", None)
    text = json.dumps(definition, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def check_resumed(tokenizer, saved: str | None, workdir: pathlib.Path, step: int) -> None:
    """Stop when ``W/tokenizer`` is not the tokenizer the checkpoint of ``step`` trained with
    (``saved``: its fingerprint; checkpoints older than fingerprints have none)."""
    if saved and tokenizer_fingerprint(tokenizer) != saved:
        raise DataError(
            f"{workdir / 'tokenizer'} is not the tokenizer the checkpoint of step {step} was "
            "trained with (it was changed or partly deleted); restore that folder or start a "
            "new --workdir."
        )


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
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    with os.fdopen(fd, "wb") as f:
        np.savez(f, flat=flat, offsets=offsets)
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
