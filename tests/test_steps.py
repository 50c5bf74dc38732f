import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx
from helpers import assert_golden, mlm_batch, mlm_task, run_steps, train_cfg

from ptft_jax.steps import build_model

ONE_DEVICE = {"data": 1, "fsdp": 1, "tensor": 1}


def test_output_shapes(tiny_model_cfg):
    cfg = dataclasses.replace(tiny_model_cfg, add_pooling_layer=True)
    model = build_model(cfg, "mlm", 0)
    b = mlm_batch(cfg)
    ids, mask = b["input_ids"][0], b["attention_mask"][0]
    out = model.bert(ids, mask, return_all_hidden=True)
    assert out["last_hidden_state"].shape == (16, 24, cfg.hidden_size)
    assert len(out["hidden_states"]) == cfg.num_hidden_layers + 1
    assert model(ids, mask, None, b["masked_positions"][0]).shape == (16, 4, cfg.vocab_size)
    assert model(ids, mask).shape == (16, 24, cfg.vocab_size)


def test_one_step_golden_metrics(tiny_model_cfg):
    """Metrics of the first two steps of a fixed tiny run. Did you mean to change behaviour?
    Regenerate with PTFT_UPDATE_GOLDEN=1 only if so."""
    _, history = run_steps(
        tiny_model_cfg, ONE_DEVICE, mlm_batch(tiny_model_cfg), n=2, devices=jax.devices()[:1]
    )
    got = [{k: float(v) for k, v in m.items()} for m in history]
    # mlm_accuracy (a count over a count) and nonfinite compare exactly.
    assert_golden("one_step_metrics.json", got, approx=("loss", "grad_norm", "learning_rate"))


@pytest.fixture(scope="module")
def single_device_run():
    from conftest import TINY

    batch = mlm_batch(TINY)
    return batch, run_steps(TINY, ONE_DEVICE, batch, n=2, devices=jax.devices()[:1])


@pytest.mark.parametrize(
    "mesh_cfg",
    [
        {"data": 4, "fsdp": 2, "tensor": 1},
        {"data": 1, "fsdp": 4, "tensor": 2},
        {"data": 2, "fsdp": 2, "tensor": 2},
    ],
)
def test_sharded_step_equals_single_device(tiny_model_cfg, mesh_cfg, single_device_run):
    batch, (p1, m1) = single_device_run
    p8, m8 = run_steps(tiny_model_cfg, mesh_cfg, batch, n=2)
    for a, b in zip(m1, m8, strict=True):
        for k in a:
            np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-5, err_msg=k)
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), p1, p8))
    assert max(diffs) < 1e-5


def test_grad_accumulation_equals_big_batch(tiny_model_cfg):
    # Without dropout the microbatch split is the only difference.
    cfg = dataclasses.replace(
        tiny_model_cfg, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0
    )
    big = mlm_batch(cfg, accum=1, rows=16)
    split = {k: v.reshape(2, 8, *v.shape[2:]) for k, v in big.items()}
    mesh = {"data": 2, "fsdp": 2, "tensor": 2}
    p1, m1 = run_steps(cfg, mesh, big, n=2)
    p2, m2 = run_steps(cfg, mesh, split, n=2)
    for k in m1[0]:
        np.testing.assert_allclose(m1[-1][k], m2[-1][k], rtol=1e-5, atol=1e-6, err_msg=k)
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), p1, p2))
    assert max(diffs) < 1e-5


@pytest.mark.parametrize("policy", ["full", "dots"])
def test_remat_changes_memory_not_results(tiny_model_cfg, policy):
    """Recomputing layers in the backward pass gives the same step, dropout included (its
    masks are a pure function of key and index, so the recomputation draws the same ones)."""
    batch = mlm_batch(tiny_model_cfg)
    mesh = {"data": 2, "fsdp": 2, "tensor": 2}
    p1, m1 = run_steps(tiny_model_cfg, mesh, batch, n=2)
    remat_cfg = dataclasses.replace(tiny_model_cfg, remat=True, remat_policy=policy)
    p2, m2 = run_steps(remat_cfg, mesh, batch, n=2)
    for k in m1[0]:
        np.testing.assert_allclose(m1[-1][k], m2[-1][k], rtol=1e-5, atol=1e-6, err_msg=k)
    diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.abs(a - b).max()), p1, p2))
    assert max(diffs) < 1e-6


def test_remat_recomputes_the_layers(tiny_model_cfg):
    """The compiler's own count: with remat the backward pass runs the layers' forward again;
    keeping the dense outputs ("dots") leaves only the cheap rest to rerun."""
    from ptft_jax import optim, sharding, steps

    batch = mlm_batch(tiny_model_cfg, rows=16, length=64)
    mesh = sharding.make_mesh({"data": 8, "fsdp": 1, "tensor": 1})
    tx, schedule = optim.make_optimizer(train_cfg(), 10)
    flops = []
    for remat, policy in ((False, "full"), (True, "full"), (True, "dots")):
        model_cfg = dataclasses.replace(tiny_model_cfg, remat=remat, remat_policy=policy)
        with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.LOGICAL_RULES):
            train, _, _ = steps.jit_steps(model_cfg, mlm_task(batch), tx, schedule, mesh, 0)
            state = jax.eval_shape(steps.make_init_fn(model_cfg, "mlm", tx, mesh, 0))
            shapes = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in batch.items()}
            cost = train.lower(state, shapes).compile().cost_analysis()
        flops.append((cost[0] if isinstance(cost, list) else cost)["flops"])
    assert flops[1] > 1.1 * flops[0], flops
    assert flops[0] < flops[2] < flops[1], flops  # "dots" reruns attention, not the dense


