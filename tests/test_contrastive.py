"""Contrastive pretraining (SimCSE): global in-batch negatives, the probe, an end-to-end run."""

import json

import jax
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from helpers import assert_golden
from test_train import tiny_config

from ptft_jax import config as config_lib
from ptft_jax import optim, sharding, steps, workdir
from ptft_jax.data import contrastive
from ptft_jax.data.pipeline import BatchLayout
from ptft_jax.export import export
from ptft_jax.tasks.contrastive import Contrastive, logistic_regression
from ptft_jax.train import run


def _batch(rows=16, length=12, seed=0, vocab=96):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(4, length + 1, rows)
    mask = (np.arange(length) < lengths[:, None]).astype(np.int32)
    ids = rng.integers(5, vocab, (rows, length)).astype(np.int32) * mask
    return {
        "input_ids": ids[None],
        "attention_mask": mask[None],
        "weights": np.ones((1, rows), np.float32),
    }


def _first_losses(model_cfg, batches, mesh_cfg, devices=None) -> list[float]:
    """The loss of one real contrastive train step from the same initial state, per batch
    (all of one shape: one compilation)."""
    mesh = sharding.make_mesh(mesh_cfg, devices)
    tcfg = config_lib.base_config().train
    tx, schedule = optim.make_optimizer(tcfg, 10)
    out = []
    with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.LOGICAL_RULES):
        init = steps.make_init_fn(model_cfg, "embedding", tx, mesh, 0)
        task = Contrastive(seq_len=batches[0]["input_ids"].shape[-1])
        train, _, _ = steps.jit_steps(model_cfg, task, tx, schedule, mesh, 0)
        for batch in batches:
            rows = batch["input_ids"].shape[1]
            _, metrics = train(init(), sharding.to_global(batch, mesh, rows))
            out.append(float(metrics["loss"]))
    return out


def _first_loss(model_cfg, batch, mesh_cfg, devices=None) -> float:
    return _first_losses(model_cfg, [batch], mesh_cfg, devices)[0]


def test_negatives_come_from_every_device(tiny_model_cfg):
    """On 8 devices (2 rows each) the loss equals the one-device loss over all 16 rows, and
    differs from the mean of the 8 losses each device's rows alone would give."""
    batch = _batch()
    one = {"data": 1, "fsdp": 1, "tensor": 1}
    sharded = _first_loss(tiny_model_cfg, batch, {"data": 8, "fsdp": 1, "tensor": 1})
    whole = _first_loss(tiny_model_cfg, batch, one, jax.devices()[:1])
    np.testing.assert_allclose(sharded, whole, rtol=1e-5)
    shards = [{k: v[:, 2 * d : 2 * d + 2] for k, v in batch.items()} for d in range(8)]
    local = np.mean(_first_losses(tiny_model_cfg, shards, one, jax.devices()[:1]))
    # 16 candidates per row versus 2: at initialisation about log 16 versus log 2.
    assert sharded > local + 1.0, (sharded, local)
    fsdp = _first_loss(tiny_model_cfg, batch, {"data": 2, "fsdp": 4, "tensor": 1})
    np.testing.assert_allclose(fsdp, whole, rtol=1e-5)


def test_padding_rows_are_neither_anchors_nor_negatives(tiny_model_cfg):
    batch = _batch(rows=8)
    padded = {k: np.concatenate([v, v[:, :8]], axis=1) for k, v in batch.items()}
    padded["weights"][:, 8:] = 0
    one = {"data": 1, "fsdp": 1, "tensor": 1}
    a = _first_loss(tiny_model_cfg, batch, one, jax.devices()[:1])
    b = _first_loss(tiny_model_cfg, padded, one, jax.devices()[:1])
    np.testing.assert_allclose(a, b, rtol=1e-5)


def test_logistic_regression_probe():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5))
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(int)
    assert logistic_regression(x[:300], y[:300], x[300:], y[300:]) > 0.95
    noise = rng.integers(0, 2, 400)
    assert abs(logistic_regression(x[:300], noise[:300], x[300:], noise[300:]) - 0.5) < 0.12


def test_sentence_rows():
    layout = BatchLayout(accum=1, micro=4, start=0, stop=4)
    data = contrastive.Rows(
        ids=np.arange(10)[:, None] * np.ones((1, 3), int), mask=np.ones((10, 3))
    )
    ds, spe = contrastive.train_dataset(data, layout, seed=1)
    assert spe == 2
    seen = np.concatenate([ds[b]["input_ids"][0, :, 0] for b in range(2)])
    assert len(set(seen.tolist())) == 8, "no row twice within an epoch"
    np.testing.assert_array_equal(
        ds[3]["input_ids"], contrastive.train_dataset(data, layout, 1)[0][3]["input_ids"]
    )
    batches = list(contrastive.eval_batches(data, layout))
    assert len(batches) == 3 and batches[-1]["weights"].tolist() == [[1, 1, 0, 0]]
    assert contrastive.sentences(["One two three four. Tiny. Five six seven eight!"]) == [
        "One two three four.",
        "Five six seven eight!",
    ]


@pytest.mark.slow
def test_unsupervised_simcse_trains_probes_and_exports(tmp_path):
    c = tiny_config(steps=12, log_every=4, eval_every=12, checkpoint_every=12)
    c.task = "contrastive"
    c.data.max_seq_length = 32
    c.train.update(probe_examples=120, batch_size=32)
    w = tmp_path / "w"
    run(c, w)
    rows = [json.loads(x) for x in (w / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["split"] == "validation"]
    assert [r["step"] for r in val] == [0, 12]
    assert val[-1]["loss"] < val[0]["loss"]
    train = [r for r in rows if r["split"] == "train"]
    assert train[-1]["loss"] < train[0]["loss"]
    # Packed by default: both views of a sentence share a row with other sentences.
    assert all(0.5 < r["real_token_share"] <= 1.0 for r in train)

    # The export is a BertModel whose mean-pooled last hidden state is our embedding.
    export(str(w), str(tmp_path / "hf"))
    hf = transformers.BertModel.from_pretrained(tmp_path / "hf").eval()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    texts = ["the film is a quiet triumph", "a loud and tedious sequel"]
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        h = hf(**enc).last_hidden_state
    m = enc["attention_mask"][..., None].float()
    theirs = ((h * m).sum(1) / m.sum(1)).numpy()
    loaded = workdir.load(w)
    graphdef, _ = steps.abstract_model(loaded.model_cfg, "embedding")
    ours = nnx.merge(graphdef, jax.device_get(loaded.params))(
        enc["input_ids"].numpy(), enc["attention_mask"].numpy()
    )
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=2e-5)
    # The probe (120 test sentences of builtin:mr) is at chance before and after 12 steps that do
    # not train for sentiment, so the validation rows are checked against this run's values.
    keys = ("step", "loss", "contrastive_accuracy", "probe_accuracy")
    got = [{k: r[k] for k in keys} for r in val]
    assert_golden("simcse_validation.json", got, approx=("loss",))


def test_contrastive_needs_whole_batches(tmp_path):
    c = tiny_config(grad_accum_steps=2)
    c.task = "contrastive"
    with pytest.raises(config_lib.ConfigError, match="grad_accum_steps=1"):
        run(c, tmp_path / "w")
