"""Packed rows (several examples a row, segment ids in the attention mask, positions restarting at
each example) compute what one example a row computes: example by example for every head, text
pairs with their segment ids included; and no attention weight crosses examples, in evaluation
and with dropout on."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from ptft_jax.models import bert, layers

L = 24
CFG = bert.BertConfig(
    vocab_size=97,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=64,
    max_position_embeddings=L,
    num_labels=3,
)


def _examples(seed: int = 0):
    """Five examples of different lengths, ``[CLS] ... [SEP]``; the second and fourth are
    text pairs (segment ids 0 then 1)."""
    rng = np.random.default_rng(seed)
    out = []
    for n, pair in [(7, False), (12, True), (5, False), (20, True), (9, False)]:
        ids = np.concatenate([[2], rng.integers(5, CFG.vocab_size, n - 2), [3]])
        types = np.zeros(n, np.int32)
        if pair:
            types[n // 2 :] = 1
        out.append((ids.astype(np.int32), types))
    return out


def _one_a_row(examples):
    ids, types, mask = (np.zeros((len(examples), L), np.int32) for _ in range(3))
    for r, (x, t) in enumerate(examples):
        ids[r, : len(x)], types[r, : len(x)], mask[r, : len(x)] = x, t, 1
    return ids, mask, types


def _packed(examples, rows):
    """``rows``: example indices per row. Returns the packed arrays and, per slot, its example."""
    k = max(map(len, rows))
    ids, seg, types, pos = (np.zeros((len(rows), L), np.int32) for _ in range(4))
    cls = np.zeros((len(rows), k), np.int32)
    slot = np.full((len(rows), k), -1)
    for r, members in enumerate(rows):
        at = 0
        for j, e in enumerate(members):
            x, t = examples[e]
            n = len(x)
            ids[r, at : at + n], types[r, at : at + n] = x, t
            seg[r, at : at + n], pos[r, at : at + n] = j + 1, np.arange(n)
            cls[r, j], slot[r, j] = at, e
            at += n
    return (ids, seg, types), {"position_ids_BxL": pos, "cls_positions_BxK": cls}, slot


ROWS = [[0, 1, 2], [3], [4]]  # 24, 20 and 9 tokens of 24


@pytest.mark.parametrize(
    "head, num_labels", [("classification", 3), ("classification", 1), ("embedding", 3)]
)  # classification, regression, and the contrastive task's mean-pooled embedding
def test_packed_rows_compute_what_one_example_a_row_computes(head, num_labels):
    cfg = bert.BertConfig(**{**CFG.__dict__, "num_labels": num_labels})
    model = bert.build_model(cfg, head, seed=0)
    examples = _examples()
    want = np.asarray(model(*map(jnp.asarray, _one_a_row(examples))))
    inputs, packed, slot = _packed(examples, ROWS)
    got = np.asarray(model(*map(jnp.asarray, inputs), **packed))
    assert got.shape[:2] == slot.shape
    np.testing.assert_allclose(got[slot >= 0], want[slot[slot >= 0]], rtol=1e-5, atol=1e-5)


def test_a_token_attends_to_its_own_example_only():
    seg = np.array([[1, 1, 2, 2, 2, 0]])
    mask = np.asarray(layers.segment_mask(jnp.asarray(seg)))[0]
    for q in range(5):
        np.testing.assert_array_equal(mask[q], (seg[0] == seg[0, q]))
    np.testing.assert_array_equal(mask[5], seg[0] > 0)  # padding: every real key, stays finite


@pytest.mark.parametrize("dropout", [False, True])
def test_no_attention_weight_crosses_examples(dropout):
    """Changing one example's tokens leaves every other example's output exactly as it was
    (dropout draws depend on positions, not on values, so they stay the same too)."""
    cfg = bert.BertConfig(**{**CFG.__dict__, "attention_probs_dropout_prob": 0.2})
    model = bert.build_model(cfg, "classification", seed=0)
    examples = _examples()
    changed = list(examples)
    changed[1] = (np.roll(changed[1][0], 3), changed[1][1])
    outs = []
    for ex in (examples, changed):
        inputs, packed, slot = _packed(ex, ROWS)
        rngs = nnx.Rngs(dropout=7) if dropout else None
        outs.append(np.asarray(model(*map(jnp.asarray, inputs), rngs=rngs, **packed)))
    others = (slot >= 0) & (slot != 1)
    np.testing.assert_array_equal(outs[0][others], outs[1][others])
    assert not np.array_equal(outs[0][slot == 1], outs[1][slot == 1])
