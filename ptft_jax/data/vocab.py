"""Tokenizers trained on the data, deterministically: BERT's WordPiece, GPT-2's byte-level BPE,
and the byte-level BPEs of RoBERTa and ModernBERT. The same texts and settings give the same
files on every run and every machine."""

from __future__ import annotations

import collections

from ptft_jax.data.sources import DataError

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
END_OF_TEXT = "<|endoftext|>"  # GPT-2's one special token: between documents, and padding
# RoBERTa's specials by id: the classifier token, padding, the separator, unknown, mask (ids 0-3
# are roberta-base's; its mask is its last id).
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def charset(name: str) -> str:
    """The characters of a named set a trained WordPiece always holds (``data.vocab_characters``):
    ``gb2312`` is every character of China's GB 2312 (its 6,763 hanzi, the commonly used
    simplified ideographs, and 682 symbols, kana, Greek and Cyrillic letters), enumerated
    with Python's codec, and printable ASCII: Chinese text mixes in Latin words, digits and
    half-width punctuation, which a corpus such as People's Daily spells full-width; ``''``
    none."""
    if not name:
        return ""
    if name != "gb2312":
        raise DataError(f"data.vocab_characters={name!r} is unknown; use 'gb2312' or ''.")
    out = []
    for high in range(0xA1, 0xF8):
        for low in range(0xA1, 0xFF):
            try:
                out.append(bytes([high, low]).decode("gb2312"))
            except UnicodeDecodeError:  # an unassigned code point
                continue
    return "".join(out) + "".join(chr(c) for c in range(0x21, 0x7F))


def train_wordpiece(
    texts: list[str],
    vocab_size: int,
    lowercase: bool = True,
    keep_accents: bool = False,
    characters: str = "",
):
    """Train a BERT WordPiece tokenizer on ``texts``, deterministically: uncased and without
    accents (BERT's uncased models), with ``lowercase=False`` cased and keeping accents, or with
    ``keep_accents`` uncased but keeping them (pinyin's tone marks, kana's voicing marks).
    Either way it normalises and splits as transformers' ``BertTokenizer`` with those settings
    does: every CJK ideograph a word of its own, punctuation (full-width too) split off.
    ``characters`` (``charset``) become tokens of their own whether or not the texts hold them,
    as bert-base-chinese has its ideographs, and ASCII letters and digits among them also
    pieces inside a word (``##e``), so any such word can be spelled: text the tokenizer meets
    later (a fine-tuning set) is not ``[UNK]`` for a character the training text lacked.

    WordPiece training is BPE on words whose inner characters carry the ``##`` mark. The
    ``tokenizers`` WordPiece trainer numbers those marked characters in hash order, so ties
    between equally frequent merges, and with them the vocabulary, change from run to run.
    Here each inner character becomes a private-use character of its own (numbered in sorted
    order), so every symbol is in the initial alphabet, which the BPE trainer numbers in sorted
    order: ties break the same way every time. The learned symbols map back to WordPiece
    tokens (``##`` for those that start inside a word), numbered sorted after the specials.
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from tokenizers.trainers import BpeTrainer

    # None: as lowercase says (BERT's default)
    strip_accents = False if keep_accents or not lowercase else None
    normalizer = normalizers.BertNormalizer(lowercase=lowercase, strip_accents=strip_accents)
    pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    counts = collections.Counter(
        word
        for text in texts
        for word, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))
    )
    always = sorted(
        {c for ch in characters for c in normalizer.normalize_str(ch) if not c.isspace()}
    )
    spelled = [c for c in always if c.isascii() and c.isalnum()]  # also inside words
    inside = {c for word in counts for c in word[1:]} | set(spelled)
    inner = _private_marks(inside, {c for word in counts for c in word} | set(always))
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
    trainer = BpeTrainer(
        vocab_size=max(vocab_size - len(SPECIAL_TOKENS), 1),
        show_progress=False,
        initial_alphabet=always + [inner[c] for c in spelled],
    )
    bpe.train_from_iterator(repeated(), trainer=trainer)

    def wordpiece(symbol: str) -> str:
        if symbol[0] in outer:
            return "##" + "".join(outer[c] for c in symbol)
        return symbol[0] + "".join(outer.get(c, c) for c in symbol[1:])

    learned = {wordpiece(s) for s in bpe.get_vocab()} - set(SPECIAL_TOKENS)
    order = SPECIAL_TOKENS + sorted(learned)
    fast = _bert_tokenizer(order, normalizer, pre_tokenizer, lowercase, strip_accents)
    if len(fast) > vocab_size:
        raise DataError(
            f"The data's alphabet alone needs {len(fast)} tokens, more than model.vocab_size="
            f"{vocab_size}; raise --config.model.vocab_size to at least {len(fast)}."
        )
    return fast


def _private_marks(inside: set[str], taken: set[str]) -> dict[str, str]:
    """A private-use character of its own for each character in ``inside`` (its ``##`` form),
    numbered in sorted order and skipping the characters in ``taken``."""
    marks, code = {}, 0xF0000  # Supplementary Private Use Area-A, then B
    for c in sorted(inside):
        while chr(code) in taken:
            code += 1
        marks[c], code = chr(code), code + 1
    return marks


def _bert_tokenizer(order: list[str], normalizer, pre_tokenizer, lowercase: bool, strip_accents):
    """A BertTokenizerFast of the WordPiece vocabulary ``order`` (token ``i`` is id ``i``) with
    BERT's ``[CLS] A [SEP] B [SEP]`` template."""
    from tokenizers import Tokenizer, decoders, models, processors
    from transformers import BertTokenizerFast

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
    return fast


def train_byte_bpe(texts: list[str], vocab_size: int):
    """Train a GPT-2 byte-level BPE tokenizer on ``texts`` (``_byte_bpe``) with
    ``<|endoftext|>`` (id 0) as the end of every document and the padding."""
    from transformers import GPT2Tokenizer

    vocab, merges = _byte_bpe(texts, vocab_size, [END_OF_TEXT])
    return GPT2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=END_OF_TEXT,
        bos_token=END_OF_TEXT,
        eos_token=END_OF_TEXT,
        pad_token=END_OF_TEXT,
    )


