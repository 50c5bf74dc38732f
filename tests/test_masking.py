import numpy as np
import pytest

from ptft_jax.data.masking import MaskingSpec, mask_rows
from ptft_jax.data.pipeline import pack

CLS, SEP, PAD, MASK = 2, 3, 0, 4
SPEC = MaskingSpec(vocab_size=1000, mask_id=MASK, special_ids=(0, 1, 2, 3, 4), max_predictions=40)


def _blocks(n=512, length=128, seed=0):
    rng = np.random.default_rng(seed)
    docs = [rng.integers(10, 1000, rng.integers(5, 300)).astype(np.int32) for _ in range(n)]
    return pack(docs, length, CLS, SEP, PAD)


def test_pack_layout():
    docs = [np.arange(10, 15, dtype=np.int32), np.arange(20, 23, dtype=np.int32)]
    b = pack(docs, 8, CLS, SEP, PAD)
    # stream: 10..14 SEP 20 21 22 SEP (10 tokens), bodies of 6
    assert b.ids.tolist() == [
        [CLS, 10, 11, 12, 13, 14, SEP, SEP],
        [CLS, 20, 21, 22, SEP, SEP, PAD, PAD],
    ]
    assert b.lengths.tolist() == [8, 6]


def test_masking_statistics():
    blocks = _blocks()
    rows = np.arange(len(blocks))
    out = mask_rows(blocks.ids, blocks.lengths, rows, SPEC, seed=0, batch_index=0)
    w = out["masked_weights"].astype(bool)
    cand = ~np.isin(blocks.ids, SPEC.special_ids) & (out["attention_mask"] == 1)
    # 15% of the maskable tokens of each row (bounded by max_predictions).
    expected = np.minimum(np.maximum(np.round(cand.sum(1) * 0.15), 1), SPEC.max_predictions)
    np.testing.assert_array_equal(w.sum(1), expected)
    pos, labels = out["masked_positions"], out["masked_ids"]
    r = np.repeat(rows[:, None], pos.shape[1], 1)
    np.testing.assert_array_equal(labels[w], blocks.ids[r[w], pos[w]])
    assert not np.isin(labels[w], SPEC.special_ids).any(), "special tokens are never masked"
    now = out["input_ids"][r[w], pos[w]]
    is_mask = now == MASK
    kept = now == labels[w]
    rand = ~is_mask & ~kept
    n = w.sum()
    assert n > 5000
    assert abs(is_mask.mean() - 0.8) < 0.02
    assert abs(kept.mean() - 0.1) < 0.02  # (a random draw equal to the label counts as kept)
    assert abs(rand.mean() - 0.1) < 0.02
    # Unmasked positions are untouched.
    untouched = np.ones_like(blocks.ids, bool)
    untouched[r[w], pos[w]] = False
    np.testing.assert_array_equal(out["input_ids"][untouched], blocks.ids[untouched])


def test_masking_is_deterministic_and_topology_free():
    full = _blocks(64)
    blocks = type(full)(ids=full.ids[:64], lengths=full.lengths[:64])
    rows = np.arange(64)
    a = mask_rows(blocks.ids, blocks.lengths, rows, SPEC, seed=3, batch_index=7)
    # The same rows masked by two "processes" (halves) give the same result.
    h1 = mask_rows(blocks.ids[:32], blocks.lengths[:32], rows[:32], SPEC, 3, 7)
    h2 = mask_rows(blocks.ids[32:], blocks.lengths[32:], rows[32:], SPEC, 3, 7)
    for k in a:
        np.testing.assert_array_equal(a[k], np.concatenate([h1[k], h2[k]]))
    b = mask_rows(blocks.ids, blocks.lengths, rows, SPEC, seed=3, batch_index=8)
    assert not np.array_equal(a["masked_positions"], b["masked_positions"])


@pytest.mark.parametrize("length", [1, 2])
def test_rows_with_nothing_to_mask(length):
    ids = np.array([[CLS, SEP, PAD, PAD]], np.int32)
    out = mask_rows(ids, np.array([length]), np.array([0]), SPEC, 0, 0)
    assert out["masked_weights"].sum() == 0


SENTENCES = [
    "The unbelievably photogenic hummingbird outmaneuvered two bewildered ornithologists.",
    "Tokenization of antidisestablishmentarianism remains a lexicographer's nightmare.",
    "Preprocessing pipelines parallelize embarrassingly well on multiprocessor workstations.",
]


def test_whole_word_masking_never_masks_part_of_a_word():
    """Known sentences through the real BERT vocabulary: the tokenizer's own word ids (not the
    ``##`` rule masking uses) say which pieces form a word; every word is masked whole or not
    at all, and the rate counts words."""
    from ptft_jax import hf
    from ptft_jax.data.pipeline import masking_spec
    from ptft_jax.data.tokenize import load_tokenizer

    tok = load_tokenizer(str(hf.resolve("builtin:minilm_l6")))
    data_cfg = {"max_predictions_per_seq": 40, "mlm_probability": 0.15, "whole_word_masking": 1}
    spec = masking_spec(type("Cfg", (dict,), {"__getattr__": dict.__getitem__})(data_cfg), tok)
    encodings = [tok(s) for s in SENTENCES * 2]
    length = max(len(e["input_ids"]) for e in encodings)
    ids = np.zeros((len(encodings), length), np.int32)
    for i, e in enumerate(encodings):
        ids[i, : len(e["input_ids"])] = e["input_ids"]
    lengths = np.array([len(e["input_ids"]) for e in encodings])
    multi_piece, masked_words = 0, []
    for batch_index in range(200):
        out = mask_rows(ids, lengths, np.arange(len(ids)), spec, seed=0, batch_index=batch_index)
        for i, e in enumerate(encodings):
            chosen = set(out["masked_positions"][i][out["masked_weights"][i] > 0].tolist())
            words = {}
            for pos, word in enumerate(e.word_ids()):
                if word is not None:
                    words.setdefault(word, []).append(pos)
            for pieces in words.values():
                hit = chosen & set(pieces)
                assert not hit or hit == set(pieces), (SENTENCES[i % 3], pieces, chosen)
                multi_piece += bool(hit) and len(pieces) > 1
            assert chosen <= {p for pieces in words.values() for p in pieces}
            masked_words.append(sum(bool(chosen & set(p)) for p in words.values()) / len(words))
    assert multi_piece > 100, "the sentences must exercise words of several pieces"
    assert abs(np.mean(masked_words) - 0.15) < 0.03
