"""Tokenizers (given, or trained on the data: ``vocab.py``) and tokenization cached on disk."""

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
from ptft_jax.data.vocab import (
    END_OF_TEXT,
    charset,
    train_byte_bpe,
    train_modernbert_bpe,
    train_roberta_bpe,
    train_wordpiece,
)

log = logging.getLogger(__name__)
# A kind of tokenizer (a task's ``tokenizer_kind`` or a model family's ``TOKENIZER``) -> (its
# name in the log, a trainer of texts, vocab size and data.*)
TRAINERS = {
    "wordpiece": (
        "WordPiece",
        lambda texts, n, d: train_wordpiece(
            texts,
            n,
            d.lowercase,
            d.get("keep_accents", False),
            charset(d.get("vocab_characters", "")),
        ),
    ),
    "byte_bpe": ("byte-level BPE", lambda texts, n, d: train_byte_bpe(texts, n)),
    "roberta_bpe": ("RoBERTa byte-level BPE", lambda texts, n, d: train_roberta_bpe(texts, n)),
    "modernbert_bpe": (
        "ModernBERT byte-level BPE",
        lambda texts, n, d: train_modernbert_bpe(texts, n),
    ),
}
SPACE = "Ġ"  # byte-level BPE's symbol of the space byte: it starts every word but a text's first


def save_tokenizer(tokenizer, out_dir: pathlib.Path) -> None:
    """Write the tokenizer files into ``out_dir`` at once (a temp folder, then a rename)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp = pathlib.Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=".tokenizer-"))
    tokenizer.save_pretrained(str(tmp))
    os.replace(tmp, out_dir)


class Unreadable(DataError):
    """A tokenizer that does not load; ``reason`` says why (``tokenizer.json does not
    parse``), for the sentence of whoever asked for it."""

    def __init__(self, path: str, reason: str):
        self.reason = reason
        super().__init__(
            f"Could not load a tokenizer from {path!r} ({reason}); set --config.data.tokenizer "
            "to a folder with vocab.txt or tokenizer.json, or to '' to train one on the data."
        )


# The JSON files of a tokenizer folder (and a model folder's config.json, which a tokenizer
# may read): one cut short or garbled makes the folder unreadable, whichever file it is.
JSON_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "config.json",
)

VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json")  # a folder has one or more


def load_tokenizer(path: str):
    """The tokenizer in a folder or hub id: a byte-level BPE when the folder holds
    ``merges.txt`` or its tokenizer.json is a BPE model (``_bpe_class``), else a
    BertTokenizerFast (``vocab.txt`` and/or ``tokenizer.json``). One that does not load
    (missing, or files that do not parse) raises ``Unreadable``."""
    from transformers import BertTokenizerFast, GPT2Tokenizer

    folder = pathlib.Path(path).expanduser()
    for name in JSON_FILES if folder.is_dir() else ():
        try:
            if (folder / name).is_file():
                json.loads((folder / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):  # ValueError: JSON or UTF-8 that does not decode
            raise Unreadable(path, f"{name} does not parse") from None
    if folder.is_dir() and not any((folder / f).is_file() for f in VOCAB_FILES):
        # transformers would make a tokenizer of the special tokens alone
        raise Unreadable(path, f"it holds no {', '.join(VOCAB_FILES[:-1])} or {VOCAB_FILES[-1]}")
    cls = _bpe_class(folder) if _is_bpe(folder) else BertTokenizerFast
    try:
        tokenizer = cls.from_pretrained(path)
    except Exception as e:  # OSError when absent; the tokenizers library raises bare Exception
        raise Unreadable(path, e.__class__.__name__) from None
    if cls is GPT2Tokenizer and tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # GPT-2 has none: batches pad with its end
    return tokenizer


def _bpe_class(folder: pathlib.Path):
    """The class of the byte-level BPE in ``folder``: RoBERTa's when its tokenizer_config.json
    names it or its config.json is a RoBERTa's; the tokenizer.json as it is
    (``PreTrainedTokenizerFast``) for an encoder's, one with a mask token (ModernBERT's); else
    GPT-2's."""
    from transformers import GPT2Tokenizer, PreTrainedTokenizerFast, RobertaTokenizer

    settings = _json_dict(folder / "tokenizer_config.json")
    named = settings.get("tokenizer_class")
    roberta = _json_dict(folder / "config.json").get("model_type") == "roberta"
    if roberta or named in ("RobertaTokenizer", "RobertaTokenizerFast"):
        return RobertaTokenizer
    if named in ("PreTrainedTokenizerFast", "TokenizersBackend") and settings.get("mask_token"):
        return PreTrainedTokenizerFast
    return GPT2Tokenizer


