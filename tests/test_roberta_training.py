"""A RoBERTa trained from scratch through the MLM task: its pad id is its tokenizer's (saved
with the run, numbered from in its positions, written on export, where transformers computes
the same logits), its loss falls, a classifier fine-tuned from it exports with the same
logits too, and rows too long for its position table stop before anything is written."""

import json

import numpy as np
import pytest
import transformers
from helpers import both_logits
from test_classify import tiny_classifier
from test_train import tiny_config

from ptft_jax import config as config_lib
from ptft_jax import workdir
from ptft_jax.export import export
from ptft_jax.train import run


def tiny_roberta(**train):
    c = tiny_config(**train)
    c.model.update(family="roberta", max_position_embeddings=66, type_vocab_size=1)
    return c


@pytest.mark.slow
def test_a_roberta_from_scratch_pads_with_its_tokenizers_id(tmp_path):
    w = tmp_path / "w"
    run(tiny_roberta(), w)
    rows = [json.loads(x) for x in (w / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["split"] == "validation"]
    assert evals[-1]["loss"] < evals[0]["loss"] - 0.2, evals
    loaded = workdir.load(w)
    saved = json.loads((w / "config.json").read_text())["model"]["pad_token_id"]
    assert saved == loaded.model_cfg.pad_token_id == loaded.tokenizer.pad_token_id == 1

    out = tmp_path / "hf"
    export(str(w), str(out))
    model, info = transformers.RobertaForMaskedLM.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert model.config.pad_token_id == 1
    enc = loaded.tokenizer(["the city and its river", "a town"], padding=True, return_tensors="np")
    ours, theirs = both_logits(loaded, "mlm", model, enc)
    real = enc["attention_mask"].astype(bool)
    np.testing.assert_allclose(ours[real], theirs[real], atol=2e-4, rtol=1e-4)

    # A classifier fine-tuned from the workdir on builtin:mr exports as one that transformers
    # loads with no missing tensors and computes the same logits with.
    c = tiny_classifier(epochs=1)
    c.init_from = str(w)
    run(c, tmp_path / "cls")
    export(str(tmp_path / "cls"), str(tmp_path / "cls_hf"))
    model, info = transformers.RobertaForSequenceClassification.from_pretrained(
        tmp_path / "cls_hf", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    classifier = workdir.load(tmp_path / "cls")
    assert classifier.model_cfg.family == "roberta"
    ours, theirs = both_logits(classifier, "classification", model, enc)
    np.testing.assert_allclose(ours, theirs, atol=2e-4, rtol=1e-4)


def test_rows_longer_than_the_position_table_stop_before_anything_is_written(tmp_path):
    c = tiny_roberta()
    c.model.max_position_embeddings = 64
    with pytest.raises(config_lib.ConfigError, match="need model.max_position_embeddings >= 66"):
        run(c, tmp_path / "w")
    assert not (tmp_path / "w").exists()
