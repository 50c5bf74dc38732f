"""The prepared token store: streamed documents, packing equal to the in-memory packer, the
hash held-out rule, prepare with worker processes, a rerun that finds the work done, training
from the store with an exact resume on another mesh, and the store's mistakes."""

import gzip
import json
import logging
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest
from test_train import tiny_config

from ptft_jax import prepare
from ptft_jax.data import pipeline, sources, store, stream, tokenize, writer
from ptft_jax.errors import DataError
from ptft_jax.train import run


def test_streamed_packing_equals_the_in_memory_packer():
    rng = np.random.default_rng(0)
    for _ in range(300):
        docs = [rng.integers(5, 99, rng.integers(0, 40)) for _ in range(rng.integers(0, 12))]
        seq_len = int(rng.integers(4, 24))
        packer, blocks = writer.Packer(seq_len, 1, 2), []
        for d in docs:
            blocks += packer.add(d)
        blocks += packer.finish()
        want = pipeline.pack([d.astype(np.int32) for d in docs], seq_len, 1, 2, 0)
        got = store.as_blocks(blocks, seq_len, 0)
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.lengths, want.lengths)


def test_the_held_out_rule_is_a_fraction_of_documents_fixed_by_their_text():
    texts = [f"document number {i}" for i in range(20_000)]
    held = [store.held_out(t, 0.1) for t in texts]
    assert 0.09 < np.mean(held) < 0.11
    assert held[:100] == [store.held_out(t, 0.1) for t in texts[:100]]  # stays put


