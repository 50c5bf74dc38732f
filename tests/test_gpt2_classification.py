"""GPT-2 fine-tuned for sequence classification (task=classification, model.family=gpt2) as
transformers' GPT2ForSequenceClassification computes it, through the product's own paths: a
transformers classifier folder read by ``init_from=hf:`` (its ``score`` too) gives torch's
logits; a fine-tune from scratch trains, evaluates and exports to a folder transformers loads
with the same logits and probabilities; a regression starts from an LM folder with a fresh
``score``. Pairs are ``A <|endoftext|> B``; the pad id is the end-of-text token.

The tokenizer is a GPT-2 byte-level BPE saved as the hub's GPT-2 is: no pad token of its own.
"""

from __future__ import annotations

import json
import pathlib
import shutil

import jax
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from ptft_jax import config as config_lib
from ptft_jax import steps, weights, workdir
from ptft_jax.data.tokenize import load_tokenizer
from ptft_jax.data.vocab import train_byte_bpe, train_wordpiece
from ptft_jax.errors import DataError
from ptft_jax.evaluate import evaluate
from ptft_jax.export import export
from ptft_jax.predict import predict
from ptft_jax.tasks.base import trained_tokenizer_kind
from ptft_jax.tasks.classification import Classification, separated_pairs
from ptft_jax.train import run

ATOL = 1e-5
WORDS = "good bad great awful fine poor lovely dull bright grim plain rich".split()
LABELS = ("no", "maybe", "yes")
# HF names; our config below is the same model.
TINY_HF = dict(vocab_size=320, n_embd=32, n_layer=2, n_head=4, n_positions=64)
TEXTS = ["good bright lovely fine good", "dull", "grim poor awful plain bad rich"]
PAIRS = ["rich", "bad awful grim good", "fine plain"]


def _records(n: int = 160) -> list[dict]:
    """Texts and pairs of 1-9 words, a class (by the balance of good and bad words) and a
    score."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(n):
        text = " ".join(rng.choice(WORDS, rng.integers(2, 10)))
        pair = " ".join(rng.choice(WORDS, rng.integers(1, 7)))
        good = sum(w in WORDS[::2] for w in f"{text} {pair}".split())
        bad = len(f"{text} {pair}".split()) - good
        label = LABELS[int(np.sign(good - bad)) + 1]
        rows.append({"text": text, "pair": pair, "label": label, "score": (good - bad) / 4 + i % 3})
    return rows


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("gpt2_cls_data") / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    return path


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> pathlib.Path:
    """A GPT-2 tokenizer folder without a pad token (as the hub's gpt2)."""
    folder = tmp_path_factory.mktemp("gpt2_tokenizer")
    texts = [f"{r['text']} {r['pair']}" for r in _records()]
    train_byte_bpe(texts, TINY_HF["vocab_size"] - 20).save_pretrained(folder)
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    del settings["pad_token"]
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    return folder


def _hf_folder(folder: pathlib.Path, tokenizer_dir, cls, num_labels: int, seed: int):
    """A transformers GPT-2 (``cls``) with every tensor ~ normal(0, 0.2), its config's pad id
    the end-of-text token, saved with the tokenizer; returns the model (float32, eval)."""
    tok = transformers.AutoTokenizer.from_pretrained(tokenizer_dir)
    assert tok.pad_token is None
    eos = tok.eos_token_id
    config = transformers.GPT2Config(
        **TINY_HF,
        num_labels=num_labels,
        pad_token_id=eos,
        bos_token_id=eos,
        eos_token_id=eos,
        attn_implementation="eager",
    )
    torch.manual_seed(seed)
    model = cls(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.2)
    model.save_pretrained(folder)
    for f in tokenizer_dir.iterdir():
        shutil.copy(f, folder / f.name)
    return model.float().eval()


def _config(data: pathlib.Path, **train):
    c = config_lib.base_config()
    c.task = "classification"
    c.model.update(
        family="gpt2",
        vocab_size=TINY_HF["vocab_size"],
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=128,
        max_position_embeddings=64,
        layer_norm_eps=1e-5,
        num_labels=3,
    )
    c.data.update(source=str(data), text_pair_field="pair", max_seq_length=32)
    c.train.update(
        steps=4,
        batch_size=16,
        learning_rate=3e-3,
        warmup_steps=1,
        log_every=2,
        eval_every=4,
        checkpoint_every=4,
    )
    c.train.update(train)
    c.mesh.update(data=4, fsdp=2, tensor=1)
    return c


def _ours(w: pathlib.Path, enc: dict) -> np.ndarray:
    """The workdir's logits of a tokenizer's padded batch (predict's forward pass)."""
    loaded = workdir.load(w)
    forward = steps.jit_forward(loaded.model_cfg, "classification", loaded.mesh)
    batch = {k: np.asarray(enc[k], np.int32) for k in ("input_ids", "attention_mask")}
    batch["token_type_ids"] = np.zeros_like(batch["input_ids"])
    with jax.set_mesh(loaded.mesh):
        return np.asarray(jax.device_get(forward(loaded.params, batch)))


def _torch(model, enc: dict) -> np.ndarray:
    """transformers' logits: ids and mask only (its GPT-2 adds token type ids as words)."""
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(np.asarray(enc["input_ids"])),
            attention_mask=torch.tensor(np.asarray(enc["attention_mask"])),
        )
    return out.logits.numpy()


