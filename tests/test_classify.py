"""Classification fine-tuning: buckets, labels, subsampling, and an end-to-end run."""

import itertools
import json
import os

import jax
import numpy as np
import pytest
import torch
import transformers
from helpers import assert_golden, scores
from test_train import tiny_config

from ptft_jax import config as config_lib
from ptft_jax import workdir
from ptft_jax.data import classify
from ptft_jax.data.pipeline import BatchLayout
from ptft_jax.data.sources import DataError
from ptft_jax.evaluate import evaluate
from ptft_jax.export import export
from ptft_jax.predict import predict as predict_classify
from ptft_jax.train import run


def test_buckets_minimise_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 80, 500)  # some longer than max_len: truncated, last bucket
    clipped = np.minimum(lengths, 64)

    def padded(sizes):
        return int(np.sum(np.asarray(sizes)[classify.bucket_of(clipped, sizes)]))

    for count in (1, 2, 3, 5):
        sizes = classify.buckets(lengths, 64, count, slack=0.0)
        assert len(sizes) <= count and sizes[-1] == 64 and list(sizes) == sorted(set(sizes))
        assert all(s % 8 == 0 for s in sizes)
        # Exhaustive check against every choice of the same number of multiples of 8.
        others = ((*c, 64) for c in itertools.combinations(range(8, 64, 8), min(count, 8) - 1))
        assert padded(sizes) == min(padded(o) for o in others)
    assert classify.buckets(lengths, 64, 1) == (64,)
    assert classify.buckets(np.array([5, 9, 30]), 30, 8, slack=0.0) == (8, 16, 30)
    # Nearly all at the maximum (long documents): extra buckets would save little padding.
    long = np.concatenate([np.full(200, 256), rng.integers(180, 256, 10)])
    assert classify.buckets(long, 256, 5) == (256,)
    assert len(classify.buckets(long, 256, 5, slack=0.0)) > 1


def test_buckets_and_epoch_plans():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 65, 203)
    sizes = classify.buckets(lengths, 64, 4)
    plan = classify.epoch_plan(lengths, sizes, 16, seed=1, epoch=0)
    assert len(plan) == classify.steps_per_epoch(lengths, sizes, 16)
    seen = np.concatenate([idx[idx >= 0] for _, idx in plan])
    assert sorted(seen.tolist()) == list(range(203)), "every example exactly once per epoch"
    for size, idx in plan:  # each batch holds only examples that fit its bucket
        real = idx[idx >= 0]
        assert (lengths[real] <= size).all() and size in sizes
    again = classify.epoch_plan(lengths, sizes, 16, seed=1, epoch=0)
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(plan, again, strict=True))
    other = classify.epoch_plan(lengths, sizes, 16, seed=1, epoch=1)
    assert any(not np.array_equal(a[1], b[1]) for a, b in zip(plan, other, strict=True))


def test_padding_rows_have_no_weight():
    ex = classify.Examples(
        ids=[np.array([2, 7, 3]), np.array([2, 8, 9, 3])],
        type_ids=[np.zeros(3, np.int32), np.zeros(4, np.int32)],
        labels=np.array([1, 0], np.int32),
    )
    b = classify.make_batch(ex, np.array([1, -1, 0]), 8, pad_id=0)
    assert b["weights"].tolist() == [1.0, 0.0, 1.0]
    assert b["attention_mask"].sum(1).tolist() == [4, 1, 3]
    assert b["labels"].tolist() == [0, 0, 1]


def test_labels_are_checked():
    recs = [{"text": "a", "label": 0}, {"text": "b", "label": 3}]
    with pytest.raises(DataError, match="outside 0..1"):
        classify.encode_labels(recs, "label", 2, None, "train")
    names = classify.label_names([{"label": "pos"}, {"label": "neg"}], "label", 2)
    assert names == ["neg", "pos"]
    with pytest.raises(DataError, match="never seen in training"):
        classify.encode_labels([{"label": "meh"}], "label", 2, names, "test")
    with pytest.raises(DataError, match="num_labels=3"):
        classify.label_names([{"label": x} for x in "abc"], "label", 2)


def test_stratified_subsample():
    recs = [{"text": str(i), "label": int(i % 10 == 0)} for i in range(1000)]  # 10% positives
    sub = classify.subsample(recs, "label", 100, seed=0)
    assert len(sub) == 100 and sum(r["label"] for r in sub) == 10
    assert classify.subsample(recs, "label", 100, seed=0) == sub
    assert classify.subsample(recs, "label", 100, seed=1) != sub


def tiny_classifier(**train):
    c = config_lib.base_config()
    c.task = "classification"
    c.model.update(
        vocab_size=512,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=2,
    )
    c.data.update(source="builtin:mr", max_seq_length=32, max_train_examples=160)
    c.train.update(
        epochs=2,
        batch_size=16,
        learning_rate=1e-3,
        warmup_ratio=0.1,
        log_every=5,
        eval_every=1000,
        checkpoint_every=1000,
        metric_for_best="accuracy",
    )
    c.train.update(train)
    c.mesh.update(data=4, fsdp=2, tensor=1)
    return c


