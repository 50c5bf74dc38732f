"""Tests for GLUE as a data source: the local layout (tests/fixtures/glue, hand-written rows in
GLUE's own files), label ids in the hub's order, the hub path, and the sentences of errors."""

from __future__ import annotations

import logging
import pathlib
import shutil

import pytest

from ptft_jax.data import glue
from ptft_jax.errors import DataError

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "glue"
PAIRS = {"mrpc", "stsb", "qqp", "mnli", "qnli", "rte"}
# (train, each dev split) records of the fixture; QQP's train has one short row besides
COUNTS = {task: (8, 6) for task in glue.TASKS} | {"mnli": (9, 6)}


@pytest.fixture
def copy(tmp_path) -> pathlib.Path:
    """A copy of the fixture to break."""
    return pathlib.Path(shutil.copytree(FIXTURE, tmp_path / "glue"))


def test_the_tables_agree():
    assert set(glue.LABELS) == set(glue.SPLITS) == set(glue.LAYOUTS) == set(glue.TASKS)
    assert "wnli" not in glue.TASKS
    assert glue.SPLITS["mnli"] == ("train", "validation_matched", "validation_mismatched")
    for task in glue.TASKS:
        assert len(glue.LAYOUTS[task].files) == len(glue.SPLITS[task])


@pytest.mark.parametrize("task", glue.TASKS)
def test_each_task_loads_with_its_counts_fields_and_label_ids(task):
    got = glue.load_glue(task, str(FIXTURE))
    assert tuple(got) == glue.SPLITS[task]
    train, dev = COUNTS[task]
    assert [len(v) for v in got.values()] == [train] + [dev] * (len(got) - 1)
    fields = ["text", "text_pair", "label"] if task in PAIRS else ["text", "label"]
    names = glue.LABELS[task]
    for split, records in got.items():
        for r in records:
            assert list(r) == fields and all(isinstance(r[f], str) and r[f] for f in fields[:-1])
            assert r.origin.startswith(f"{FIXTURE}/{glue.LAYOUTS[task].folder}/")
        labels = {r["label"] for r in records}
        if names:  # every class in every split, as ids
            assert labels == set(range(len(names))), (task, split)
        else:
            assert all(isinstance(x, float) and 0 <= x <= 5 for x in labels)


def test_labels_map_to_the_hubs_ids_and_text_is_kept_as_written():
    mnli = glue.load_glue("mnli", str(FIXTURE))
    # neutral, entailment, ..., contradiction: the hub's order is entailment 0, neutral 1
    assert [r["label"] for r in mnli["train"]] == [1, 0, 0, 0, 1, 0, 1, 2, 2]
    assert mnli["validation_mismatched"][2]["text_pair"] == "We serve a meal of Florentine terrine."
    assert mnli["train"][0].origin == f"{FIXTURE}/MNLI/train.tsv line 2"
    rte = glue.load_glue("rte", str(FIXTURE))["train"]
    assert [r["label"] for r in rte[:3]] == [1, 0, 0]  # not_entailment is 1
    cola = glue.load_glue("cola", str(FIXTURE))["train"]  # no header: line 1 is a record
    assert cola[2] == {"text": "They drank the pub.", "label": 0}
    assert cola[0].origin == f"{FIXTURE}/CoLA/train.tsv line 1"
    sst2 = glue.load_glue("sst2", str(FIXTURE))["train"]  # a stray quote stays in its cell
    assert sst2[4] == {"text": 'the greatest musicians " of the century ', "label": 1}
    mrpc = glue.load_glue("mrpc", str(FIXTURE))["train"]  # the header's byte-order mark
    assert mrpc[0]["label"] == 1 and mrpc[0]["text"].startswith("Amrozi accused")
    stsb = glue.load_glue("stsb", str(FIXTURE))["validation"]
    assert [r["label"] for r in stsb[:2]] == [5.0, 4.75]


def test_a_short_row_is_counted_in_one_line(caplog):
    with caplog.at_level(logging.INFO, logger="ptft_jax"):
        got = glue.load_glue("qqp", str(FIXTURE))
    assert len(got["train"]) == 8
    at = f"{FIXTURE}/QQP/train.tsv line 7"
    assert [r.getMessage() for r in caplog.records] == [
        f"GLUE qqp: left out 1 row with too few tab-separated cells (first at {at})"
    ]


def test_a_file_of_only_short_rows_stops(copy):
    (copy / "RTE" / "dev.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\tonly one\n")
    with pytest.raises(DataError, match=r"Every row of .*RTE/dev.tsv has too few tab-separated"):
        glue.load_glue("rte", str(copy))


def test_a_missing_file_names_it_and_the_fix(copy):
    (copy / "MNLI" / "dev_mismatched.tsv").unlink()
    with pytest.raises(DataError) as e:
        glue.load_glue("mnli", str(copy))
    assert str(e.value) == (
        f"GLUE folder {copy} has no MNLI/dev_mismatched.tsv; download GLUE into {copy} (its own "
        "layout) or run a subset with --tasks."
    )
    with pytest.raises(DataError, match=r"GLUE folder .*nowhere does not exist; pass --data_dir"):
        glue.load_glue("cola", str(copy / "nowhere"))


def test_an_unknown_task_lists_the_known_ones():
    known = "cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte"
    with pytest.raises(DataError, match=rf"Unknown GLUE task 'sst-5'; use one of {known} \(with"):
        glue.load_glue("sst-5", str(FIXTURE))
    with pytest.raises(DataError, match=r"'wnli' \(WNLI is left out, as the papers"):
        glue.load_glue("wnli", str(FIXTURE))


def test_a_wrong_header_or_label_names_the_file(copy):
    path = copy / "SST-2" / "train.tsv"
    path.write_text("text\tlabel\ngood\t1\n")
    with pytest.raises(DataError, match=rf"{path} has no column 'sentence' in its header"):
        glue.load_glue("sst2", str(copy))
    path = copy / "RTE" / "train.tsv"
    path.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n")
    with pytest.raises(DataError, match=rf"{path} line 2 has the label 'maybe', not one of GLUE"):
        glue.load_glue("rte", str(copy))


class _Split:
    def __init__(self, rows):
        self.rows = rows

    def to_list(self):
        return self.rows


def test_the_hub_rows_are_normalised_and_an_unreachable_hub_names_data_dir(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake(name, config):
        calls.append((name, config))
        row = {"premise": "p", "hypothesis": "h", "label": 2, "idx": 0}
        splits = ["train", "validation_matched", "validation_mismatched", "test_matched"]
        return {split: _Split([row, row | {"label": 0}]) for split in splits}

    monkeypatch.setattr(datasets, "load_dataset", fake)
    got = glue.load_glue("mnli")
    assert calls == [("nyu-mll/glue", "mnli")] and tuple(got) == glue.SPLITS["mnli"]
    assert got["validation_mismatched"][1] == {"text": "p", "text_pair": "h", "label": 0}
    assert got["train"][0].origin == "hf:nyu-mll/glue/mnli train row 1"

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub (LocalEntryNotFoundError)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    with pytest.raises(DataError, match=r"hub to load nyu-mll/glue \(cola\); pass --data_dir"):
        glue.load_glue("cola")
