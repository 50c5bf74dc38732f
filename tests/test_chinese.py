"""Chinese text: whole-word masking over jieba's words (hfl's Chinese-BERT-wwm), and trained
WordPiece tokenizers that normalise and split CJK text exactly as transformers' BertTokenizer."""

import jieba
import numpy as np
import pytest

from ptft_jax.data import pipeline, segment, tokenize, vocab
from ptft_jax.data.masking import mask_rows

SENTENCES = [
    "我爱北京天安门，天安门上太阳升。",
    "自然语言处理是人工智能领域中的一个重要方向。",
    "研究人员使用transformers模型训练了一个中文预训练语言模型。",
    "今天下午，国务院新闻办公室举行新闻发布会，介绍经济运行情况。",
    "他在2024年加入了北京大学计算机科学技术研究所，研究Unbelievably photogenic hummingbirds。",
    "我。",  # no word of two characters
    "",
]


def _cfg(**kw):
    base = {"max_predictions_per_seq": 40, "mlm_probability": 0.15, "whole_word_masking": 1}
    return type("Cfg", (dict,), {"__getattr__": dict.__getitem__})(base | kw)


@pytest.fixture(scope="module")
def wordpiece():
    """A WordPiece small enough that English words split into ``##`` pieces."""
    return vocab.train_wordpiece(SENTENCES * 3, 150)


def _jieba_words(text: str, offsets) -> list[list[int]]:
    """Token positions of each of jieba's words (its own ``lcut``), a token belonging to the
    word its first character is in; only words of two or more CJK ideographs."""
    words, start = [], 0
    for word in jieba.lcut(text):
        end = start + len(word)
        if len(word) > 1 and all(segment.is_cjk(c) for c in word):
            words.append([t for t, (s, e) in enumerate(offsets) if start <= s < end and e > s])
        start = end
    return words


def _encode(tok, texts):
    enc = tok(texts, add_special_tokens=False, return_offsets_mapping=True)
    n = max(map(len, enc["input_ids"]))
    ids = np.zeros((len(texts), n), np.int32)
    for i, row in enumerate(enc["input_ids"]):
        ids[i, : len(row)] = row
    return ids, np.array(list(map(len, enc["input_ids"]))), enc["offset_mapping"]


def _cut_words(tok, texts, continues, batches=150):
    """Masks many batches; returns (how many jieba words were masked in part, how many whole,
    the share of words masked per row). ``continues``: the segmentation's flags or None."""
    spec = pipeline.masking_spec(_cfg(), tok)
    ids, lengths, offsets = _encode(tok, texts)
    flags = None
    if continues is not None:
        flags = np.zeros(ids.shape, bool)
        for i, c in enumerate(continues):
            flags[i, : len(c)] = c
    words = [_jieba_words(t, o) for t, o in zip(texts, offsets, strict=True)]
    cut = whole = 0
    for b in range(batches):
        out = mask_rows(ids, lengths, np.arange(len(ids)), spec, 0, b, flags)
        for i in range(len(texts)):
            chosen = set(out["masked_positions"][i][out["masked_weights"][i] > 0].tolist())
            for w in words[i]:
                hit = chosen & set(w)
                cut += bool(hit) and hit != set(w)
                whole += hit == set(w)
    return cut, whole


def test_segmented_masking_masks_jieba_words_whole(wordpiece):
    """With jieba's words every multi-character word is masked whole or not at all; without a
    segmenter (BERT's ``##`` rule alone) the same check fails: characters are masked alone."""
    tok = wordpiece
    by_piece = tokenize.word_continuations(tok)
    continues = segment.continuations(SENTENCES, tok, "jieba", by_piece)
    cut, whole = _cut_words(tok, SENTENCES, continues)
    assert cut == 0 and whole > 100
    cut_off, _ = _cut_words(tok, SENTENCES, None)
    assert cut_off > 50, "without segmentation Chinese words are masked character by character"