def _json_dict(path: pathlib.Path) -> dict:
    """The JSON object in ``path``; empty when there is none."""
    try:
        found = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _is_bpe(folder: pathlib.Path) -> bool:
    if (folder / "merges.txt").exists():
        return True
    try:
        return json.loads((folder / "tokenizer.json").read_text())["model"]["type"] == "BPE"
    except (OSError, ValueError, KeyError, TypeError):
        return False


def load_run_tokenizer(workdir: pathlib.Path, fix: str):
    """``W/tokenizer``, the tokenizer the workdir's checkpoints were trained with; one sentence
    ending in ``fix`` when it is missing or does not load."""
    folder = workdir / "tokenizer"
    if not folder.is_dir():
        raise DataError(
            f"{folder} is missing, but the checkpoints in {workdir} were trained with it; {fix}."
        )
    try:
        return load_tokenizer(str(folder))
    except Unreadable as e:
        raise DataError(
            f"{folder} is missing or unreadable ({e.reason}), but the checkpoints in {workdir} "
            f"were trained with it; {fix}."
        ) from None


def get_tokenizer(
    data_cfg, workdir: pathlib.Path, texts: list[str], vocab_size: int, resuming, kind="wordpiece"
):
    """The run's tokenizer, not yet saved: ``W/tokenizer`` when resuming, else the one given in
    ``data.tokenizer``, else one of ``kind`` (a key of ``TRAINERS``) trained on ``texts``."""
    if resuming:  # the run's own tokenizer, never a new one
        tokenizer = load_run_tokenizer(workdir, "restore that folder or start a new --workdir")
    elif data_cfg.tokenizer:
        tokenizer = load_tokenizer(data_cfg.tokenizer)
    else:
        name, train = TRAINERS[kind]
        log.info("training a %s tokenizer (vocab %d) on %d texts", name, vocab_size, len(texts))
        return train(texts, vocab_size, data_cfg)
    if len(tokenizer) > vocab_size:
        raise DataError(
            f"The tokenizer has {len(tokenizer)} tokens but model.vocab_size is {vocab_size}; "
            f"set --config.model.vocab_size={len(tokenizer)}."
        )
    return tokenizer


def factory(data_cfg, workdir: pathlib.Path, vocab_size: int, resuming: bool, kind="wordpiece"):
    """``texts -> tokenizer``: W's on resume, else the given one, else one of ``kind``
    trained on ``texts``."""

    def get(texts):
        tokenizer = get_tokenizer(data_cfg, workdir, texts, vocab_size, resuming, kind)
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


