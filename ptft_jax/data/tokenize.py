"""Tokenizers (given, or WordPiece trained on the data) and tokenization cached on disk."""

from __future__ import annotations

import collections
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


def train_wordpiece(texts: list[str], vocab_size: int, lowercase: bool = True):
    """Train a BERT WordPiece tokenizer on ``texts``, deterministically: uncased and without
    accents (BERT's uncased models), or with ``lowercase=False`` cased and keeping accents.

    WordPiece training is BPE on words whose inner characters carry the ``##`` mark. The
    ``tokenizers`` WordPiece trainer numbers those marked characters in hash order, so ties
    between equally frequent merges, and with them the vocabulary, change from run to run.
    Here each inner character becomes a private-use character of its own (numbered in sorted
    order), so every symbol is in the initial alphabet, which the BPE trainer numbers in sorted
    order: ties break the same way every time. The learned symbols map back to WordPiece
    tokens (``##`` for those that start inside a word), numbered sorted after the specials.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from tokenizers.trainers import BpeTrainer
    from transformers import BertTokenizerFast

    strip_accents = None if lowercase else False  # None: as lowercase says (BERT's default)
    normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=strip_accents)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts = collections.Counter(
        word
        for text in texts
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
    )
    seen = {c for word in counts for c in word}
    inner, code = {}, 0xF0000  # Supplementary Private Use Area-A, then B
    for c in sorted({c for word in counts for c in word[1:]}):
        while chr(code) in seen:
            code += 1
        inner[c], code = chr(code), code + 1
    outer = {v: k for k, v in inner.items()}

    def marked(word: str) -> str:
        return word[0] + "".join(inner[c] for c in word[1:])

    def repeated():  # every word as often as it occurs, a few thousand words a string
        batch = []
        for word, n in sorted(counts.items()):
            batch += [marked(word)] * n
            if len(batch) >= 4096:
                yield " ".join(batch)
                batch = []
        yield " ".join(batch)

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = BpeTrainer(vocab_size=max(vocab_size - len(SPECIAL_TOKENS), 1), show_progress=False)
    bpe.train_from_iterator(repeated(), trainer=trainer)

    def wordpiece(symbol: str) -> str:
        if symbol[0] in outer:
            return "##" + "".join(outer[c] for c in symbol)
        return symbol[0] + "".join(outer.get(c, c) for c in symbol[1:])

    learned = {wordpiece(s) for s in bpe.get_vocab()} - set(SPECIAL_TOKENS)
    order = SPECIAL_TOKENS + sorted(learned)
    tok = Tokenizer(
        models.WordPiece(
            vocab={t: i for i, t in enumerate(order)},
            unk_token="[UNK]",
            max_input_chars_per_word=100,
        )
    )
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizer
    tok.decoder = decoders.WordPiece()
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    fast = BertTokenizerFast(
        tokenizer_object=tok, do_lower_case=lowercase, strip_accents=strip_accents
    )
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
        return train_wordpiece(texts, vocab_size, data_cfg.lowercase)
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