def test_workers_tokenize_whole_documents_whatever_the_tokenizer_file_pads_or_cuts(tmp_path):
    texts = [r["text"] for r in sources.load_records("builtin:wiki_en")["train"][:40]]
    tok = tokenize.train_wordpiece(texts, 512)
    tok.backend_tokenizer.enable_padding(length=96, pad_id=0, pad_token="[PAD]")
    tok.backend_tokenizer.enable_truncation(32)  # as sentence-transformers' tokenizer.json
    tokenize.save_tokenizer(tok, tmp_path / "tok")
    writer.start_worker(str(tmp_path / "tok"), 0.0, "mlm")
    encoded = writer.encode(texts)
    want = tok(texts, add_special_tokens=False)["input_ids"]  # a call sets neither
    assert encoded["tokens"] == sum(map(len, want)) > 32 * len(texts)
    sep = tokenize.special_ids(tok)["sep"]
    want = writer.stream_of(list(map(np.array, want)), sep)
    np.testing.assert_array_equal(encoded["train"], want)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """builtin:wiki_en's first 300 documents as a JSONL file and a gzip-compressed text file."""
    folder = tmp_path_factory.mktemp("corpus")
    texts = [r["text"].replace("\n", " ") for r in sources.load_records("builtin:wiki_en")["train"]]
    with open(folder / "a.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps({"text": t}) + "\n" for t in texts[:150])
    with gzip.open(folder / "b.txt.gz", "wt", encoding="utf-8") as f:
        f.writelines(t + "\n" for t in texts[150:300])
    return folder, texts[:300]


@pytest.fixture(scope="module")
def prepared(corpus, tmp_path_factory):
    c = tiny_config()
    c.data.source = str(corpus[0])
    out = tmp_path_factory.mktemp("store")
    manifest = prepare.prepare(c, out, workers=2, per_shard=100)
    return out, manifest, c


def test_prepare_writes_the_blocks_the_in_memory_path_would(corpus, prepared):
    out, manifest, c = prepared
    _, texts = corpus
    assert [w for w, _ in stream.documents(str(corpus[0]))][150] == f"{corpus[0]}/b.txt.gz line 1"
    tok = tokenize.load_tokenizer(str(out / "tokenizer"))
    pad = tokenize.special_ids(tok)["pad"]
    for split in store.SPLITS:
        want = []  # each input file is packed on its own
        for part in (texts[:150], texts[150:]):
            docs = [
                t for t in part if store.held_out(t, c.data.eval_fraction) == (split != "train")
            ]
            want.append(pipeline.pack_texts(docs, tok, c.data.max_seq_length, out / "cache"))
        blocks = store.open_split(out, split, pad)
        assert len(blocks) == sum(map(len, want)) == manifest["splits"][split]["blocks"]
        ids, lengths = blocks.take(np.arange(len(blocks)))
        np.testing.assert_array_equal(ids, np.concatenate([w.ids for w in want]))
        np.testing.assert_array_equal(lengths, np.concatenate([w.lengths for w in want]))
    assert len(manifest["splits"]["train"]["shards"]) > 1  # 100 blocks a shard
    assert not list(out.rglob("*.tmp"))
    # A rerun with the same inputs finds the work done and rewrites nothing.
    shard = out / "train" / "00000-00000.array_record"
    before = shard.stat().st_mtime_ns
    assert prepare.prepare(c, out, workers=1, per_shard=100) == manifest
    assert shard.stat().st_mtime_ns == before


@pytest.mark.slow
def test_training_from_the_store_resumes_exactly_on_another_mesh(prepared, tmp_path):
    out, _, _ = prepared

    def config(**train):
        c = tiny_config(**train)
        c.data.source = str(out)
        return c

    straight = run(config(), tmp_path / "straight")
    assert straight["step"] == 12 and straight["eval_loss"] < 7.0
    run(config(stop_at_step=6), tmp_path / "w")
    c = config()
    c.mesh.update(data=2, fsdp=2, tensor=2)
    resumed = run(c, tmp_path / "w")

    def losses(w):
        rows = map(json.loads, (w / "metrics.jsonl").read_text().splitlines())
        return [(r["step"], r["loss"]) for r in rows if r["split"] in ("train", "validation")]

    for x, y in zip(losses(tmp_path / "straight"), losses(tmp_path / "w"), strict=True):
        np.testing.assert_allclose(y, x, rtol=1e-5)
    pa, pb = (jax.device_get(r["state"]["params"]) for r in (straight, resumed))
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
        np.testing.assert_allclose(y, x, rtol=1e-4, atol=1e-6)


def test_a_store_that_disagrees_with_the_run_stops_with_one_sentence(prepared, tmp_path):
    out, _, _ = prepared
    c = tiny_config()
    c.data.update(source=str(out), max_seq_length=32)
    with pytest.raises(DataError, match="holds blocks of 64 tokens but data.max_seq_length is 32"):
        run(c, tmp_path / "w")
    assert not (tmp_path / "w" / "config.json").exists()
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / store.MANIFEST).write_text((out / store.MANIFEST).read_text())
    with pytest.raises(DataError, match="is missing from the prepared folder"):
        store.open_split(broken, "train", 0)
    (broken / "train").mkdir()
    for shard in (out / "train").iterdir():
        (broken / "train" / shard.name).write_bytes(shard.read_bytes()[:-1])  # one byte short
    with pytest.raises(DataError, match="bytes but the manifest says .*: it is damaged"):
        store.open_split(broken, "train", 0)
    for shard in (out / "train").iterdir():
        (broken / "train" / shard.name).write_bytes(shard.read_bytes())
    shard = broken / "train" / "00000-00001.array_record"  # the right size, flipped bytes
    data = bytearray(shard.read_bytes())
    middle = slice(2000, 2256)  # inside its first records
    data[middle] = bytes(b ^ 0xFF for b in data[middle])
    shard.write_bytes(data)
    blocks = store.open_split(broken, "train", 0)
    with pytest.raises(DataError, match=r"train/00000-00001.array_record is damaged \(Corrupted"):
        blocks.take(np.arange(100, 200))


def test_corpus_mistakes_name_the_file_and_line(tmp_path):
    (tmp_path / "bad.txt").write_bytes(b"fine\n\xff\xfe broken\n")
    with pytest.raises(DataError, match=r"bad.txt line 2 is not valid UTF-8"):
        list(stream.documents(str(tmp_path / "bad.txt")))
    (tmp_path / "c.jsonl").write_text('{"body": "x"}\n')
    with pytest.raises(DataError, match=r"c.jsonl line 1 has no 'text' field"):
        list(stream.documents(str(tmp_path / "c.jsonl")))
    with pytest.raises(DataError, match="holds no corpus file"):
        stream.files(str(pathlib.Path(tmp_path) / "*.parquet"))


CONFIG = """
import sys
sys.path.insert(0, {tests!r})
from test_train import tiny_config

def get_config():
    c = tiny_config({tokenizer!r})
    c.data.source = {source!r}
    return c
"""


def _command(config, out, *extra):
    cmd = [sys.executable, "-m", "ptft_jax.prepare", "--config", str(config), "--out", str(out)]
    return [*cmd, *extra]


def _files(out: pathlib.Path) -> dict:
    """The store's files and their bytes (a test's own leftovers, like a cache, aside)."""
    parts = ("tokenizer", ".done", *store.SPLITS)
    found = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    return {k: v for k, v in found.items() if k.parts[0] in parts or k.name == store.MANIFEST}