def train_roberta_bpe(texts: list[str], vocab_size: int):
    """Train RoBERTa's tokenizer on ``texts``: the byte-level BPE of ``_byte_bpe`` with
    RoBERTa's specials ``<s>`` = 0 (its classifier token), ``<pad>`` = 1, ``</s>`` = 2 (its
    separator), ``<unk>`` = 3 and ``<mask>`` = 4, the mask taking the space before it as
    roberta-base's does. Texts become ``<s> A </s>`` and pairs ``<s> A </s></s> B </s>``, all of
    segment 0: a transformers ``RobertaTokenizer`` (no prefix space, offsets trimmed)."""
    from tokenizers import AddedToken
    from transformers import RobertaTokenizer

    vocab, merges = _byte_bpe(texts, vocab_size, ROBERTA_SPECIALS)
    cls, pad, sep, unk, mask = ROBERTA_SPECIALS
    return RobertaTokenizer(
        vocab=vocab,
        merges=merges,
        bos_token=cls,
        eos_token=sep,
        sep_token=sep,
        cls_token=cls,
        unk_token=unk,
        pad_token=pad,
        mask_token=AddedToken(mask, lstrip=True, normalized=False, special=True),
        add_prefix_space=False,
        trim_offsets=True,
    )


def train_modernbert_bpe(texts: list[str], vocab_size: int):
    """Train ModernBERT's kind of tokenizer on ``texts``: the byte-level BPE of ``_byte_bpe``
    with BERT's specials, numbered as ``train_wordpiece`` numbers them (``[PAD]`` = 0,
    ``[UNK]`` = 1, ``[CLS]`` = 2, ``[SEP]`` = 3, ``[MASK]`` = 4), the mask taking the space
    before it as ModernBERT-base's does. Texts become ``[CLS] A [SEP]`` and pairs
    ``[CLS] A [SEP] B [SEP]`` (B and its ``[SEP]`` of segment 1): a transformers
    ``PreTrainedTokenizerFast`` that, like ModernBERT-base's, returns no token type ids unless
    asked."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab, merges = _byte_bpe(texts, vocab_size, SPECIAL_TOKENS)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True)
    tok.decoder = decoders.ByteLevel()
    pad, unk, cls, sep, mask = SPECIAL_TOKENS
    tok.post_processor = processors.TemplateProcessing(
        single=f"{cls} $A {sep}",
        pair=f"{cls} $A {sep} $B:1 {sep}:1",
        special_tokens=[(cls, vocab[cls]), (sep, vocab[sep])],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        cls_token=cls,
        sep_token=sep,
        pad_token=pad,
        unk_token=unk,
        mask_token=AddedToken(mask, lstrip=True, normalized=False, special=True),
        model_input_names=["input_ids", "attention_mask"],
    )


def _byte_bpe(texts: list[str], vocab_size: int, specials: list[str]):
    """``(vocab, merges)`` of a byte-level BPE trained on ``texts`` with GPT-2's
    pre-tokenisation (its regex, no prefix space): ``specials`` numbered from 0 in their order,
    then the 256 byte symbols and the merges. Every byte is in the initial alphabet, which the
    BPE trainer numbers in sorted order, so ties between equally frequent merges break the same
    way every time."""
    import json

    from tokenizers import Tokenizer, models, pre_tokenizers
    from tokenizers.trainers import BpeTrainer

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    need = len(alphabet) + len(specials)
    if vocab_size < need:
        raise DataError(
            f"model.vocab_size={vocab_size} cannot hold the {len(alphabet)} byte symbols and "
            f"{', '.join(specials)}; raise --config.model.vocab_size to at least {need}."
        )
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=sorted(alphabet),
        show_progress=False,
    )
    bpe.train_from_iterator(texts, trainer=trainer)
    model = json.loads(bpe.to_str())["model"]
    return model["vocab"], [tuple(m) for m in model["merges"]]