def test_no_weight_decay_on_bias_and_layernorm(tiny_model_cfg):
    from ptft_jax.optim import decay_mask, path_str

    params = nnx.to_pure_dict(nnx.state(build_model(tiny_model_cfg, "mlm", 0)))
    flat = jax.tree_util.tree_flatten_with_path(decay_mask(params))[0]
    decayed = {path_str(p) for p, v in flat if v}
    assert "bert/encoder/layer/0/attention/self/query/kernel" in decayed
    assert "bert/embeddings/word_embeddings/embedding" in decayed
    assert not any(p.endswith("bias") or "LayerNorm" in p for p in decayed)


FAMILY_NAMES = {  # family -> (its word table, its layer 0 and 1 prefixes)
    "bert": ("bert/embeddings/word_embeddings/embedding", "bert/encoder/layer/{}/"),
    "roberta": ("roberta/embeddings/word_embeddings/embedding", "roberta/encoder/layer/{}/"),
    "gpt2": ("transformer/wte/embedding", "transformer/h/{}/"),
    "modernbert": ("model/embeddings/tok_embeddings/embedding", "model/layers/{}/"),
}


@pytest.mark.parametrize("family", list(FAMILY_NAMES))
def test_freezing_and_weight_decay_follow_each_familys_names(family):
    """freeze_embeddings and freeze_layers freeze that family's embeddings and lowest layers
    (and nothing else); no family's norms or biases are decayed, its matrices are."""
    from ptft_jax import models
    from ptft_jax.optim import decay_mask, path_str, trainable_mask

    shape = dict(vocab_size=64, hidden_size=16, num_hidden_layers=2, num_attention_heads=2)
    cfg = models.get(family).CONFIG(**shape, intermediate_size=32, max_position_embeddings=40)
    head = "causal_lm" if family == "gpt2" else "mlm"
    model = nnx.eval_shape(lambda: models.get(family).build_model(cfg, head, 0))
    params = nnx.to_pure_dict(nnx.state(model))
    tcfg = train_cfg(freeze_embeddings=True, freeze_layers=1)
    flat = jax.tree_util.tree_flatten_with_path(trainable_mask(params, tcfg, family))[0]
    frozen = {path_str(p) for p, trains in flat if not trains}
    table, layer = FAMILY_NAMES[family]
    assert table in frozen
    assert any(p.startswith(layer.format(0)) for p in frozen)
    assert not any(p.startswith(layer.format(1)) for p in frozen)
    embeddings = table.split("/")[0] + "/" + ("w" if family == "gpt2" else "embeddings/")
    assert all(p.startswith((layer.format(0), embeddings)) for p in frozen), frozen
    flat = jax.tree_util.tree_flatten_with_path(decay_mask(params))[0]
    decayed = {path_str(p) for p, v in flat if v}
    assert table in decayed and any(p.endswith("kernel") for p in decayed)
    assert not any(p.endswith(("bias", "scale")) for p in decayed), decayed


def test_learning_rate_schedule():
    from ptft_jax.optim import learning_rate_schedule

    s = learning_rate_schedule(train_cfg(learning_rate=1.0, warmup_steps=4), 12)
    assert [round(float(s(i)), 3) for i in (0, 2, 4, 8, 12)] == [0.0, 0.5, 1.0, 0.5, 0.0]


def test_frozen_parameters_get_no_update_and_no_state(tiny_model_cfg):
    batch = mlm_batch(tiny_model_cfg)
    tcfg = train_cfg(freeze_embeddings=True, freeze_layers=1)
    before, _ = run_steps(tiny_model_cfg, {"data": 2, "fsdp": 2, "tensor": 2}, batch, n=0)
    after, _ = run_steps(tiny_model_cfg, {"data": 2, "fsdp": 2, "tensor": 2}, batch, n=3, tcfg=tcfg)
    emb = "bert", "embeddings", "word_embeddings", "embedding"
    layer0 = "bert", "encoder", "layer", 0, "output", "dense", "kernel"
    layer1 = "bert", "encoder", "layer", 1, "output", "dense", "kernel"

    def get(tree, path):
        for k in path:
            tree = tree[k]
        return np.asarray(tree)

    np.testing.assert_array_equal(get(before, emb), get(after, emb))
    np.testing.assert_array_equal(get(before, layer0), get(after, layer0))
    assert not np.array_equal(get(before, layer1), get(after, layer1))
    # No Adam moments exist for frozen parameters.
    from ptft_jax import optim

    params = jax.tree.map(np.asarray, before)
    tx, _ = optim.make_optimizer(tcfg, 10)
    state_leaves = jax.tree.leaves(jax.eval_shape(tx.init, params))
    mask = jax.tree.leaves(optim.trainable_mask(params, tcfg, "bert"))
    n_trainable = sum(np.size(p) for p, t in zip(jax.tree.leaves(params), mask, strict=True) if t)
    assert 0 < n_trainable < sum(np.size(p) for p in jax.tree.leaves(params))
    assert sum(x.size for x in state_leaves if x.ndim) == 2 * n_trainable  # mu and nu only


def test_nonfinite_update_is_dropped(tiny_model_cfg):
    """A NaN loss leaves parameters and optimizer state as they were, and is reported."""
    batch = mlm_batch(tiny_model_cfg)
    batch["masked_weights"][0, 0, 0] = np.nan
    one = jax.devices()[:1]
    before, _ = run_steps(tiny_model_cfg, ONE_DEVICE, batch, n=0, devices=one)
    after, history = run_steps(tiny_model_cfg, ONE_DEVICE, batch, n=2, devices=one)
    assert [int(m["nonfinite"]) for m in history] == [1, 1]
    for x, y in zip(jax.tree.leaves(before), jax.tree.leaves(after), strict=True):
        np.testing.assert_array_equal(x, y)
