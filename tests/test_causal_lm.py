"""task=causal_lm end to end on 8 devices: a tiny GPT-2 learns next tokens on real text (with a
byte-level BPE trained on it), evaluates as training did, and exports to a folder that
transformers' GPT2LMHeadModel loads with the same logits; the export trains on, and the run
fine-tunes into a classifier that exports as GPT2ForSequenceClassification."""

import json

import jax
import numpy as np
import pytest
import torch
import transformers
from test_classify import tiny_classifier

from ptft_jax import config as config_lib
from ptft_jax import plot, steps, workdir
from ptft_jax.evaluate import evaluate
from ptft_jax.export import export
from ptft_jax.predict import predict
from ptft_jax.train import run


def tiny_gpt(**train):
    c = config_lib.base_config()
    c.task = "causal_lm"
    c.model.update(
        family="gpt2",
        vocab_size=512,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=64,
        layer_norm_eps=1e-5,
    )
    c.data.update(source="builtin:wiki_en", max_documents=200, max_seq_length=32)
    c.data.eval_fraction = 0.1
    c.train.update(
        steps=30,
        batch_size=16,
        learning_rate=3e-3,
        warmup_steps=3,
        log_every=5,
        eval_every=15,
        checkpoint_every=15,
        eval_batches=0,  # all of the held-out split, as the evaluate command scores it
    )
    c.train.update(train)
    c.mesh.update(data=4, fsdp=2, tensor=1)
    return c


@pytest.mark.slow
def test_gpt_learns_evaluates_and_exports(tmp_path, capsys):
    w = tmp_path / "w"
    summary = run(tiny_gpt(), w)
    rows = [json.loads(x) for x in (w / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["split"] == "validation"]
    assert [r["step"] for r in evals] == [0, 15, 30]
    assert evals[-1]["perplexity"] < 0.5 * evals[0]["perplexity"], evals
    assert evals[-1]["next_token_accuracy"] > evals[0]["next_token_accuracy"]
    assert summary["real_token_share"] > 0.95  # blocks are full but for the split's last one
    again = evaluate(str(w), "validation")
    assert again["loss"] == pytest.approx(evals[-1]["loss"], rel=1e-5)

    # The export is a GPT2LMHeadModel with the same next-token logits, padding included.
    out = tmp_path / "hf"
    export(str(w), str(out))
    model, info = transformers.GPT2LMHeadModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    tok = transformers.AutoTokenizer.from_pretrained(out)
    texts = ["The history of the city began", "A short one."]
    enc = tok(texts, padding=True, return_tensors="np")
    with torch.no_grad():
        theirs = model.eval()(
            input_ids=torch.tensor(enc["input_ids"]),
            attention_mask=torch.tensor(enc["attention_mask"]),
        ).logits.numpy()
    loaded = workdir.load(w)
    forward = steps.jit_forward(loaded.model_cfg, "causal_lm", loaded.mesh)
    batch = {k: enc[k].astype(np.int32) for k in ("input_ids", "attention_mask")}
    with jax.set_mesh(loaded.mesh):
        ours = np.asarray(jax.device_get(forward(loaded.params, batch)))
    real = enc["attention_mask"].astype(bool)
    np.testing.assert_allclose(ours[real], theirs[real], atol=2e-4, rtol=1e-4)

    # The export trains on from init_from=hf:, tokenizer included: it starts where W ended.
    c = tiny_gpt(steps=1, eval_every=1)
    c.init_from = f"hf:{out}"
    run(c, tmp_path / "from_hf")
    first = json.loads((tmp_path / "from_hf" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 0 and first["loss"] == pytest.approx(again["loss"], rel=1e-4)

    # Classification from the GPT run: packed rows, each example's last token; the export is
    # a GPT2ForSequenceClassification with the same probabilities.
    c = tiny_classifier(epochs=0, steps=4)
    c.init_from = str(w)
    run(c, tmp_path / "cls")
    texts = ["a gripping, beautiful film", "dull"]
    ours = predict(workdir.load(tmp_path / "cls"), texts)
    export(str(tmp_path / "cls"), str(tmp_path / "cls_hf"))
    model, info = transformers.GPT2ForSequenceClassification.from_pretrained(
        tmp_path / "cls_hf", output_loading_info=True
    )
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        probs = torch.softmax(model.eval()(**enc).logits, -1).numpy()
    for row, p in zip(ours, probs, strict=True):
        np.testing.assert_allclose(
            [row["probs"]["negative"], row["probs"]["positive"]], p, atol=1e-5
        )

    # Attention maps read BERT's layers: a GPT workdir gets one sentence and exit 2.
    with pytest.raises(SystemExit) as stop:
        plot.main(["attention", "--workdir", str(w), "--text", "a b"])
    assert stop.value.code == 2
    assert "holds a gpt2 model; attention maps read BERT's" in capsys.readouterr().err

    # A one-layer student distilled from the GPT on its next-token distributions.
    c = tiny_gpt(steps=3, eval_every=3, checkpoint_every=3)
    c.task = "distill"
    c.train.update(teacher=str(w), student_layers_from_teacher=(1,))
    run(c, tmp_path / "student")
    rows = [
        json.loads(x) for x in (tmp_path / "student" / "metrics.jsonl").read_text().splitlines()
    ]
    assert any("kd_loss" in r for r in rows)
    student = workdir.load(tmp_path / "student")
    assert student.task.model_task == "causal_lm" and student.model_cfg.num_hidden_layers == 1

    # A GPT given to an encoder's task: one sentence, nothing written.
    bert = tiny_gpt()
    bert.task, bert.init_from = "mlm", str(w)
    bert.model.family = "bert"
    with pytest.raises(config_lib.ConfigError, match="is a 'gpt2' model, which has no 'mlm' head"):
        run(bert, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_causal_lm_needs_a_decoder():
    c = tiny_gpt()
    c.model.family = "bert"
    with pytest.raises(config_lib.ConfigError, match="task=causal_lm needs a decoder"):
        config_lib.validate(c)