@pytest.mark.slow
def test_finetune_evaluate_predict_export(tmp_path):
    w = tmp_path / "w"
    summary = run(tiny_classifier(), w)
    rows = [json.loads(x) for x in (w / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["split"] == "validation"]
    spe = summary["step"] // 2
    assert [r["step"] for r in evals] == [0, spe, 2 * spe], "evaluated at each epoch end"
    assert {"accuracy", "precision", "recall", "f1", "mcc", "loss"} <= evals[-1].keys()
    # Packed rows leave some padding: the share of real tokens says how much.
    shares = [r["real_token_share"] for r in rows if r["split"] == "train"]
    assert 0.3 < summary["real_token_share"] < 1 and all(0.3 < x < 1 for x in shares)
    test = json.loads((w / "eval_test.json").read_text())
    assert len(test["confusion_matrix"]) == 2 and sum(map(sum, test["confusion_matrix"])) > 1000
    assert_golden("classify_test.json", scores(test), approx=("loss",))
    assert (w / "best").is_dir()

    # evaluate uses the best checkpoint, so it reproduces eval_test.json exactly.
    best = max(evals[1:], key=lambda r: r["accuracy"])  # the first of equals wins, as in training
    again = evaluate(str(w), "test")
    assert again["step"] == test["step"] == best["step"]
    assert again["accuracy"] == pytest.approx(test["accuracy"], abs=1e-9)
    assert again["confusion_matrix"] == test["confusion_matrix"]
    assert (w / "confusion_test.png").read_bytes()[:4] == b"\x89PNG"

    # predict, then the transformers export gives the same probabilities.
    loaded = workdir.load(w)
    texts = ["a gripping, beautiful film", "dull and far too long"]
    ours = predict_classify(loaded, texts)
    assert set(ours[0]["probs"]) == {"negative", "positive"}  # builtin:mr's label names
    export(str(w), str(tmp_path / "hf"))
    model = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "hf").eval()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    enc = tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model(**enc).logits, -1).numpy()
    for row, p in zip(ours, probs, strict=True):
        np.testing.assert_allclose(
            [row["probs"]["negative"], row["probs"]["positive"]], p, atol=1e-5
        )
    assert model.config.id2label == {0: "negative", 1: "positive"}
    card = (tmp_path / "hf" / "README.md").read_text()  # the model card
    assert "`BertForSequenceClassification` trained with ptft_jax" in card
    assert "data: `builtin:mr`" in card and "## Evaluation (test split" in card
    assert f"| accuracy | {again['accuracy']:.4f} |" in card
    umask = os.umask(0)
    os.umask(umask)
    for f in (tmp_path / "hf").iterdir():  # the usual mode, as for any file the user writes
        assert f.stat().st_mode & 0o777 == 0o666 & ~umask, f.name


@pytest.mark.slow
def test_init_from_an_mlm_workdir(tmp_path):
    """Fine-tuning starts from an MLM workdir's encoder and tokenizer; its MLM head is dropped."""
    mlm = tmp_path / "mlm"
    run(tiny_config(steps=3, eval_every=3, checkpoint_every=3, eval_batches=0), mlm)
    c = tiny_classifier(epochs=0, steps=0)
    c.init_from = str(mlm)
    c.model.update(vocab_size=8, hidden_size=8)  # the workdir's shape wins over the config's
    run(c, tmp_path / "cls")
    source, tuned = workdir.load(mlm), workdir.load(tmp_path / "cls")
    assert tuned.model_cfg.hidden_size == 32 and tuned.model_cfg.vocab_size == 1024
    assert tuned.tokenizer.get_vocab() == source.tokenizer.get_vocab()
    assert "cls" in source.params and "cls" not in tuned.params and "classifier" in tuned.params
    encoder = jax.tree.leaves(jax.device_get(source.params["bert"]))
    assert len(encoder) == len(jax.tree.leaves(tuned.params["bert"]["embeddings"])) + len(
        jax.tree.leaves(tuned.params["bert"]["encoder"])
    )
    for a, b in zip(
        encoder,
        jax.tree.leaves(
            jax.device_get({k: tuned.params["bert"][k] for k in ("embeddings", "encoder")})
        ),
        strict=True,
    ):
        np.testing.assert_array_equal(a, b)


def test_init_from_must_be_a_known_kind(tmp_path):
    c = tiny_classifier()
    c.init_from = str(tmp_path)  # a folder, but not a workdir
    with pytest.raises(config_lib.ConfigError, match="ptft_jax workdir"):
        config_lib.validate(c)


def test_layout_rows_cover_the_global_batch():
    layout = BatchLayout(accum=2, micro=4, start=0, stop=4)
    assert layout.rows().tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