def test_flags_on_known_sentences(wordpiece):
    """The flags themselves: each jieba word's first character starts a word, the rest continue;
    single characters, punctuation and digits start one; English keeps the ``##`` rule."""
    tok = wordpiece
    by_piece = tokenize.word_continuations(tok)
    for text, flags in zip(
        SENTENCES, segment.continuations(SENTENCES, tok, "jieba", by_piece), strict=True
    ):
        enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
        tokens = tok.convert_ids_to_tokens(enc["input_ids"])
        expected = by_piece[enc["input_ids"]].copy()
        for word in _jieba_words(text, enc["offset_mapping"]):
            expected[word[0]], expected[word[1:]] = False, True
        assert flags.tolist() == expected.tolist(), (text, list(zip(tokens, flags, strict=True)))
    enc = tok(SENTENCES[4], add_special_tokens=False)
    pieces = tok.convert_ids_to_tokens(enc["input_ids"])
    assert any(p.startswith("##") for p in pieces), "English must split into ## pieces here"


def test_byte_level_bpe_keeps_characters_and_words_whole():
    """A byte-level BPE cuts rare characters into bytes: those bytes never start a word, jieba's
    words stay whole, and an English word right after a CJK character starts a new one."""
    tok = vocab.train_modernbert_bpe(SENTENCES, 300)
    by_piece = tokenize.word_continuations(tok)
    continues = segment.continuations(SENTENCES, tok, "jieba", by_piece)
    cut, whole = _cut_words(tok, SENTENCES, continues)
    assert cut == 0 and whole > 50
    text = SENTENCES[2]
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    flags = segment.continuations([text], tok, "jieba", by_piece)[0]
    starts = [s for (s, e), f in zip(enc["offset_mapping"], flags, strict=True) if not f]
    assert text.index("transformers") in starts
    shared = [
        i
        for i in range(1, len(flags))
        if enc["offset_mapping"][i][0] < enc["offset_mapping"][i - 1][1]
    ]
    assert shared and all(flags[i] for i in shared), "bytes of one character stay one word"


def test_segmented_blocks_are_deterministic_and_aligned(tmp_path, wordpiece):
    """``pack_texts`` packs the flags with the ids (False at [CLS], [SEP] and padding), the
    cache gives them back unchanged, and masking draws the same words from the same seed."""
    tok = wordpiece
    blocks = pipeline.pack_texts(SENTENCES, tok, 32, tmp_path, "jieba")
    again = pipeline.pack_texts(SENTENCES, tok, 32, tmp_path, "jieba")
    np.testing.assert_array_equal(blocks.continues, again.continues)
    assert blocks.continues.shape == blocks.ids.shape
    special = np.isin(blocks.ids, tok.all_special_ids)
    assert not blocks.continues[special].any() and blocks.continues.any()
    spec = pipeline.masking_spec(_cfg(), tok)
    rows = np.arange(len(blocks))
    one, two = (
        mask_rows(blocks.ids, blocks.lengths, rows, spec, 7, 3, blocks.continues) for _ in range(2)
    )
    for key in one:
        np.testing.assert_array_equal(one[key], two[key])
    cached = list((tmp_path / f"words-{segment.version('jieba')}").glob("*.npz"))
    assert len(cached) == 1


CJK_MIXED = [
    "北京大学的Ｂｅｒｔ模型，在２０２４年取得了９５．５％的准确率！",
    "「你好」，世界。Hello, WORLD: naïve café résumé — 東京タワー、がぎぐ。",
    "数学公式 E=mc² 和 pinyin nǐ hǎo；全角标点：（括号）【方括号】《书名》…",
    "Ｕｎｉｃｏｄｅ　全角空格　和\t制表符\u200b零宽字符，emoji 😀 以及 𠀀 扩展字。",
]


@pytest.mark.parametrize("lowercase, keep_accents", [(True, False), (False, False), (True, True)])
def test_trained_wordpiece_splits_cjk_as_bert_tokenizer(tmp_path, lowercase, keep_accents):
    """Our trained WordPiece's normaliser and pre-tokeniser against transformers' pure-Python
    ``BertTokenizerLegacy(tokenize_chinese_chars=True)`` on mixed text with full-width letters,
    digits and punctuation: the same words; and through the saved vocabulary, the same ids."""
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    tok = vocab.train_wordpiece(CJK_MIXED * 2, 400, lowercase, keep_accents)
    by_id = sorted(tok.get_vocab().items(), key=lambda item: item[1])
    (tmp_path / "vocab.txt").write_text("".join(f"{t}\n" for t, _ in by_id))
    strip = False if keep_accents or not lowercase else None
    legacy = BertTokenizerLegacy(
        str(tmp_path / "vocab.txt"),
        do_lower_case=lowercase,
        strip_accents=strip,
        tokenize_chinese_chars=True,
    )
    backend = tok.backend_tokenizer
    for text in CJK_MIXED:
        words = [
            w
            for w, _ in backend.pre_tokenizer.pre_tokenize_str(
                backend.normalizer.normalize_str(text)
            )
        ]
        assert words == legacy.basic_tokenizer.tokenize(text), text
        assert tok(text)["input_ids"] == legacy(text)["input_ids"], text
    cjk = [w for w in words if any(segment.is_cjk(c) for c in w)]
    assert cjk and all(len(w) == 1 for w in cjk), "every CJK ideograph is a word of its own"


