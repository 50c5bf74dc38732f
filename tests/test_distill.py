"""Knowledge distillation: the loss, a student built from teacher layers, both tasks."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import transformers
from flax import nnx
from helpers import assert_golden, scores, train_cfg
from test_classify import tiny_classifier
from test_train import tiny_config

from ptft_jax import config as config_lib
from ptft_jax import losses, optim, sharding, steps, weights, workdir
from ptft_jax.data import augment
from ptft_jax.export import export
from ptft_jax.steps import build_model
from ptft_jax.tasks.classification import Classification
from ptft_jax.tasks.distill import Distill
from ptft_jax.train import run


def test_distill_loss_is_kl_at_temperature_plus_hard_loss():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(6, 3)) * 2, rng.normal(size=(6, 3)) * 2
    labels, w = rng.integers(0, 3, 6), np.array([1, 1, 1, 1, 0, 1], np.float32)
    hard = losses.classification_sums(jnp.asarray(s), labels, w)
    T, alpha = 3.0, 0.3

    def softmax(x):
        e = np.exp(x - x.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    p, q = softmax(t / T), softmax(s / T)
    kl = (p * (np.log(p) - np.log(q))).sum(-1)
    out = losses.distill_sums(jnp.asarray(s), jnp.asarray(t), hard, w, alpha, T)
    np.testing.assert_allclose(out["kd_loss_sum"], T**2 * (kl * w).sum(), rtol=1e-5)
    expected = alpha * T**2 * (kl * w).sum() + (1 - alpha) * float(hard["loss_sum"])
    np.testing.assert_allclose(out["loss_sum"], expected, rtol=1e-5)
    assert out["correct_sum"] == hard["correct_sum"]
    same = losses.distill_sums(jnp.asarray(s), jnp.asarray(s), hard, w, 1.0, T)
    assert abs(float(same["loss_sum"])) < 1e-5, "a student equal to its teacher has no soft loss"
    # The teacher gets no gradient through the loss.
    g = jax.grad(lambda t_: losses.distill_sums(jnp.asarray(s), t_, hard, w, 1.0, T)["loss_sum"])
    assert not np.any(np.asarray(g(jnp.asarray(t))))


def _teacher(tmp_path):
    w = tmp_path / "teacher"
    c = tiny_classifier(epochs=1)
    c.model.num_hidden_layers = 3
    c.data.length_buckets = 1  # one compiled shape: these tests are about the loss, not padding
    c.data.packing = False  # one example a row: training without packing stays covered
    run(c, w)
    return w


def _student(teacher, **train):
    c = tiny_classifier(**{"epochs": 0, "steps": 4, "log_every": 2, **train})
    c.task = "distill"
    c.train.teacher = str(teacher)
    return c


@pytest.mark.slow
def test_student_from_teacher_layers_distils_and_exports(tmp_path):
    teacher = _teacher(tmp_path)
    # Step 0 (no training): the student is the teacher's embeddings, layers 0 and 2, heads.
    c = _student(teacher, steps=0, student_layers_from_teacher=(0, 2))
    c.model.update(hidden_size=8, vocab_size=8)  # the teacher's shape wins
    run(c, tmp_path / "s0")
    t, s = workdir.load(teacher), workdir.load(tmp_path / "s0")
    assert s.model_cfg.num_hidden_layers == 2 and s.model_cfg.hidden_size == 32
    assert s.tokenizer.get_vocab() == t.tokenizer.get_vocab()
    for mine, theirs in ((0, 0), (1, 2)):
        a = jax.tree.leaves(jax.device_get(s.params["bert"]["encoder"]["layer"][mine]))
        b = jax.tree.leaves(jax.device_get(t.params["bert"]["encoder"]["layer"][theirs]))
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y)
    for part in ("classifier",):
        for x, y in zip(
            jax.tree.leaves(jax.device_get(s.params[part])),
            jax.tree.leaves(jax.device_get(t.params[part])),
            strict=True,
        ):
            np.testing.assert_array_equal(x, y)

    # Training (with a transfer set): both loss terms are logged; it exports as a classifier.
    w = tmp_path / "student"
    summary = run(_student(teacher, student_layers_from_teacher=(0, 2), distill_augment=2), w)
    rows = [json.loads(x) for x in (w / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert train_rows and all(np.isfinite(r["kd_loss"]) and r["kd_loss"] > 0 for r in train_rows)
    alpha = 0.5
    for r in train_rows:  # loss = alpha * kd + (1 - alpha) * hard, both per example
        assert r["loss"] == pytest.approx(alpha * r["kd_loss"] + (1 - alpha) * r["hard_loss"])
    saved = json.loads((w / "config.json").read_text())
    assert saved["train"]["distill_task"] == "classification"
    export(str(w), str(tmp_path / "hf"))
    hf = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "hf")
    assert hf.config.num_hidden_layers == 2
    # Four steps leave the student at chance (it predicts the majority class of the test
    # split), so its test result is checked against the value this run gives.
    assert_golden("distill_student_test.json", scores(summary), approx=("loss",))


def test_transfer_set_is_phrases_and_word_dropout():
    texts = ["a gripping , beautiful film about grief", "dull", "not bad at all"]
    extra, source = augment.transfer_set(texts, 4, seed=3)
    assert list(source) == [0] * 4 + [2] * 4, "a one-word text has no variants"
    again, _ = augment.transfer_set(texts, 4, seed=3)
    assert extra == again and extra != augment.transfer_set(texts, 4, seed=4)[0]
    for j, (text, i) in enumerate(zip(extra, source, strict=True)):
        words, mine = texts[i].split(), text.split()
        assert 1 <= len(mine) < len(words), (text, texts[i])
        if j % 2 == 0:  # a phrase: contiguous words of the text
            assert any(words[k : k + len(mine)] == mine for k in range(len(words)))
        else:  # words dropped, order kept
            it = iter(words)
            assert all(w in it for w in mine)


def test_transfer_rows_get_the_soft_loss_only(tiny_model_cfg):
    """Rows of label weight 0 add to the teacher's (soft) term, never to the hard one."""
    cfg = dataclasses.replace(tiny_model_cfg, num_labels=2, add_pooling_layer=True)
    cfg = dataclasses.replace(cfg, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    rng = np.random.default_rng(1)
    batch = {
        "input_ids": rng.integers(5, 96, (6, 8)).astype(np.int32),
        "attention_mask": np.ones((6, 8), np.int32),
        "token_type_ids": np.zeros((6, 8), np.int32),
        "labels": rng.integers(0, 2, 6).astype(np.int32),
        "weights": np.ones(6, np.float32),
        "label_weights": np.array([1, 1, 0, 1, 0, 0], np.float32),  # 0: transfer rows
    }
    graphdef, state = nnx.split(build_model(cfg, "classification", 0))
    t_graphdef, t_params = nnx.split(build_model(cfg, "classification", 1))
    task = Distill(Classification(), 0.5, 2.0, teacher=t_graphdef)
    out = task.loss_sums(nnx.merge(graphdef, state), batch, None, t_params)
    logits = nnx.merge(graphdef, state)(batch["input_ids"], batch["attention_mask"])
    t_logits = nnx.merge(t_graphdef, t_params)(batch["input_ids"], batch["attention_mask"])
    labelled = losses.classification_sums(logits, batch["labels"], batch["label_weights"])
    every = losses.classification_sums(logits, batch["labels"], batch["weights"])
    soft = losses.distill_sums(logits, t_logits, every, batch["weights"], 0.5, 2.0)
    np.testing.assert_allclose(out["hard_loss_sum"], labelled["loss_sum"], rtol=1e-5)
    np.testing.assert_allclose(out["kd_loss_sum"], soft["kd_loss_sum"], rtol=1e-5)
    assert float(every["loss_sum"]) > float(labelled["loss_sum"]) + 1e-3


def test_the_teacher_inside_the_step_is_the_teacher(tiny_model_cfg):
    """A student equal to its teacher (no dropout) has zero soft loss in the real train step;
    another student does not; and the teacher's parameters come back untouched."""
    cfg = dataclasses.replace(
        tiny_model_cfg,
        num_labels=3,
        add_pooling_layer=True,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    mesh = sharding.make_mesh({"data": 4, "fsdp": 2, "tensor": 1})
    tx, schedule = optim.make_optimizer(train_cfg(), 10)
    rng = np.random.default_rng(0)
    batch = {
        "input_ids": rng.integers(5, 96, (1, 8, 10)).astype(np.int32),
        "attention_mask": np.ones((1, 8, 10), np.int32),
        "token_type_ids": np.zeros((1, 8, 10), np.int32),
        "labels": rng.integers(0, 3, (1, 8)).astype(np.int32),
        "weights": np.ones((1, 8), np.float32),
        "label_weights": np.ones((1, 8), np.float32),
    }
    with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.LOGICAL_RULES):
        teacher = steps.make_init_fn(cfg, "classification", tx, mesh, 0)()["params"]
        # A confident teacher: scaled-up classifier, so its distribution is far from uniform.
        teacher["classifier"]["kernel"] = teacher["classifier"]["kernel"] * 200.0
        graphdef, _ = steps.abstract_model(cfg, "classification")
        task = Distill(Classification(num_labels=3, seq_len=10), 1.0, 2.0, teacher=graphdef)
        before = jax.device_get(teacher)
        train, _, _ = steps.jit_steps(cfg, task, tx, schedule, mesh, 0, teacher)
        gb = sharding.to_global(batch, mesh, 8)
        kd = {}
        for seed in (0, 1):
            state = steps.make_init_fn(cfg, "classification", tx, mesh, seed)()
            if seed == 0:
                state["params"] = jax.tree.map(jnp.copy, teacher)
            _, m = train(state, gb, teacher)
            kd[seed] = float(m["kd_loss"])
    assert abs(kd[0]) < 1e-5 and kd[1] > 0.1, kd
    for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(jax.device_get(teacher)), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_mlm_distillation_runs(tmp_path):
    teacher = tmp_path / "mlm_teacher"
    run(tiny_config(steps=3, eval_every=3, checkpoint_every=3), teacher)
    c = tiny_config(steps=3, eval_every=3, checkpoint_every=3)
    c.task = "distill"
    c.train.update(teacher=str(teacher), student_layers_from_teacher=(1,))
    summary = run(c, tmp_path / "student")
    assert np.isfinite(summary["eval_loss"])
    assert workdir.load(tmp_path / "student").model_cfg.num_hidden_layers == 1
    rows = [
        json.loads(x) for x in (tmp_path / "student" / "metrics.jsonl").read_text().split("\n")[:-1]
    ]
    assert any("kd_loss" in r for r in rows)


def test_alpha_zero_does_not_run_the_teacher(tiny_model_cfg):
    def unread():
        raise AssertionError("the teacher's weights were read")

    teacher = weights.Pretrained("classification", tiny_model_cfg, {}, None, unread)
    c = _student("unused", distill_alpha=0.0)
    assert weights.load_teacher(teacher, c, None) is None


def test_distill_config_errors(tmp_path):
    c = _student(tmp_path / "nowhere")
    c.train.teacher = ""
    with pytest.raises(config_lib.ConfigError, match="needs a teacher"):
        run(c, tmp_path / "w")
    c.train.teacher = str(tmp_path / "nowhere")
    with pytest.raises(config_lib.ConfigError, match="neither a finished workdir"):
        run(c, tmp_path / "w")
    assert not (tmp_path / "w").exists()
    c = _student(tmp_path / "nowhere", distill_augment=2, distill_alpha=0.0)
    with pytest.raises(config_lib.ConfigError, match="distill_alpha > 0"):
        run(c, tmp_path / "w")