@pytest.mark.slow
def test_hf_classifier_folder_loads_with_its_score_and_equal_logits(data, tokenizer_dir, tmp_path):
    folder = tmp_path / "hf"
    theirs = _hf_folder(folder, tokenizer_dir, transformers.GPT2ForSequenceClassification, 3, 0)
    c = _config(data, steps=1, learning_rate=0.0, eval_every=1, checkpoint_every=1)
    c.init_from = f"hf:{folder}"
    run(c, tmp_path / "w")  # a zero learning rate: the parameters stay those loaded

    tok = workdir.load(tmp_path / "w").tokenizer
    eos = tok.eos_token_id
    assert tok.pad_token_id == eos == theirs.config.pad_token_id  # GPT-2 pads with its end
    # A right-padded batch of pairs of three lengths (A <|endoftext|> B), as our rows are.
    enc = tok(TEXTS, PAIRS, padding=True, return_tensors="np")
    ids, lengths = enc["input_ids"], enc["attention_mask"].sum(1)
    assert len(set(lengths)) == 3
    for row, n in zip(ids, lengths, strict=True):  # one separator, then padding
        assert (row[:n] == eos).sum() == 1 and (row[n:] == eos).all() and row[n - 1] != eos
    ours = _ours(tmp_path / "w", enc)
    np.testing.assert_allclose(ours, _torch(theirs, enc), atol=ATOL, rtol=0)
    # Left padding: transformers takes the rightmost token that is not padding, ours the last
    # one the mask holds; the same token, at the same positions (0, 1, ... whatever the padding).
    tok.padding_side = "left"
    enc = tok(TEXTS, PAIRS, padding=True, return_tensors="np")
    np.testing.assert_allclose(_ours(tmp_path / "w", enc), _torch(theirs, enc), atol=ATOL, rtol=0)


