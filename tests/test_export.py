"""Workdir -> Hugging Face folder -> transformers: the same numbers as ptft_jax."""

import json
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from test_train import tiny_config

from ptft_jax import steps, workdir
from ptft_jax.evaluate import evaluate
from ptft_jax.export import export
from ptft_jax.predict import predict
from ptft_jax.train import run


@pytest.mark.slow
def test_trained_model_exports_with_equal_logits(tmp_path):
    run(tiny_config(steps=3, eval_every=3, checkpoint_every=3, eval_batches=0), tmp_path / "w")
    export(str(tmp_path / "w"), str(tmp_path / "hf"))
    model, info = transformers.BertForMaskedLM.from_pretrained(
        tmp_path / "hf", output_loading_info=True
    )
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys"))
    model.eval()
    tok = transformers.AutoTokenizer.from_pretrained(tmp_path / "hf")
    enc = tok(["the river flows north", "a short one"], padding=True, return_tensors="np")
    with torch.no_grad():
        theirs = model(**{k: torch.from_numpy(v) for k, v in enc.items()}).logits.numpy()
    loaded = workdir.load(tmp_path / "w")
    graphdef, _ = steps.abstract_model(loaded.model_cfg, "mlm")
    ours = nnx.merge(graphdef, jax.device_get(loaded.params))(
        enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]
    )
    real = enc["attention_mask"].astype(bool)
    np.testing.assert_allclose(np.asarray(ours)[real], theirs[real], atol=1e-5, rtol=1e-5)

    # evaluate reproduces the final in-training evaluation and writes W/eval_validation.json.
    result = evaluate(str(tmp_path / "w"), "validation")
    rows = [json.loads(x) for x in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    last = [r for r in rows if r["split"] == "validation"][-1]
    assert result["step"] == last["step"] == 3
    assert result["loss"] == pytest.approx(last["loss"], rel=1e-6)
    saved = json.loads((tmp_path / "w" / "eval_validation.json").read_text())
    assert saved["mlm_accuracy"] == pytest.approx(result["mlm_accuracy"])


@pytest.mark.slow
def test_minilm_step0_export_fill_mask_matches_transformers(tmp_path):
    """The README path: init from the built-in MiniLM, 0 steps, export, fill-mask both ways."""
    w, out = tmp_path / "w", tmp_path / "hf"
    cmd = [sys.executable, "-m", "ptft_jax.train", "--config", "configs/bert_tiny_mlm.py"]
    args = ["--workdir", str(w), "--config.init_from=builtin:minilm_l6", "--config.train.steps=0"]
    subprocess.run([*cmd, *args], check=True, capture_output=True)
    subprocess.run(
        [sys.executable, "-m", "ptft_jax.export", "--workdir", str(w), "--out", str(out)],
        check=True,
        capture_output=True,
    )
    assert json.loads((out / "config.json").read_text())["architectures"] == ["BertForMaskedLM"]
    text = "The capital of France is [MASK]."
    pipe = transformers.pipeline("fill-mask", model=str(out), top_k=5)
    theirs = pipe(text)
    ours = predict(workdir.load(w), [text], top_k=5)[0]["fills"][0]
    assert [o["token"] for o in ours] == [t["token_str"] for t in theirs]
    for o, t in zip(ours, theirs, strict=True):
        assert o["score"] == pytest.approx(t["score"], rel=1e-3)
