"""The byte-level BPEs trained for RoBERTa and ModernBERT when no tokenizer is given: the same
vocabulary and merges on every run, specials at their documented ids, each family's special
tokens around texts and pairs, saved and loaded back by transformers as the same tokenizer,
picked by model family (a causal LM keeps GPT-2's), and whole-word masking over their words."""

import json

import numpy as np
import pytest
import transformers

from ptft_jax.data import tokenize
from ptft_jax.data.masking import mask_rows
from ptft_jax.data.pipeline import masking_spec
from ptft_jax.data.vocab import train_modernbert_bpe, train_roberta_bpe, train_wordpiece
from ptft_jax.tasks.base import trained_tokenizer_kind
from ptft_jax.tasks.causal_lm import CausalLM
from ptft_jax.tasks.classification import Classification
from ptft_jax.tasks.mlm import MLM

TEXTS = [
    f"The unbelievably photogenic hummingbird {i} outmaneuvered {i % 7} bewildered "
    f"ornithologists near river {i % 13}."
    for i in range(120)
] + ["Über naïve café, déjà vu: 42 € and 3.14%!", "中文文本也要能用。"]
TRAINERS = {"roberta": train_roberta_bpe, "modernbert": train_modernbert_bpe}
SPECIALS = {  # (pad, cls, sep, mask, unk) tokens and ids, as the trainers document them
    "roberta": (("<pad>", 1), ("<s>", 0), ("</s>", 2), ("<mask>", 4), ("<unk>", 3)),
    "modernbert": (("[PAD]", 0), ("[CLS]", 2), ("[SEP]", 3), ("[MASK]", 4), ("[UNK]", 1)),
}


@pytest.fixture(scope="module")
def trained():
    return {family: train(TEXTS, 400) for family, train in TRAINERS.items()}


def _model(tok) -> dict:
    return json.loads(tok.backend_tokenizer.to_str())["model"]


@pytest.mark.parametrize("family", list(TRAINERS))
def test_training_twice_gives_the_same_vocab_and_merges(trained, family):
    again = TRAINERS[family](list(TEXTS), 400)
    first, second = _model(trained[family]), _model(again)
    assert first["vocab"] == second["vocab"] and first["merges"] == second["merges"]
    assert len(first["merges"]) > 50 and len(trained[family]) <= 400


@pytest.mark.parametrize("family", list(TRAINERS))
def test_specials_have_their_documented_ids(trained, family):
    tok = trained[family]
    (pad, pad_id), (cls, cls_id), (sep, sep_id), (mask, mask_id), (unk, unk_id) = SPECIALS[family]
    assert tokenize.special_ids(tok) == {"pad": pad_id, "cls": cls_id, "sep": sep_id, "mask": 4}
    assert (tok.pad_token, tok.cls_token, tok.sep_token, tok.mask_token) == (pad, cls, sep, mask)
    assert tok.unk_token_id == unk_id and mask_id == 4
    assert sorted(tok.all_special_ids) == [0, 1, 2, 3, 4]
    assert tokenize.pad_id(tok) == pad_id


@pytest.mark.parametrize("family", list(TRAINERS))
def test_texts_and_pairs_get_the_familys_special_tokens(trained, family):
    tok = trained[family]
    cls, sep = SPECIALS[family][1][0], SPECIALS[family][2][0]
    a, b = "The hummingbird", "near river"
    pa = tok.tokenize(a)
    pb = tok.tokenize(b)
    assert pa[0] == "The" and pa[1].startswith(tokenize.SPACE), "no prefix space, Ġ words"
    single = tok.convert_ids_to_tokens(tok(a)["input_ids"])
    pair = tok.convert_ids_to_tokens(tok(a, b)["input_ids"])
    assert single == [cls, *pa, sep]
    if family == "roberta":  # <s> A </s></s> B </s>, as transformers' RobertaTokenizer
        assert pair == [cls, *pa, sep, sep, *pb, sep]
        assert set(tok(a, b, return_token_type_ids=True)["token_type_ids"]) == {0}
    else:  # [CLS] A [SEP] B [SEP], B of segment 1; no type ids unless asked, as ModernBERT's
        assert pair == [cls, *pa, sep, *pb, sep]
        types = tok(a, b, return_token_type_ids=True)["token_type_ids"]
        assert types == [0] * (len(pa) + 2) + [1] * (len(pb) + 1)
        assert "token_type_ids" not in tok(a)
    # The mask takes the space before it: the word after it keeps its own.
    masked = tok.convert_ids_to_tokens(tok(f"The {tok.mask_token} hummingbird")["input_ids"])
    assert masked[1:3] == ["The", tok.mask_token] and masked[3].startswith(tokenize.SPACE)
    assert tok.decode(tok(TEXTS[-2], add_special_tokens=False)["input_ids"]) == TEXTS[-2]


