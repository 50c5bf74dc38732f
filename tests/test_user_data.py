"""A user's own data: their column names everywhere, their labels checked (not coerced), and
every problem named by file, line and value."""

import contextlib
import json
import logging
import pathlib
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from test_classify import tiny_classifier

from ptft_jax import plan, weights
from ptft_jax.data import classify, sources
from ptft_jax.data.sources import DataError, load_records, split_labeled
from ptft_jax.errors import ConfigError
from ptft_jax.export import export
from ptft_jax.train import run

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORDS = "good great fine bad dull poor".split()


def _rows(n: int, offset: int = 0) -> list[dict]:
    """``sentence``/``sentiment`` rows; every 10th repeats an earlier sentence (a duplicate)."""
    rows = []
    for i in range(offset, offset + n):
        j = i - 7 if i % 10 == 9 and i >= 7 else i
        word = WORDS[j % len(WORDS)]
        rows.append({"sentence": f"a {word} film, take {j}", "sentiment": _label(word)})
    return rows


def _label(word: str) -> str:
    return "positive" if WORDS.index(word) < 3 else "negative"


def _write(path: pathlib.Path, rows: list[dict]) -> None:
    if path.suffix == ".csv":
        lines = ["sentence,sentiment"] + [f'"{r["sentence"]}",{r["sentiment"]}' for r in rows]
        path.write_text("\n".join(lines) + "\n")
    elif path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)


def _source(layout: str, tmp: pathlib.Path) -> tuple[pathlib.Path, int]:
    """A data source in ``layout`` and the number of test examples it must score."""
    if layout == "folder":
        folder = tmp / "data"
        folder.mkdir()
        _write(folder / "train.csv", _rows(60))
        _write(folder / "validation.jsonl", _rows(12, 100))
        _write(folder / "test.parquet", _rows(11, 200))
        return folder, 11
    path = tmp / f"data.{layout}"
    rows = _rows(80)
    _write(path, rows)
    unique = len({r["sentence"] for r in rows})
    return path, unique - int(0.9 * unique)


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["csv", "jsonl", "parquet", "folder"])
def test_own_column_names_end_to_end(tmp_path, capsys, layout):
    """Only data.source, text_field and label_field set: the run trains, scores its test split
    (every example once) and keeps the label names."""
    source, n_test = _source(layout, tmp_path)
    c = tiny_classifier(epochs=0, steps=2, eval_every=2, checkpoint_every=2, batch_size=8)
    c.data.update(source=str(source), text_field="sentence", label_field="sentiment")
    c.data.update(max_train_examples=0, length_buckets=1)
    w = tmp_path / "w"
    run(c, w)
    test = json.loads((w / "eval_test.json").read_text())
    assert sum(map(sum, test["confusion_matrix"])) == n_test
    assert json.loads((w / "labels.json").read_text())["names"] == ["negative", "positive"]
    out = capsys.readouterr().out
    assert "step 2 validation: loss " in out and ", accuracy " in out, "each evaluation prints"
    if layout != "csv":
        return
    run(c, w)  # already finished: the summary reports no speed of zero steps
    done = capsys.readouterr().out.strip().splitlines()[-1]
    assert done.startswith("done: step 2") and "tokens/s" not in done and "compile" not in done
    # predict reads the run's own text field from JSON lines and prints label names.
    inputs = tmp_path / "in.jsonl"
    inputs.write_text('{"sentence": "a great film"}\n\n{"sentence": "a dull film"}\n')
    cmd = [sys.executable, "-m", "ptft_jax.predict", "--workdir", str(w), "--file", str(inputs)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["text"] for r in rows] == ["a great film", "a dull film"]
    assert all(r["label"] in ("negative", "positive") for r in rows)
    assert all(set(r["probs"]) == {"negative", "positive"} for r in rows)


def test_the_split_deduplicates_on_the_configured_fields(caplog):
    rows = [{"premise": "p", "hypothesis": f"h{i}", "y": i % 2} for i in range(20)]
    rows.append({"premise": "p", "hypothesis": "h1", "y": 0})
    with caplog.at_level(logging.INFO):
        got = classify.splits({"train": rows}, ("premise", "hypothesis"), "y")
    assert sum(len(v) for v in got.values()) == 20, "pairs are duplicates only as pairs"
    assert "1 of 21 records repeat an earlier record's text and are left out" in caplog.text
    assert sum(len(v) for v in split_labeled(rows, ("premise",)).values()) == 1
    with pytest.raises(DataError, match="1 distinct texts, too few to cut 80/10/10"):
        classify.splits({"train": rows}, ("premise",), "y")


def test_a_test_split_without_labels_is_announced(tmp_path, caplog):
    folder = tmp_path / "d"
    folder.mkdir()
    _write(folder / "train.csv", _rows(10))
    _write(folder / "validation.csv", _rows(4, 50))
    (folder / "test.csv").write_text("sentence,sentiment\nan unseen film,\nanother one,\n")
    with caplog.at_level(logging.WARNING):
        got = classify.splits(load_records(str(folder)), ("sentence",), "sentiment")
    assert set(got) == {"train", "validation"}
    assert "the test split has no labels in 'sentiment'" in caplog.text
    # The same test file with labels is kept: the check reads the configured label field.
    _write(folder / "test.csv", _rows(3, 90))
    got = classify.splits(load_records(str(folder)), ("sentence",), "sentiment")
    assert len(got["test"]) == 3


