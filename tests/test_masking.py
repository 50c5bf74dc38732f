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