def _cached(texts: list[str], tokenizer, cache_root: pathlib.Path, kind: str, compute):
    """``compute(texts)`` (one int array per text), computed once per (kind, texts, tokenizer)
    and kept in ``cache_root/kind``."""
    h = hashlib.sha256(tokenizer_fingerprint(tokenizer).encode())
    for t in texts:
        h.update(t.encode("utf-8", "replace"))
        h.update(b"\0")
    path = cache_root / kind / f"{h.hexdigest()[:24]}.npz"
    if path.exists():
        with np.load(path) as f:
            flat, offsets = f["flat"], f["offsets"]
        return np.split(flat, offsets[1:-1])
    encoded = compute(texts)
    lengths = np.array([len(e) for e in encoded], np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = np.concatenate([np.asarray(e, np.int32) for e in encoded] or [np.zeros(0, np.int32)])
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz")
    with os.fdopen(fd, "wb") as f:
        np.savez(f, flat=flat.astype(np.int32), offsets=offsets)
    os.replace(tmp, path)
    return np.split(flat.astype(np.int32), offsets[1:-1])


def tokenize_cached(texts: list[str], tokenizer, cache_root: pathlib.Path) -> list[np.ndarray]:
    """Token ids (no special tokens) of every text, computed once per (texts, tokenizer)."""

    def compute(texts):
        return tokenizer(texts, add_special_tokens=False, return_attention_mask=False)["input_ids"]

    return _cached(texts, tokenizer, cache_root, "tokenized", compute)


def continuations_cached(
    texts: list[str], tokenizer, segmenter: str, cache_root: pathlib.Path
) -> list[np.ndarray]:
    """Whether each token of ``tokenize_cached(texts)`` continues a word, words found by the
    word segmenter ``segmenter`` (``segment.py``); computed once per (texts, tokenizer,
    segmenter and its version)."""
    from ptft_jax.data import segment

    by_piece = word_continuations(tokenizer)

    def compute(texts):
        return segment.continuations(texts, tokenizer, segmenter, by_piece)

    kind = f"words-{segment.version(segmenter)}"
    return [c.astype(bool) for c in _cached(texts, tokenizer, cache_root, kind, compute)]


def special_ids(tokenizer) -> dict[str, int]:
    """Ids of [PAD], [CLS], [SEP], [MASK] (RoBERTa's ``<pad>``, ``<s>``, ``</s>``, ``<mask>``);
    a clear error when the tokenizer lacks one."""
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


def word_continuations(tokenizer) -> np.ndarray:
    """True at the ids of tokens that continue a word (whole-word masking): WordPiece's ``##``
    pieces, or in a byte-level BPE (GPT-2's, RoBERTa's, ModernBERT's) the tokens that do not
    start with the space symbol ``Ġ``, as RoBERTa's whole-word masking counts them. A text's
    first word has no space before it: it follows a special token, where masking starts a word
    anyway. Special tokens continue nothing."""
    tokens = tokenizer.convert_ids_to_tokens(range(len(tokenizer)))
    if is_byte_level(tokenizer):
        continues = np.array([not t.startswith(SPACE) for t in tokens])
    else:
        continues = np.array([t.startswith("##") for t in tokens])
    continues[list(tokenizer.all_special_ids)] = False
    return continues


def is_byte_level(tokenizer) -> bool:
    """Whether the tokenizer pre-tokenises GPT-2's way (byte symbols, ``Ġ`` for a space)."""
    pre = json.loads(tokenizer.backend_tokenizer.to_str()).get("pre_tokenizer") or {}
    steps = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    return any(step.get("type") == "ByteLevel" for step in steps)


def end_of_text_id(tokenizer) -> int:
    """The id that ends every document of a causal-LM stream (GPT-2's ``<|endoftext|>``)."""
    tid = tokenizer.eos_token_id
    if tid is None:
        raise DataError(
            f"The tokenizer has no end-of-text token; use a GPT-2 tokenizer ({END_OF_TEXT}) or "
            "set --config.data.tokenizer='' to train one."
        )
    return int(tid)


def pad_id(tokenizer) -> int:
    """The id that pads rows: the tokenizer's pad token (a GPT-2 one pads with its end)."""
    tid = tokenizer.pad_token_id
    if tid is None:
        raise DataError(
            "The tokenizer has no pad token; add one to its tokenizer_config.json "
            "(GPT-2 tokenizers pad with <|endoftext|>) or set --config.data.tokenizer=''."
        )
    return int(tid)
