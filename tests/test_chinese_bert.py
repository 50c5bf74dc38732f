"""A checkpoint laid out as bert-base-chinese is (config.json, a vocab.txt of 21,128 entries and
no tokenizer.json, ``do_lower_case: false``) read with ``init_from=hf:``: its tokenizer cuts
Chinese text exactly as transformers' BertTokenizer does, an MLM run with jieba's whole-word
masking and a classifier train from it, and both export to folders transformers loads with the
same logits."""

import json

import numpy as np
import pytest
import torch
import transformers
from helpers import both_logits
from test_chinese import SENTENCES
from test_train import tiny_config

from ptft_jax import workdir
from ptft_jax.data.tokenize import load_tokenizer
from ptft_jax.export import export
from ptft_jax.train import run

VOCAB_SIZE = 21_128  # bert-base-chinese's
TEXTS = [
    "北京大学的Ｂｅｒｔ模型，在２０２４年取得了９５．５％的准确率！",
    "研究人员使用transformers训练中文模型。",
]


def _vocab() -> list[str]:
    """bert-base-chinese's layout: [PAD], 99 unused, [UNK] [CLS] [SEP] [MASK] at 100-103, then
    ASCII, full-width punctuation, a few English pieces, and CJK ideographs up to 21,128."""
    head = ["[PAD]", *(f"[unused{i}]" for i in range(1, 100)), "[UNK]", "[CLS]", "[SEP]"]
    head += ["[MASK]", "<S>", "<T>"]
    head += [chr(c) for c in range(33, 127)] + list("，。！？、；：（）【】《》“”‘’…—％．")
    head += [chr(c) for c in range(0xFF10, 0xFF1A)]  # full-width digits
    head += ["the", "bert", "model", "trans", "##form", "##ers", "##ing"]
    head += [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"]
    cjk = [chr(c) for c in range(0x4E00, 0x4E00 + VOCAB_SIZE - len(head))]
    return head + cjk


@pytest.fixture(scope="module")
def chinese_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert-base-chinese")
    (folder / "vocab.txt").write_text("".join(f"{t}\n" for t in _vocab()))
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    config = transformers.BertConfig(
        vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.BertForMaskedLM(config).save_pretrained(folder)
    assert not (folder / "tokenizer.json").exists()
    return folder


def test_vocab_only_folder_tokenizes_as_bert_tokenizer(chinese_folder):
    from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy

    tok = load_tokenizer(str(chinese_folder))
    legacy = BertTokenizerLegacy(str(chinese_folder / "vocab.txt"), do_lower_case=False)
    assert len(tok) == VOCAB_SIZE and tok.cls_token_id == 101 and tok.mask_token_id == 103
    for text in TEXTS + SENTENCES:
        assert tok(text)["input_ids"] == legacy(text)["input_ids"], text
    assert tok.unk_token_id not in tok(TEXTS[1])["input_ids"]


@pytest.mark.slow
def test_mlm_with_whole_words_and_a_classifier_from_bert_base_chinese(tmp_path, chinese_folder):
    (tmp_path / "zh.txt").write_text("\n".join(SENTENCES[:-2] * 12))
    c = tiny_config(steps=4, eval_every=4, checkpoint_every=4)
    c.init_from = f"hf:{chinese_folder}"
    c.data.update(source=str(tmp_path / "zh.txt"), max_documents=0, eval_fraction=0.2)
    c.data.update(whole_word_masking=True, word_segmenter="jieba")
    run(c, tmp_path / "mlm")
    loaded = workdir.load(tmp_path / "mlm")
    assert loaded.model_cfg.vocab_size == VOCAB_SIZE and len(loaded.tokenizer) == VOCAB_SIZE
    export(str(tmp_path / "mlm"), str(tmp_path / "mlm_hf"))
    model, info = transformers.BertForMaskedLM.from_pretrained(
        tmp_path / "mlm_hf", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    enc = loaded.tokenizer(TEXTS, padding=True, return_tensors="np")
    ours, theirs = both_logits(loaded, "mlm", model, enc)
    real = enc["attention_mask"].astype(bool)
    np.testing.assert_allclose(ours[real], theirs[real], atol=2e-4, rtol=1e-4)

    rows = [f"{s[:-1]}，第{i}次。".replace(",", "、") for i in range(8) for s in SENTENCES[:-2]]
    labels = [i % 2 for i in range(len(rows))]
    (tmp_path / "zh.csv").write_text(
        "text,label\n" + "".join(f"{r},{y}\n" for r, y in zip(rows, labels, strict=True))
    )
    c = tiny_config(epochs=1)
    c.task, c.init_from = "classification", f"hf:{chinese_folder}"
    c.model.num_labels = 2
    c.data.update(source=str(tmp_path / "zh.csv"), max_documents=0, max_seq_length=48)
    c.train.update(batch_size=8, eval_batches=0)
    run(c, tmp_path / "cls")
    export(str(tmp_path / "cls"), str(tmp_path / "cls_hf"))
    model, info = transformers.BertForSequenceClassification.from_pretrained(
        tmp_path / "cls_hf", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    ours, theirs = both_logits(workdir.load(tmp_path / "cls"), "classification", model, enc)
    np.testing.assert_allclose(ours, theirs, atol=2e-4, rtol=1e-4)