@pytest.mark.parametrize(
    "content,num_labels,match",
    [
        ("text,y\na,0.0\nb,1.0\nc,0.7\n", 2, r"d.csv line 4 has the label 0.7 in 'y', not a class"),
        ("text,y\na,0\nb,\nc,1\n", 2, r"d.csv line 3 has no 'y' \(the train split's label"),
        ("text,y\na,pos\nb,\nc,neg\n", 2, r"d.csv line 3 has no 'y'"),
        ("text,y\na,0\nb,1\nc,2\n", 2, r"d.csv line 4 has label 2, outside 0..1; set"),
        ("text,y\na,0.5\nb,x\n", 1, r"d.csv line 3 has the regression label 'x' in 'y', not a"),
        ('text,y\na,0\n"two\nlines",1\nc,1.5\n', 2, r"d.csv line 5 has the label 1.5"),
    ],
    ids=["fractional", "empty-int", "empty-name", "out-of-range", "regression-text", "multiline"],
)
def test_labels_are_checked_not_coerced(tmp_path, content, num_labels, match):
    (tmp_path / "d.csv").write_text(content)
    records = load_records(str(tmp_path / "d.csv"))["train"]
    with pytest.raises(DataError, match=match):
        names = classify.label_names(records, "y", num_labels)
        classify.encode_labels(records, "y", num_labels, names, "train")


def test_whole_float_labels_are_classes(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"text": "a", "y": 1.0}\n{"text": "b", "y": 0.0}\n')
    records = load_records(str(tmp_path / "d.jsonl"))["train"]
    assert classify.encode_labels(records, "y", 2, None, "train").tolist() == [1, 0]


def test_a_missing_text_field_names_the_record(tmp_path):
    (tmp_path / "d.jsonl").write_text('{"sentence": "a", "y": 1}\n\n{"review": "b", "y": 0}\n')
    records = load_records(str(tmp_path / "d.jsonl"))["train"]
    assert sources.text_of(records[0], "sentence") == "a"
    with pytest.raises(DataError, match=r"d.jsonl line 3 has no field 'sentence' \(its fields"):
        sources.text_of(records[1], "sentence")


# --- The label count: a new classifier takes the training split's, an existing one keeps its own.

CLASSES = ("negative", "neutral", "positive")
FROM_DATA = (
    "model.num_labels=3 from the training split's 3 classes (the config said 2; the classifier "
    "is new)"
)