@pytest.mark.slow
def test_fine_tune_evaluates_and_exports_a_gpt2_classifier(data, tmp_path):
    c = _config(data, steps=6, eval_every=3, checkpoint_every=3)
    c.data.update(packing=False, length_buckets=1)  # one example a row, right-padded
    w = tmp_path / "w"
    run(c, w)
    # data.tokenizer='': GPT-2's byte-level BPE, trained on the data (not BERT's WordPiece)
    assert trained_tokenizer_kind(Classification, "gpt2") == "byte_bpe"
    assert isinstance(workdir.load(w).tokenizer, transformers.GPT2Tokenizer)
    rows = [json.loads(x) for x in (w / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["split"] == "validation"]
    assert [r["step"] for r in evals] == [0, 3, 6]
    assert {"loss", "accuracy", "f1", "mcc"} <= evals[-1].keys()
    again = evaluate(str(w), "test")
    assert 0 <= again["accuracy"] <= 1 and np.isfinite(again["loss"])

    out = tmp_path / "hf"
    export(str(w), str(out))
    config = json.loads((out / "config.json").read_text())
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert config["architectures"] == ["GPT2ForSequenceClassification"]
    assert config["pad_token_id"] == tok.pad_token_id == tok.eos_token_id
    assert config["id2label"] == {str(i): n for i, n in enumerate(sorted(LABELS))}
    assert config["label2id"] == {n: i for i, n in enumerate(sorted(LABELS))}
    theirs, info = transformers.AutoModelForSequenceClassification.from_pretrained(
        out, output_loading_info=True
    )
    assert type(theirs) is transformers.GPT2ForSequenceClassification
    assert theirs.config.num_labels == 3
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    # transformers' tokenizer makes our pairs: A <|endoftext|> B.
    a, b = tok("good dull")["input_ids"], tok("grim")["input_ids"]
    assert tok("good dull", "grim")["input_ids"] == [*a, tok.eos_token_id, *b]
    enc = tok(TEXTS, PAIRS, padding=True, return_tensors="np")
    logits = _torch(theirs.eval(), enc)
    np.testing.assert_allclose(_ours(w, enc), logits, atol=ATOL, rtol=0)
    probs = torch.softmax(torch.tensor(logits), -1).numpy()
    for row, p in zip(predict(workdir.load(w), TEXTS, PAIRS), probs, strict=True):
        np.testing.assert_allclose([row["probs"][n] for n in sorted(LABELS)], p, atol=ATOL)


@pytest.mark.slow
def test_regression_from_an_lm_folder_starts_a_fresh_score(data, tokenizer_dir, tmp_path):
    folder = tmp_path / "lm"
    lm = _hf_folder(folder, tokenizer_dir, transformers.GPT2LMHeadModel, 2, 1)
    c = _config(data)
    c.init_from, c.model.num_labels = f"hf:{folder}", 1
    c.data.update(label_field="score")
    # What init_from reads (plan.make's calls): every decoder tensor of the LM, a fresh score.
    source = weights.resolve(c.init_from)
    assert source.task == "causal_lm"
    model_cfg = config_lib.model_config(config_lib.apply_checkpoint_model(c, source.fields, folder))
    fresh = nnx.to_pure_dict(steps.abstract_model(model_cfg, "classification")[1])
    loaded = weights.load_source(source, fresh, "gpt2", c.init_from)
    assert isinstance(loaded["score"]["kernel"], jax.ShapeDtypeStruct)  # fresh, one output
    assert loaded["score"]["kernel"].shape == (32, 1)
    for ours, theirs in [
        (loaded["transformer"]["wte"]["embedding"], lm.transformer.wte.weight),
        (
            loaded["transformer"]["h"][1]["attn"]["c_attn"]["kernel"],
            lm.transformer.h[1].attn.c_attn.weight,
        ),
    ]:
        np.testing.assert_array_equal(ours, theirs.detach().numpy())

    run(c, tmp_path / "w")
    out = tmp_path / "hf"
    export(str(tmp_path / "w"), str(out))
    theirs = transformers.GPT2ForSequenceClassification.from_pretrained(out).eval()
    assert theirs.config.num_labels == 1
    tok = transformers.AutoTokenizer.from_pretrained(out)
    enc = tok(TEXTS, PAIRS, padding=True, return_tensors="np")
    ours = _ours(tmp_path / "w", enc)
    assert ours.shape == (3, 1)
    np.testing.assert_allclose(ours, _torch(theirs, enc), atol=ATOL, rtol=0)
    scores = predict(workdir.load(tmp_path / "w"), TEXTS, PAIRS)
    np.testing.assert_allclose([r["score"] for r in scores], ours[:, 0], atol=ATOL)


def test_pairs_are_separated_by_end_of_text_once(tokenizer_dir):
    tok = load_tokenizer(str(tokenizer_dir))
    assert tok.pad_token_id == tok.eos_token_id  # no pad token of its own: its end pads
    a, b = tok("good dull")["input_ids"], tok("grim")["input_ids"]
    assert tok("good dull", "grim")["input_ids"] == a + b  # GPT-2 joins a pair as one text
    separated_pairs(tok)
    assert tok("good dull", "grim")["input_ids"] == [*a, tok.eos_token_id, *b]
    assert tok("good dull")["input_ids"] == a  # single texts as they were
    separated_pairs(tok)  # a tokenizer that separates them already is left alone
    assert tok("good dull", "grim")["input_ids"] == [*a, tok.eos_token_id, *b]
    bert = train_wordpiece([" ".join(WORDS)] * 4, 64, True)
    before = bert("good dull", "grim")["input_ids"]
    assert separated_pairs(bert)("good dull", "grim")["input_ids"] == before  # [SEP] already
    tok.backend_tokenizer.post_processor = None
    tok.eos_token = None
    with pytest.raises(DataError, match="has no end-of-text token to put there"):
        separated_pairs(tok)


def test_a_text_ending_with_the_pad_token_stops_before_compiling(data, tokenizer_dir, tmp_path):
    rows = _records()
    rows[5]["pair"] += " bad<|endoftext|>"
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    c = _config(path)
    c.data.tokenizer = str(tokenizer_dir)
    said = r"data.jsonl line 6 ends \(within data.max_seq_length\) with the pad token '<\|endof"
    with pytest.raises(DataError, match=said):
        run(c, tmp_path / "w")
    assert not (tmp_path / "w" / "checkpoints").exists()