@pytest.mark.slow
def test_prepare_killed_and_run_again_writes_what_an_uninterrupted_one_does(prepared, tmp_path):
    texts = [r["text"] for r in sources.load_records("builtin:wiki_en")["train"][:3000]]
    for i in range(4):  # four inputs: the rerun skips those already packed
        rows = texts[i * 750 : (i + 1) * 750]
        (tmp_path / "corpus").mkdir(exist_ok=True)
        (tmp_path / "corpus" / f"{i}.jsonl").write_text(
            "".join(json.dumps({"text": t}) + "\n" for t in rows)
        )
    tests = str(pathlib.Path(__file__).parent)
    tok, source = str(prepared[0] / "tokenizer"), str(tmp_path / "corpus")
    (tmp_path / "c.py").write_text(CONFIG.format(tests=tests, tokenizer=tok, source=source))
    flags = ("--workers", "1", "--shard_blocks", "20")
    subprocess.run(_command(tmp_path / "c.py", tmp_path / "whole", *flags), check=True)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_command(tmp_path / "c.py", killed, *flags), stderr=subprocess.DEVNULL)
    while not writer.unit_record(killed, 0).exists() and proc.poll() is None:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not (killed / store.MANIFEST).exists()  # unfinished, and says so
    first = killed / "train" / "00000-00000.array_record"
    before = first.stat().st_mtime_ns
    rerun = subprocess.run(
        _command(tmp_path / "c.py", killed, *flags), check=True, text=True, capture_output=True
    )
    assert "of 4 inputs were already packed" in rerun.stdout
    assert first.stat().st_mtime_ns == before  # a finished input is not written again
    assert _files(killed) == _files(tmp_path / "whole")


@pytest.mark.slow
def test_the_beam_pipeline_writes_what_the_local_writer_does(prepared, tmp_path):
    out, manifest, c = prepared
    config = tmp_path / "c.py"
    tests = str(pathlib.Path(__file__).parent)
    config.write_text(CONFIG.format(tests=tests, tokenizer="", source=c.data.source))
    extra = ("--shard_blocks", "100", "--runner=DirectRunner", "--direct_num_workers=2")
    run = subprocess.run(
        _command(config, tmp_path / "beam", *extra, "--direct_running_mode=multi_processing"),
        check=True,
        text=True,
        capture_output=True,
    )
    assert "prepared 300 documents" in run.stdout
    assert json.loads((tmp_path / "beam" / store.MANIFEST).read_text()) == manifest
    assert _files(tmp_path / "beam") == _files(out)  # record for record, byte for byte
    # A corpus mistake found inside a Beam worker comes back as its one sentence, exit 2.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "a.jsonl").write_bytes(b'{"text": "fine"}\n\xff\xfe\n')
    tok = str(out / "tokenizer")
    config.write_text(CONFIG.format(tests=tests, tokenizer=tok, source=str(bad)))
    run = subprocess.run(_command(config, tmp_path / "b2", *extra), text=True, capture_output=True)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        f"error: {bad / 'a.jsonl'} line 2 is not valid UTF-8 (byte 0); re-encode the file as "
        "UTF-8, for example with `iconv -f latin1 -t utf-8`."
    )


def test_prepare_leaves_out_empty_texts_only_when_asked(tmp_path, caplog):
    """An empty text stops prepare before anything is written, as it stops train; with
    data.skip_empty_texts the store is the one a corpus without those records makes."""
    texts = [f"document {i} has some words in it" for i in range(60)]
    rows = [{"text": t} for t in texts]
    rows[5:5] = [{"text": ""}]
    rows[30:30] = [{"text": "   "}]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "clean.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    c = tiny_config()
    c.data.update(source=str(tmp_path / "c.jsonl"), max_documents=0)
    with pytest.raises(DataError, match=r"c.jsonl line 6 has an empty 'text'; fill it in"):
        prepare.prepare(c, tmp_path / "strict", workers=1)
    assert not (tmp_path / "strict").exists()
    c.data.skip_empty_texts = True
    with caplog.at_level(logging.INFO, logger="ptft_jax"):
        prepare.prepare(c, tmp_path / "skipped", workers=1)
    assert "left out 2 records with an empty 'text' (first at" in caplog.text
    c.data.update(source=str(tmp_path / "clean.jsonl"), skip_empty_texts=False)
    prepare.prepare(c, tmp_path / "clean", workers=1)

    def splits(out):
        return {k: v for k, v in _files(out).items() if k.parts[0] in store.SPLITS}

    assert splits(tmp_path / "skipped") == splits(tmp_path / "clean") != {}