def _classes_csv(path: pathlib.Path, labels, n: int = 60) -> pathlib.Path:
    """``sentence,sentiment`` rows cycling through ``labels`` (names or class ids)."""
    rows = [f"a {WORDS[i % len(WORDS)]} film take {i},{labels[i % len(labels)]}" for i in range(n)]
    lines = ["sentence,sentiment", *rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def _own_data(source: pathlib.Path, **train):
    """The README's own-data example on ``source``: a ``model.num_labels=2`` config."""
    c = tiny_classifier(epochs=0, steps=2, eval_every=2, checkpoint_every=2, batch_size=8)
    c.data.update(source=str(source), text_field="sentence", label_field="sentiment")
    c.data.update(max_train_examples=0, length_buckets=1)
    c.train.update(train)
    assert c.model.num_labels == 2
    return c


@contextlib.contextmanager
def _info_lines():
    """The messages ptft_jax logs at INFO and above inside the block."""
    lines, logger, handler = [], logging.getLogger("ptft_jax"), logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    old = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        yield lines
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


def _classes_of(summary: dict) -> int:
    """The outputs of the classifier a run's summary holds."""
    return summary["state"]["params"]["classifier"]["kernel"].shape[-1]


@pytest.fixture(scope="module")
def three_classes(tmp_path_factory):
    """``(config, data, workdir, summary, logged lines)`` of a num_labels=2 config trained on a
    3-class CSV from random initialisation."""
    tmp = tmp_path_factory.mktemp("three")
    data = _classes_csv(tmp / "three.csv", CLASSES)
    c = _own_data(data)
    with _info_lines() as lines:
        summary = run(c, tmp / "w")
    return c, data, tmp / "w", summary, lines


@pytest.mark.slow
def test_a_new_classifier_takes_the_training_splits_classes(three_classes, tmp_path):
    c, _, w, summary, lines = three_classes
    assert FROM_DATA in lines
    assert summary["step"] == 2 and _classes_of(summary) == 3
    assert json.loads((w / "config.json").read_text())["model"]["num_labels"] == 3
    assert json.loads((w / "labels.json").read_text())["names"] == list(CLASSES)
    assert len(json.loads((w / "eval_test.json").read_text())["confusion_matrix"]) == 3
    export(str(w), str(tmp_path / "hf"))
    hf_config = json.loads((tmp_path / "hf" / "config.json").read_text())
    assert hf_config["id2label"] == {str(i): name for i, name in enumerate(CLASSES)}


@pytest.mark.slow
def test_the_same_command_resumes_with_the_resolved_count(three_classes):
    c, _, w, first, _ = three_classes
    with _info_lines() as lines:
        again = run(c, w)  # the config still says 2; the checkpoint's classifier has 3
    assert again["step"] == first["step"] == 2
    assert _classes_of(again) == 3
    assert not any("resuming with changed" in line for line in lines), lines
    assert json.loads((w / "config.json").read_text())["model"]["num_labels"] == 3


@pytest.mark.slow
def test_a_classifier_that_exists_keeps_its_count(three_classes, tmp_path):
    """init_from a 2-class classification workdir, or an explicit --config.model.num_labels=2,
    on 3-class data stops with one sentence, before the workdir is written."""
    _, data, _, _, _ = three_classes
    two = tmp_path / "two"
    run(_own_data(_classes_csv(tmp_path / "two.csv", ("negative", "positive")), steps=0), two)
    c = _own_data(data)
    c.init_from = str(two)
    fix = "3 distinct labels but model.num_labels is 2; set --config.model.num_labels=3."
    with pytest.raises(DataError, match=re.escape(fix)):
        run(c, tmp_path / "from_two")
    with pytest.raises(DataError, match=re.escape(fix)):
        run(_own_data(data), tmp_path / "explicit", cli_model_keys=("num_labels",))
    for w in ("from_two", "explicit"):
        assert not (tmp_path / w / "config.json").exists()


def test_integer_labels_count_to_the_largest_id(tmp_path):
    """Class ids 0..2 under a num_labels=2 config: 3 classes, validation ids checked against it."""
    folder = tmp_path / "ids"
    folder.mkdir()
    _classes_csv(folder / "train.csv", (0, 1, 2), 30)
    _classes_csv(folder / "validation.csv", (2, 0), 6)
    got = plan.make(_own_data(folder), tmp_path / "w")
    assert got.cfg.model.num_labels == got.model_cfg.num_labels == got.task.num_labels == 3
    assert got.data.label_names is None
    _classes_csv(folder / "validation.csv", (3, 0), 6)
    with pytest.raises(DataError, match=r"validation.csv line 2 has label 3, outside 0..2"):
        plan.make(_own_data(folder), tmp_path / "w")


def test_class_counts():
    names = classify.label_names([{"y": x} for x in "cabca"], "y", None)
    assert names == ["a", "b", "c"] and classify.class_count([], "y", names) == 3
    assert classify.class_count([{"y": 0}, {"y": 4.0}, {"y": 1}], "y", None) == 5
    with pytest.raises(DataError, match=r"single class \('pos' in 'y'\); a classifier needs"):
        classify.class_count([], "y", ["pos"])
    with pytest.raises(DataError, match=r"single class \(0 in 'y'\)"):
        classify.class_count([{"y": 0}, {"y": 0}], "y", None)
    with pytest.raises(DataError, match="has the label 0.5 in 'y', not a class id"):
        classify.class_count([{"y": 0}, {"y": 0.5}], "y", None)


def test_which_classifiers_take_the_training_splits_count(tmp_path):
    c = tiny_classifier()
    mlm, classifier = SimpleNamespace(task="mlm"), SimpleNamespace(task="classification")
    assert weights.classifier_labels(c, None, None)[1], "random init"
    assert weights.classifier_labels(c, mlm, None)[1], "init_from a model without a classifier"
    assert not weights.classifier_labels(c, classifier, None)[1]
    assert not weights.classifier_labels(c, None, None, ("num_labels",))[1], "the user's choice"
    regression = tiny_classifier()
    regression.model.num_labels = 1
    assert not weights.classifier_labels(regression, None, None)[1]
    distill = tiny_classifier()
    distill.task = "distill"
    assert not weights.classifier_labels(distill, None, None)[1], "the teacher fixes it"
    saved = {"task": "classification", "model": {"num_labels": 3}}  # config.saved_config's
    resumed, new = weights.classifier_labels(c, None, saved)
    assert resumed.model.num_labels == 3 and not new and c.model.num_labels == 2
    with pytest.raises(ConfigError, match="has model.num_labels=3 but the command line says 2"):
        weights.classifier_labels(c, None, saved, ("num_labels",))


def test_a_fresh_start_takes_its_label_names_from_its_own_data(tmp_path):
    """An attempt that died before its first checkpoint left W/labels.json behind; the next
    fresh start reads its names from the data, not from that file."""
    folder = tmp_path / "names"
    folder.mkdir()
    _classes_csv(folder / "train.csv", ("neg", "pos"), 30)
    _classes_csv(folder / "validation.csv", ("pos", "neg"), 6)
    w = tmp_path / "w"
    w.mkdir()
    (w / "labels.json").write_text(json.dumps({"names": ["bad", "good"]}) + "\n")
    got = plan.make(_own_data(folder), w)
    assert got.data.label_names == ["neg", "pos"]
