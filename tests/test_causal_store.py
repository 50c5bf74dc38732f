"""Next-token windows in a prepared folder (task=causal_lm): streamed windows equal the
in-memory cut, prepare writes them per input and split with a trained byte-level BPE, a tiny
GPT trains and evaluates from the folder, and a folder of the other kind of block, or a task
that reads none, is refused in one sentence."""

import json

import numpy as np
import pytest
from test_causal_lm import tiny_gpt
from test_prepare import corpus, prepared  # noqa: F401 (fixtures)

from ptft_jax import config, prepare
from ptft_jax.data import causal, store, tokenize, writer
from ptft_jax.errors import DataError
from ptft_jax.evaluate import evaluate
from ptft_jax.train import run


def test_streamed_windows_equal_the_in_memory_cut():
    rng = np.random.default_rng(0)
    for _ in range(300):
        docs = [rng.integers(1, 99, rng.integers(0, 40)) for _ in range(rng.integers(0, 12))]
        seq_len = int(rng.integers(2, 24))
        stream = writer.stream_of(docs, 0)
        packer, blocks = writer.NextTokenPacker(seq_len), []
        for piece in np.split(stream, np.sort(rng.integers(0, len(stream) + 1, 3))):
            blocks += list(packer.feed(piece))  # chunks cut anywhere, as workers return them
        blocks += packer.finish()
        want = causal.pack_stream([d.astype(np.int32) for d in docs], seq_len, 0)
        got = store.as_blocks(blocks, seq_len + 1, 0)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.lengths, want.lengths)


@pytest.fixture(scope="module")
def windows(corpus, tmp_path_factory):  # noqa: F811
    c = tiny_gpt()
    c.data.update(source=str(corpus[0]), max_documents=0)
    out = tmp_path_factory.mktemp("windows")
    return out, prepare.prepare(c, out, workers=2, per_shard=40), c


def test_prepare_writes_the_windows_the_in_memory_path_would(corpus, windows):  # noqa: F811
    out, manifest, c = windows
    _, texts = corpus
    assert manifest["blocks"] == "next_token" and manifest["seq_len"] == 32
    tok = tokenize.load_tokenizer(str(out / "tokenizer"))
    assert tok.eos_token == tokenize.END_OF_TEXT  # the task's tokenizer: byte-level BPE
    eot = tokenize.end_of_text_id(tok)
    for split in store.SPLITS:
        want = []  # each input file is cut on its own
        for part in (texts[:150], texts[150:]):
            fraction = c.data.eval_fraction
            held = [t for t in part if store.held_out(t, fraction) == (split != "train")]
            want.append(causal.pack_texts(held, tok, 32, out / "cache"))
        blocks = store.open_split(out, split, eot)
        assert len(blocks) == sum(map(len, want)) == manifest["splits"][split]["blocks"]
        ids, lengths = blocks.take(np.arange(len(blocks)))
        assert ids.shape[1] == 33
        np.testing.assert_array_equal(ids, np.concatenate([w.ids for w in want]))
        np.testing.assert_array_equal(lengths, np.concatenate([w.lengths for w in want]))
    assert len(manifest["splits"]["train"]["shards"]) > 2  # 40 windows a shard


@pytest.mark.slow
def test_a_gpt_trains_and_evaluates_from_the_folder(windows, tmp_path):
    out, _, _ = windows
    c = tiny_gpt(steps=12, eval_every=6, checkpoint_every=12)
    c.data.source = str(out)
    summary = run(c, tmp_path / "w")
    rows = [json.loads(x) for x in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["split"] == "validation"]
    assert [r["step"] for r in evals] == [0, 6, 12]
    assert evals[-1]["perplexity"] < 0.8 * evals[0]["perplexity"], evals
    assert summary["real_token_share"] > 0.95
    again = evaluate(str(tmp_path / "w"), "validation")
    assert again["loss"] == pytest.approx(evals[-1]["loss"], rel=1e-5)
    with pytest.raises(DataError, match="is a prepared folder: it holds train and validation"):
        evaluate(str(tmp_path / "w"), "test")


def test_a_folder_of_the_other_kind_is_refused(windows, prepared, tmp_path):  # noqa: F811
    gpt = tiny_gpt()
    gpt.data.source = str(prepared[0])
    with pytest.raises(DataError, match="holds mlm blocks, which task=causal_lm does not read"):
        run(gpt, tmp_path / "gpt")
    bert = prepared[2].copy_and_resolve_references()
    bert.data.source = str(windows[0])
    with pytest.raises(DataError, match="holds next_token blocks, which task=mlm does not read"):
        run(bert, tmp_path / "bert")
    assert not (tmp_path / "gpt").exists() and not (tmp_path / "bert").exists()
    classify = tiny_gpt()
    classify.task = "classification"
    with pytest.raises(config.ConfigError, match="task=classification trains from its source"):
        prepare.prepare(classify, tmp_path / "c")
    assert not (tmp_path / "c").exists()
