"""Packed contrastive batches: batch ``b`` holds the examples the unpacked batch ``b`` holds, both
views of each side by side in one row, whatever the topology; and a step on packed rows computes
the loss and gradients a step on one example a row computes."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from ptft_jax import config as config_lib
from ptft_jax import optim, sharding, steps
from ptft_jax.data import contrastive
from ptft_jax.data.pipeline import BatchLayout
from ptft_jax.tasks.contrastive import Contrastive

SEQ = 12
PAD = 0


def _rows(n=40, supervised=True, seed=0) -> contrastive.Rows:
    """``n`` distinct examples ``[CLS]=2 ... [SEP]=3`` of 3 to 6 tokens, every seventh of SEQ
    (and positives)."""
    rng = np.random.default_rng(seed)

    def encode(salt):
        ids, mask = np.full((n, SEQ), PAD, np.int32), np.zeros((n, SEQ), np.int32)
        for r in range(n):
            m = SEQ if r % 7 == 0 else int(rng.integers(3, 7))
            first = 5 + r if salt == 0 else int(rng.integers(5, 90))  # texts are distinct
            ids[r, :m] = [2, first, *rng.integers(5, 90, m - 3), 3]
            mask[r, :m] = 1
        return ids, mask

    return contrastive.Rows(*encode(0), *(encode(1) if supervised else (None, None)))


def _views(data, e) -> tuple:
    second = data.ids if data.pair_ids is None else data.pair_ids
    second_mask = data.mask if data.pair_mask is None else data.pair_mask
    return (
        tuple(data.ids[e, : data.mask[e].sum()]),
        tuple(second[e, : second_mask[e].sum()]),
    )


def _unpacked_examples(batch, data) -> set:
    """The examples of an unpacked batch, as (view, view) token tuples."""
    ids, mask = batch["input_ids"][0], batch["attention_mask"][0]
    pids = batch.get("pair_input_ids", batch["input_ids"])[0]
    pmask = batch.get("pair_attention_mask", batch["attention_mask"])[0]
    return {
        (tuple(ids[r, : mask[r].sum()]), tuple(pids[r, : pmask[r].sum()]))
        for r in range(len(ids))
        if batch["weights"][0, r] > 0
    }


def _packed_examples(batch) -> set:
    """The examples of a packed batch, read back from segments and positions."""
    out = set()
    ids, seg, pos = batch["input_ids"][0], batch["attention_mask"][0], batch["position_ids"][0]
    firsts, weights = batch["cls_positions"][0], batch["weights"][0]
    for r in range(len(ids)):
        for j in np.flatnonzero(weights[r]):
            views = []
            for v in (2 * j + 1, 2 * j + 2):
                at = np.flatnonzero(seg[r] == v)
                assert firsts[r, v - 1] == at[0] and np.array_equal(pos[r, at], np.arange(len(at)))
                views.append(tuple(ids[r, at]))
            out.add(tuple(views))
    return out


def _packed_dataset(data, layout, batches, seed=3):
    plan = contrastive.PackedPlan(data, layout.global_rows, seed, 2 * SEQ)
    shape, real = contrastive.packed_shape(plan, batches, [], layout.shards)
    return plan, shape, real


@pytest.mark.parametrize("supervised", [True, False])
def test_packed_batches_hold_the_unpacked_examples(supervised):
    data = _rows(supervised=supervised)
    layout = BatchLayout(accum=1, micro=8, start=0, stop=8)
    unpacked, spe = contrastive.train_dataset(data, layout, seed=3)
    plan, shape, real = _packed_dataset(data, layout, batches=12)
    assert plan.spe == spe == 5
    packed = contrastive.packed_train_dataset(plan, shape, layout.with_rows(shape.rows), PAD)
    assert shape.rows < 8, "packing takes fewer rows than one example a row"
    tokens = 0
    for b in range(12):  # across epochs: each reshuffles
        got, want = _packed_examples(packed[b]), _unpacked_examples(unpacked[b], data)
        assert got == want and len(got) == 8, b
        assert packed[b]["input_ids"].shape == (1, shape.rows, 2 * SEQ)
        tokens += Contrastive(packing=True).token_counts(packed[b])[0]
    assert real == pytest.approx(tokens / (12 * shape.rows * 2 * SEQ))
    # Every example of an epoch exactly once (its last partial batch is left out).
    epoch = set().union(*(_packed_examples(packed[b]) for b in range(spe)))
    assert len(epoch) == spe * 8
    assert epoch <= {_views(data, e) for e in range(len(data))}


def test_packed_batches_do_not_depend_on_the_topology():
    data = _rows()
    one = BatchLayout(accum=1, micro=8, start=0, stop=8, shards=2)
    plan, shape, _ = _packed_dataset(data, one, batches=10)
    whole = contrastive.packed_train_dataset(plan, shape, one.with_rows(shape.rows), PAD)
    halves = [
        contrastive.packed_train_dataset(
            plan, shape, BatchLayout(1, 8, 4 * p, 4 * p + 4, 2).with_rows(shape.rows), PAD
        )
        for p in range(2)
    ]
    for b in range(10):
        for k, v in whole[b].items():
            np.testing.assert_array_equal(np.concatenate([h[b][k] for h in halves], 1), v)


def test_packed_evaluation_groups_every_example_once():
    data = _rows(n=21)
    plan = contrastive.PackedPlan(data, 8, 0, 2 * SEQ)
    groups = contrastive.packed_eval_groups(plan)
    assert [sorted(e for row in g for e in row) for g in groups] == [
        list(range(0, 8)),
        list(range(8, 16)),
        list(range(16, 21)),
    ]
    assert len(contrastive.packed_eval_groups(plan, max_batches=2)) == 2


def _step(model_cfg, task, batch, mesh_cfg):
    """Loss, accuracy and updated parameters of one train step from a fixed initial state."""
    mesh = sharding.make_mesh(mesh_cfg)
    tcfg = config_lib.base_config().train
    tcfg.update(warmup_steps=0, warmup_ratio=0.0, learning_rate=1e-3)  # step 0 moves weights
    tx, schedule = optim.make_optimizer(tcfg, 10)
    with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.LOGICAL_RULES):
        init = steps.make_init_fn(model_cfg, "embedding", tx, mesh, 0)
        train, _, _ = steps.jit_steps(model_cfg, task, tx, schedule, mesh, 0)
        rows = batch["input_ids"].shape[1]
        state0 = init()
        before = jax.device_get(state0["params"])
        state, metrics = train(state0, sharding.to_global(batch, mesh, rows))
        params = jax.device_get(state["params"])
    return jax.device_get(metrics), params, before


@pytest.mark.parametrize("supervised", [True, False])
def test_a_packed_step_computes_the_unpacked_step(tiny_model_cfg, supervised):
    """Dropout off: the same loss, accuracy and updated parameters (1e-5), on 8 devices."""
    model_cfg = dataclasses.replace(
        tiny_model_cfg, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    data = _rows(n=16, supervised=supervised)
    layout = BatchLayout(accum=1, micro=16, start=0, stop=16, shards=8)
    unpacked, _ = contrastive.train_dataset(data, layout, seed=1)
    plan, shape, _ = _packed_dataset(data, layout, batches=1, seed=1)
    packed = contrastive.packed_train_dataset(plan, shape, layout.with_rows(shape.rows), PAD)
    mesh = {"data": 8, "fsdp": 1, "tensor": 1}
    task = Contrastive(seq_len=SEQ, supervised=supervised)
    m0, p0, p_init = _step(model_cfg, task, unpacked[0], mesh)
    m1, p1, _ = _step(model_cfg, dataclasses.replace(task, packing=True), packed[0], mesh)
    np.testing.assert_allclose(m1["loss"], m0["loss"], rtol=1e-5)
    np.testing.assert_allclose(m1["contrastive_accuracy"], m0["contrastive_accuracy"])
    moved = 0.0
    for a, b, init in zip(*map(jax.tree.leaves, (p0, p1, p_init)), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
        moved = max(moved, float(np.abs(a - init).max()))
    assert moved > 1e-4, "the step updated the parameters"
