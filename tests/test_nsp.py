"""Next-sentence prediction: the pair builder, and an MLM+NSP run end to end."""

import json

import numpy as np
import pytest
import transformers
from test_train import tiny_config

from ptft_jax.data.nsp import make_pairs, split_sentences
from ptft_jax.evaluate import evaluate
from ptft_jax.export import export
from ptft_jax.train import run

IDS = {"cls": 2, "sep": 3, "pad": 0}


def _docs(n=300, seed=0):
    """Token 10000 * doc + 100 * sentence + 10 + position: every token says where it came
    from (and none is a special id)."""
    rng = np.random.default_rng(seed)
    return [
        [
            10000 * d + 100 * s + 10 + np.arange(rng.integers(3, 12), dtype=np.int32)
            for s in range(rng.integers(1, 8))
        ]
        for d in range(n)
    ]


def test_pairs_are_true_continuations_or_another_document():
    pairs = make_pairs(_docs(), seq_len=512, ids=IDS, seed=0)  # long enough: nothing truncated
    assert 0.45 < pairs.labels.mean() < 0.55, "balanced labels"
    continuations = 0
    for row, n, types, label in zip(pairs.ids, pairs.lengths, pairs.types, pairs.labels, strict=1):
        tokens = row[:n]
        assert tokens[0] == IDS["cls"] and tokens[-1] == IDS["sep"] and (row[n:] == 0).all()
        sep = int(np.flatnonzero(tokens == IDS["sep"])[0])
        a, b = tokens[1:sep], tokens[sep + 1 : -1]
        assert (types[: sep + 1] == 0).all() and (types[sep + 1 : n] == 1).all()
        same_doc = set(a // 10000) == set(b // 10000) and len(set(a // 10000)) == 1
        if label == 0:
            # B starts exactly where A stopped: the next token of that sentence, or the first
            # of the next sentence.
            last, first = int(a[-1]), int(b[0])
            assert same_doc and (first == last + 1 or first % 100 == 10 and first > last)
            continuations += 1
        else:
            assert set(b // 10000).isdisjoint(set(a // 10000))
    assert continuations > 100
    again = make_pairs(_docs(), seq_len=512, ids=IDS, seed=0)
    np.testing.assert_array_equal(again.ids, pairs.ids)


def test_pairs_fit_the_sequence_length():
    pairs = make_pairs(_docs(), seq_len=16, ids=IDS, seed=1)
    assert pairs.ids.shape[1] == 16 and pairs.lengths.max() <= 16
    assert (pairs.lengths >= 5).all()  # [CLS] a [SEP] b [SEP] at least


def test_sentences():
    text = "It rained. Did it? Yes!\nA new line without a stop\n\nDr. Who is 3.5 m tall."
    assert split_sentences(text) == [
        "It rained.",
        "Did it?",
        "Yes!",
        "A new line without a stop",
        "Dr.",
        "Who is 3.5 m tall.",
    ]


@pytest.mark.slow
def test_mlm_and_nsp_run_and_export_as_bert_for_pretraining(tmp_path):
    cfg = tiny_config(steps=4, checkpoint_every=4, eval_every=4, log_every=2, eval_batches=0)
    cfg.train.objectives = ("mlm", "nsp")
    w = tmp_path / "w"
    summary = run(cfg, w)
    assert summary["step"] == 4
    rows = [json.loads(line) for line in (w / "metrics.jsonl").read_text().splitlines()]
    final = [r for r in rows if r["split"] == "validation"][-1]
    assert {"nsp_accuracy", "nsp_loss", "mlm_loss", "mlm_accuracy"} <= final.keys()
    assert final["loss"] == pytest.approx(final["mlm_loss"] + final["nsp_loss"])
    assert 0.3 < final["nsp_accuracy"] < 0.7 and 0.6 < final["nsp_loss"] < 0.8  # untrained
    assert "nsp_accuracy" in [r for r in rows if r["split"] == "train"][-1]
    # evaluate scores the same held-out pairs as training did (its NSP head reads their labels)
    again = evaluate(str(w))
    for key in ("loss", "mlm_accuracy", "nsp_accuracy", "nsp_loss"):
        assert again[key] == pytest.approx(final[key], rel=1e-5), key
    export(str(w), str(tmp_path / "hf"))
    model = transformers.AutoModelForPreTraining.from_pretrained(tmp_path / "hf")
    assert type(model).__name__ == "BertForPreTraining"