def test_lowercase_and_accents_keep_what_they_should():
    """Uncased keeps every CJK character and full-width form, lowercases English (full-width
    too); stripping accents drops pinyin's tone marks and kana's voicing marks, which
    ``keep_accents`` keeps; cased keeps everything."""
    text = "Ｂｅｒｔ模型 Hello nǐ hǎo がぎ"

    def words(lowercase, keep):
        tok = vocab.train_wordpiece([text], 200, lowercase, keep)
        return tok.backend_tokenizer.normalizer.normalize_str(text).split()

    assert words(True, False) == "ｂｅｒｔ 模 型 hello ni hao かき".split()
    assert words(True, True) == "ｂｅｒｔ 模 型 hello nǐ hǎo がぎ".split()
    assert words(False, False) == "Ｂｅｒｔ 模 型 Hello nǐ hǎo がぎ".split()


def test_a_prepared_folder_carries_the_words(tmp_path):
    """``prepare`` with a word segmenter stores each token's flag with its id: every block of
    both splits equals the in-memory packing of that split's documents, flags included; a run
    that asks for words from a folder prepared without them stops with one sentence."""
    import json

    from test_train import tiny_config

    from ptft_jax import prepare
    from ptft_jax.data import store

    texts = [f"{s}（第{i}段）" for i in range(30) for s in SENTENCES if s]
    with open(tmp_path / "zh.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
    tok = vocab.train_wordpiece(texts, 400)
    tokenize.save_tokenizer(tok, tmp_path / "tok")
    c = tiny_config(tokenizer=str(tmp_path / "tok"))
    c.data.update(source=str(tmp_path / "zh.jsonl"), max_documents=0, max_seq_length=32)
    c.data.update(eval_fraction=0.2, whole_word_masking=True, word_segmenter="jieba")
    manifest = prepare.prepare(c, tmp_path / "store", workers=1, per_shard=7)
    assert manifest["word_segmenter"] == segment.version("jieba")
    tok = tokenize.load_tokenizer(str(tmp_path / "store" / "tokenizer"))
    pad = tokenize.special_ids(tok)["pad"]
    for split in store.SPLITS:
        docs = [t for t in texts if store.held_out(t, 0.2) == (split == "validation")]
        want = pipeline.pack_texts(docs, tok, 32, tmp_path / "cache", "jieba")
        blocks = store.open_split(tmp_path / "store", split, pad)
        ids, lengths, words = blocks.rows(np.arange(len(blocks)))
        np.testing.assert_array_equal(ids, want.ids)
        np.testing.assert_array_equal(lengths, want.lengths)
        np.testing.assert_array_equal(words, want.continues)
        assert words.any()

    c.data.word_segmenter, c.data.whole_word_masking = "", False
    prepare.prepare(c, tmp_path / "plain", workers=1)
    c.data.source, c.data.word_segmenter, c.data.whole_word_masking = "", "jieba", True
    c.data.source = str(tmp_path / "plain")
    with pytest.raises(tokenize.DataError, match="was prepared without data.word_segmenter="):
        store.open_for(c.data, type("MLM", (), {"store_blocks": "mlm", "name": "mlm"}), tok, pad)


def test_a_missing_segmenter_is_one_sentence_before_anything_runs(monkeypatch):
    from ptft_jax.config import ConfigError, base_config, validate

    cfg = base_config()
    cfg.data.update(whole_word_masking=True, word_segmenter="jieba")
    validate(cfg)
    monkeypatch.setattr(segment.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"needs the jieba package: pip install 'ptft_jax\[zh\]'"):
        validate(cfg)