@pytest.mark.parametrize("family", list(TRAINERS))
def test_a_saved_tokenizer_loads_back_as_the_same_one(trained, family, tmp_path):
    tok = trained[family]
    tokenize.save_tokenizer(tok, tmp_path / "tok")
    auto = transformers.AutoTokenizer.from_pretrained(tmp_path / "tok")
    ours = tokenize.load_tokenizer(str(tmp_path / "tok"))
    if family == "roberta":
        assert isinstance(auto, transformers.RobertaTokenizer)
        assert isinstance(ours, transformers.RobertaTokenizer)
    texts = [TEXTS[3], f"the {tok.mask_token} bird", TEXTS[-1]]
    for loaded in (auto, ours):
        assert loaded(texts)["input_ids"] == tok(texts)["input_ids"]
        assert loaded(texts[0], texts[1])["input_ids"] == tok(texts[0], texts[1])["input_ids"]
        assert tokenize.special_ids(loaded) == tokenize.special_ids(tok)
    # A resumed run checks its tokenizer by fingerprint: the loaded one must match.
    assert tokenize.tokenizer_fingerprint(ours) == tokenize.tokenizer_fingerprint(tok)


def test_the_kind_trained_follows_the_family_unless_the_task_needs_its_own():
    for task in (MLM, Classification):
        assert trained_tokenizer_kind(task, "bert") == "wordpiece"
        assert trained_tokenizer_kind(task, "roberta") == "roberta_bpe"
        assert trained_tokenizer_kind(task, "modernbert") == "modernbert_bpe"
    for family in ("gpt2", "roberta", "bert"):
        assert trained_tokenizer_kind(CausalLM, family) == "byte_bpe"
    for kind in ("wordpiece", "byte_bpe", "roberta_bpe", "modernbert_bpe"):
        assert kind in tokenize.TRAINERS


WORDS = "the unbelievably photogenic hummingbird outmaneuvered bewildered ornithologists"


@pytest.mark.parametrize("family", list(TRAINERS))
def test_whole_word_masking_masks_byte_level_words_whole(trained, family):
    """Known words split into several pieces; only a word's first piece after the first word
    starts with the space symbol. Every word (its pieces found by their characters, not the
    rule masking uses) is masked whole or not at all."""
    tok = trained[family]
    continues = tokenize.word_continuations(tok)
    pieces = tok.tokenize(WORDS)
    assert len(pieces) > len(WORDS.split()), "some words need several pieces"
    enc = tok(WORDS, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    assert not continues[ids[0]] and not continues[ids[-1]], "specials continue nothing"
    ends = np.cumsum([len(w) + 1 for w in WORDS.split()])  # a word's end + its space
    word_of = [int(np.searchsorted(ends, end - 1, side="right")) for _, end in offsets[1:-1]]
    starts = [i == 0 or word_of[i] != word_of[i - 1] for i in range(len(word_of))]
    # The first word has no space before it: it follows <s>/[CLS], where a word starts anyway.
    assert [not c for c in continues[ids[1:-1]]][1:] == starts[1:]
    assert continues[ids[1]], "the text's first piece has no space symbol"

    cfg = {"max_predictions_per_seq": 20, "mlm_probability": 0.3, "whole_word_masking": True}
    spec = masking_spec(type("Cfg", (dict,), {"__getattr__": dict.__getitem__})(cfg), tok)
    rows = np.array([ids] * 8, np.int32)
    whole = 0
    for b in range(50):
        out = mask_rows(rows, np.full(8, len(ids)), np.arange(8), spec, seed=0, batch_index=b)
        for r in range(8):
            chosen = set(out["masked_positions"][r][out["masked_weights"][r] > 0].tolist())
            for w in range(len(WORDS.split())):
                positions = {1 + i for i, x in enumerate(word_of) if x == w}
                assert positions <= chosen or not positions & chosen, (w, positions, chosen)
                whole += len(positions) > 1 and positions <= chosen
    assert whole > 0, "words of several pieces were masked, whole"


def test_wordpiece_continuations_are_its_hash_pieces():
    tok = train_wordpiece(TEXTS, 300)
    continues = tokenize.word_continuations(tok)
    tokens = tok.convert_ids_to_tokens(range(len(tok)))
    assert [t for t, c in zip(tokens, continues, strict=True) if c] == [
        t for t in tokens if t.startswith("##")
    ]
    assert not continues[tok.all_special_ids].any()
