"""A trained vocabulary covers the text it will meet: ``data.vocab_characters='gb2312'`` puts
every GB 2312 character in a WordPiece whatever its training text held, and what reads data
(MLM from raw text, ``prepare``, fine-tuning) says which share of it became ``[UNK]``, with a
warning naming the fix above 1%."""

import json
import logging

import pytest
from test_train import tiny_config

from ptft_jax import prepare
from ptft_jax.config import ConfigError, base_config, validate
from ptft_jax.data import coverage, tokenize, vocab

TEXTS = ["人民日报社论说今天的天气很好。", "我们在北京学习中文和数学。"] * 4


def test_gb2312_is_its_6763_hanzi_and_682_other_characters_and_ascii():
    chars = vocab.charset("gb2312")
    assert len(chars) == len(set(chars)) == 6763 + 682 + 94
    assert sum("\u4e00" <= c <= "\u9fff" for c in chars) == 6763
    assert "鑫" in chars and "淼" in chars and "𠀀" not in chars
    assert vocab.charset("") == ""


def test_the_characters_are_tokens_whatever_the_training_text_held():
    plain = vocab.train_wordpiece(TEXTS, 300)
    covered = vocab.train_wordpiece(TEXTS, 8000, characters=vocab.charset("gb2312"))
    assert plain.tokenize("鑫淼天气") == ["[UNK]", "[UNK]", "天", "气"]
    assert covered.tokenize("鑫淼天气") == ["鑫", "淼", "天", "气"]
    assert plain.tokenize("iphone 2010(") == ["[UNK]", "[UNK]", "[UNK]"]
    assert "[UNK]" not in covered.tokenize("iphone 2010(qdii)")
    again = vocab.train_wordpiece(TEXTS, 8000, characters=vocab.charset("gb2312"))
    assert again.get_vocab() == covered.get_vocab()  # deterministic, added characters too
    with pytest.raises(vocab.DataError, match="raise --config.model.vocab_size"):
        vocab.train_wordpiece(TEXTS, 1000, characters=vocab.charset("gb2312"))


def test_an_unknown_character_set_is_one_sentence():
    c = base_config()
    c.data.vocab_characters = "big5"
    with pytest.raises(ConfigError, match="data.vocab_characters='big5' is unknown; use 'gb2312'"):
        validate(c)


def test_the_unknown_share_is_counted_without_the_special_tokens(caplog):
    tok = vocab.train_wordpiece(TEXTS, 300)
    rows = [tok("鑫天")["input_ids"], tok("天气很好")["input_ids"]]  # [CLS] ... [SEP]
    assert coverage.count_unknown(tok, rows) == (1, 6)
    caplog.set_level(logging.INFO)
    coverage.report_unknown(tok, {"train": (1, 1000)}, "builtin:x")
    assert "[UNK] share of builtin:x: train 0.10% of 1,000 text tokens" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    coverage.report_unknown(tok, {"train": (1, 1000), "test": (3, 100)}, "builtin:x")
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "test 3.00%" in warning.getMessage()
    assert "data.vocab_characters='gb2312'" in warning.getMessage()
    gpt2 = vocab.train_byte_bpe(["hello world"] * 3, 300)
    assert coverage.unknown_id(gpt2) is None and coverage.count_unknown(gpt2, [[1, 2]]) == (0, 0)


def test_prepare_counts_the_unknown_tokens_it_wrote(tmp_path, caplog):
    texts = [f"{t}{a}{b}鑫" for t in TEXTS[:2] for a in "天气很好" for b in "人民日报学习"]
    with open(tmp_path / "zh.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts)
    tokenize.save_tokenizer(vocab.train_wordpiece(TEXTS, 300), tmp_path / "tok")
    c = tiny_config(tokenizer=str(tmp_path / "tok"))
    c.data.update(source=str(tmp_path / "zh.jsonl"), max_documents=0, max_seq_length=32)
    caplog.set_level(logging.INFO)
    manifest = prepare.prepare(c, tmp_path / "store", workers=1)
    assert manifest["unknown"] == len(texts)  # one 鑫 a text
    (warning,) = [r for r in caplog.records if r.levelno >= logging.WARNING]
    share = f"{len(texts) / manifest['tokens']:.2%}"
    assert f"share of {tmp_path / 'zh.jsonl'}: all splits {share}" in warning.getMessage()
