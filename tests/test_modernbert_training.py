"""A ModernBERT trained from scratch through the tasks: MLM on builtin:wiki_en (its loss falls,
its export computes the same logits in transformers on rows longer than the local window), a
classifier fine-tuned from that workdir on builtin:mr (its loss falls), and a distilled
student whose only layer is the teacher's second (local) one."""

import json

import numpy as np
import pytest
import transformers
from helpers import assert_golden, both_logits, scores
from test_classify import tiny_classifier
from test_train import tiny_config

from ptft_jax import workdir
from ptft_jax.export import export
from ptft_jax.models.modernbert_config import GLOBAL, LOCAL
from ptft_jax.train import run

MODERN = dict(family="modernbert", layer_norm_eps=1e-5, local_attention=16)  # 8 each side


def _rows(w, split):
    rows = [json.loads(x) for x in (w / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == split]


@pytest.fixture(scope="module")
def mlm_workdir(tmp_path_factory):
    c = tiny_config()
    c.model.update(MODERN)
    c.data.mlm_probability = 0.3
    w = tmp_path_factory.mktemp("modernbert") / "mlm"
    run(c, w)
    return w


@pytest.mark.slow
def test_mlm_from_scratch_trains_and_exports_with_equal_logits(mlm_workdir, tmp_path):
    evals = _rows(mlm_workdir, "validation")
    assert evals[-1]["loss"] < evals[0]["loss"] - 0.2, evals
    loaded = workdir.load(mlm_workdir)
    assert loaded.model_cfg.layer_types == (GLOBAL, LOCAL)

    out = tmp_path / "hf"
    export(str(mlm_workdir), str(out))
    model, info = transformers.ModernBertForMaskedLM.from_pretrained(
        out, output_loading_info=True, attn_implementation="eager"
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    text = " ".join(["the city and its river were named after the old bridge"] * 4)
    enc = loaded.tokenizer([text, "a town"], padding=True, return_tensors="np")
    assert enc["input_ids"].shape[1] > 17  # longer than the local window
    ours, theirs = both_logits(loaded, "mlm", model, enc)
    real = enc["attention_mask"].astype(bool)
    np.testing.assert_allclose(ours[real], theirs[real], atol=2e-4, rtol=1e-4)


@pytest.mark.slow
def test_classifier_and_student_from_the_mlm_workdir(mlm_workdir, tmp_path):
    c = tiny_classifier(epochs=3, log_every=3)
    c.init_from = str(mlm_workdir)
    w = tmp_path / "cls"
    test = scores(run(c, w))
    losses = [r["loss"] for r in _rows(w, "train")]
    assert np.mean(losses[-3:]) < np.mean(losses[:3]) - 0.02, losses
    assert workdir.load(w).model_cfg.family == "modernbert"

    # A student of one layer, the teacher's second: local attention, with its attention norm
    # left out (a first layer has none).
    s = tiny_config(steps=3, eval_every=3, checkpoint_every=3)
    s.task = "distill"
    s.train.update(teacher=str(mlm_workdir), student_layers_from_teacher=(1,))
    summary = run(s, tmp_path / "student")
    assert np.isfinite(summary["eval_loss"])
    student = workdir.load(tmp_path / "student")
    assert student.model_cfg.layer_types == (LOCAL,)
    ours = student.params["model"]["layers"][0]
    assert "attn_norm" not in ours
    assert ours["attn"]["Wqkv"]["kernel"].shape == (32, 96)
    # 30 steps on 160 examples leave the classifier near chance (51.8% on a test split whose
    # majority class is 51.4%), so its test result is checked against the value this run gives.
    assert_golden("modernbert_classifier_test.json", test, approx=("loss",))
