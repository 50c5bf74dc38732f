"""Causal-LM data: next-token blocks cover every token of the stream once as a target, and the
byte-level BPE trained on the data is lossless and the same on every run."""

import json
import os
import subprocess
import sys

import numpy as np

from ptft_jax.data import causal
from ptft_jax.data.pipeline import BatchLayout
from ptft_jax.data.tokenize import load_tokenizer, save_tokenizer
from ptft_jax.data.vocab import END_OF_TEXT, train_byte_bpe

TEXTS = [
    "The cat sat on the mat. The dog did not.",
    "Über naïve café, déjà vu: 42 € and 3.14%!",
    "中文文本也要能用：机器学习和深度学习。Mixed with English words.",
    "  leading spaces,\ttabs and\nnewlines  ",
] * 5


def test_blocks_predict_every_next_token_once():
    rng = np.random.default_rng(0)
    docs = [rng.integers(1, 50, n).astype(np.int32) for n in (5, 0, 17, 3, 9)]
    blocks = causal.pack_stream(docs, seq_len=8, eot_id=0)
    stream = np.concatenate([p for d in docs if len(d) for p in (d, [0])])
    rows = causal.make_rows(blocks.ids, blocks.lengths, np.ones(len(blocks), bool))
    targets = rows["labels"][rows["label_weights"] > 0]
    assert np.array_equal(targets, stream[1:]), "each token after the first, once, in order"
    inputs = rows["input_ids"][rows["label_weights"] > 0]
    assert np.array_equal(inputs, stream[:-1]), "each target read from the token before it"
    assert (rows["attention_mask"][rows["label_weights"] > 0] == 1).all()
    assert rows["input_ids"].shape == (len(blocks), 8) and blocks.ids.shape[1] == 9


def test_eval_batches_pad_with_rows_that_weigh_nothing():
    docs = [np.arange(1, 30, dtype=np.int32)]
    blocks = causal.pack_stream(docs, seq_len=8, eot_id=0)  # 30 tokens: 4 blocks
    layout = BatchLayout(accum=1, micro=3, start=0, stop=3)
    batches = list(causal.eval_batches(blocks, layout, 0))
    assert len(batches) == 2
    weights = np.concatenate([b["label_weights"].reshape(-1, 8) for b in batches])
    assert weights.sum() == 29 and weights[4:].sum() == 0


def test_byte_bpe_is_lossless_and_ends_documents():
    tok = train_byte_bpe(TEXTS, 400)
    assert tok.convert_ids_to_tokens(0) == END_OF_TEXT == tok.eos_token == tok.pad_token
    for text in TEXTS[:4]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    assert len(tok) <= 400


def test_byte_bpe_is_the_same_in_every_process(tmp_path):
    """Two processes with different hash seeds train identical tokenizer files; a saved one
    loads back as the same tokenizer."""
    script = (
        "import json, sys; from ptft_jax.data.vocab import train_byte_bpe; "
        "from ptft_jax.data.tokenize import save_tokenizer; import pathlib; "
        "t = train_byte_bpe(json.loads(sys.argv[2]), 400); "
        "save_tokenizer(t, pathlib.Path(sys.argv[1]))"
    )
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = tmp_path / seed
        subprocess.run(
            [sys.executable, "-c", script, str(out), json.dumps(TEXTS)], env=env, check=True
        )
    files = sorted(p.name for p in (tmp_path / "1").iterdir())
    assert "tokenizer.json" in files
    for name in files:
        assert (tmp_path / "1" / name).read_bytes() == (tmp_path / "2" / name).read_bytes(), name
    loaded = load_tokenizer(str(tmp_path / "1"))
    fresh = train_byte_bpe(TEXTS, 400)
    assert loaded(TEXTS[2])["input_ids"] == fresh(TEXTS[2])["input_ids"]
    assert loaded.pad_token_id == loaded.eos_token_id == 0
    save_tokenizer(loaded, tmp_path / "again")
    assert (
        load_tokenizer(str(tmp_path / "again"))(TEXTS[1])["input_ids"]
        == loaded(TEXTS[1])["input_ids"]
    )
