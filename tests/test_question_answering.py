"""Extractive question answering: SQuAD files, answer checks, windows over long contexts and
the answer's tokens in them, SQuAD's official scores, a tiny reader that learns, predict's
spans, export as *ForQuestionAnswering with equal logits, and one sentence for each mistake."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import transformers
from helpers import max_diff
from test_train import tiny_config

from ptft_jax import export, predict, scores, workdir
from ptft_jax.data import files, squad
from ptft_jax.errors import ConfigError, DataError
from ptft_jax.train import run

PEOPLE = "ann bob cyd dan eve fay gus hal ida jon".split()
PLACES = "oslo rome lima kyiv bern doha riga suva".split()
FILLER = "the a went to saw met in at with for and then some old new day".split()


def _article(rng, title: str) -> dict:
    """A paragraph of filler words and places holding one person, and the question "who ?",
    in SQuAD's layout; long paragraphs span several windows."""
    words = list(rng.choice(FILLER + PLACES, rng.integers(8, 40)))
    at = int(rng.integers(len(words) + 1))
    person = str(rng.choice(PEOPLE))
    context = " ".join(words[:at] + [person] + words[at:])
    start = len(" ".join(words[:at])) + (1 if at else 0)
    qas = [{"id": f"{title}-who", "question": "who ?",
            "answers": [{"text": person, "answer_start": start}]}]  # fmt: skip
    return {"title": title, "paragraphs": [{"context": context, "qas": qas}]}


def _squad_file(path: pathlib.Path, n: int, seed: int) -> pathlib.Path:
    rng = np.random.default_rng(seed)
    data = [_article(rng, f"t{seed}-{i}") for i in range(n)]
    path.write_text(json.dumps({"version": "1.1", "data": data}))
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("squad")
    _squad_file(folder / "train.json", 120, 0)
    _squad_file(folder / "dev.json", 20, 1)
    return folder


def _config(source, **train):
    defaults = dict(steps=150, eval_every=150, checkpoint_every=150, learning_rate=1e-3)
    c = tiny_config(**{**defaults, "batch_size": 16, "eval_batches": 0, **train})
    c.task = "question_answering"
    c.data.update(source=str(source), max_seq_length=48, doc_stride=8, length_buckets=2)
    return c


def test_squad_files_become_one_record_a_question(data_dir):
    records = files.read_file(data_dir / "dev.json")
    first = dict(records[0])
    assert set(first) == {"id", "title", "question", "context", "answers"}
    text, start = first["answers"]["text"][0], first["answers"]["answer_start"][0]
    assert first["context"][start : start + len(text)] == text
    assert records[0].origin.endswith("dev.json article 1 paragraph 1 question t1-0-who")


def test_windows_overlap_and_point_at_the_answer():
    tokenizer = transformers.AutoTokenizer.from_pretrained(_minilm())
    context = " ".join(f"sentence {i} says nothing ." for i in range(30)) + " the answer is here ."
    at = context.index("here")
    record = {"question": "where ?", "context": context,
              "answers": {"text": ["here"], "answer_start": [at]}}  # fmt: skip
    cfg = _data_cfg(max_seq_length=32, doc_stride=8)
    win = squad.windows([record], tokenizer, cfg)
    assert len(win) > 5 and set(win.example) == {0}
    held = [i for i in range(len(win)) if win.starts[i] > 0]
    assert held, "some window holds the answer"
    for i in range(len(win)):
        if win.starts[i]:
            a, b = win.offsets[i][win.starts[i], 0], win.offsets[i][win.ends[i], 1]
            assert context[a:b] == "here"
    # consecutive windows share doc_stride context tokens
    first = [o for o in win.offsets[0].tolist() if o[0] >= 0]
    second = [o for o in win.offsets[1].tolist() if o[0] >= 0]
    assert first[-8:] == second[:8]


def _minilm():
    from ptft_jax.data.builtin import extract

    return extract("minilm_l6")


def _data_cfg(**kw):
    c = tiny_config().data
    c.update(kw)
    return c


def test_squad_scores_are_the_official_ones():
    assert scores.normalize_answer("The  Denver Broncos!") == "denver broncos"
    got = scores.squad_metrics(
        ["Denver Broncos", "the broncos", "Carolina", ""],
        [["Denver Broncos"], ["Denver Broncos", "Broncos"], ["Panthers"], []],
    )
    assert got == {"exact_match": 0.75, "f1": 0.75}
    assert scores.squad_metrics(["denver"], [["Denver Broncos"]])["f1"] == pytest.approx(2 / 3)


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    w = tmp_path_factory.mktemp("reader") / "w"
    return w, run(_config(data_dir), w, quiet=True)


@pytest.mark.slow
def test_a_tiny_reader_learns_and_predicts_spans(trained):
    w, summary = trained
    rows = [json.loads(x) for x in (w / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in rows if r["split"] == "validation")
    assert first["step"] == 0 and first["exact_match"] < 0.2
    assert summary["validation"]["exact_match"] > 0.8 and summary["validation"]["f1"] > 0.8
    contexts = ["then gus went to riga with some old day", "oslo and doha saw ida"]
    rows = predict.predict(workdir.load(w), ["who ?", "who ?"], contexts)
    assert [r["answer"] for r in rows] == ["gus", "ida"]
    row = rows[0]
    assert contexts[0][row["start"] : row["end"]] == "gus"
    assert 0 < row["score"] <= 1


@pytest.mark.slow
def test_export_loads_as_a_question_answering_model_with_equal_logits(trained, tmp_path):
    import jax
    import torch

    from ptft_jax import steps

    w, _ = trained
    export.export(str(w), tmp_path)
    model = transformers.AutoModelForQuestionAnswering.from_pretrained(tmp_path).eval()
    assert type(model).__name__ == "BertForQuestionAnswering"
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    enc = tokenizer(["who ?"], ["ann went to oslo ."], return_tensors="np")
    with torch.no_grad():
        out = model(**{k: torch.tensor(v) for k, v in enc.items()})
    theirs = np.stack([out.start_logits.numpy(), out.end_logits.numpy()], -1)
    loaded = workdir.load(w)
    forward = steps.jit_forward(loaded.model_cfg, "question_answering", loaded.mesh)
    batch = {k: enc[k].astype(np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}
    with jax.set_mesh(loaded.mesh):
        ours = np.asarray(jax.device_get(forward(loaded.params, batch)))
    assert max_diff(ours, theirs) < 1e-4


def _bad_answer(folder: pathlib.Path) -> None:
    doc = json.loads((folder / "train.json").read_text())
    doc["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] += 1
    (folder / "train.json").write_text(json.dumps(doc))


@pytest.mark.parametrize(
    "case,error,message",
    [
        ("answer", DataError, r"question t0-0-who: the answer '\w+' is not at answer_start \d+"),
        ("stride", ConfigError, r"data.doc_stride=24 must be below half of data.max_seq_length=48"),
    ],
)
def test_bad_input_stops_with_one_sentence_and_writes_nothing(data_dir, tmp_path, case, error,
                                                              message):  # fmt: skip
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("train.json", "dev.json"):
        (folder / name).write_text((data_dir / name).read_text())
    c = _config(folder)
    if case == "answer":
        _bad_answer(folder)
    else:
        c.data.doc_stride = 24
    with pytest.raises(error, match=message):
        run(c, tmp_path / "w", quiet=True)
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_a_suite_scores_a_reading_task_beside_sentence_overlap(data_dir, tmp_path):
    from ptft_jax import suite

    mlm = tmp_path / "mlm"
    run(tiny_config(steps=2, checkpoint_every=2, eval_every=2, log_every=2), mlm, quiet=True)
    (tmp_path / "qa.toml").write_text(
        f'name = "qa"\nlearning_rates = [1e-3]\nseeds = [0]\n[tasks.toy]\n'
        f'task = "question_answering"\nsource = "{data_dir}"\nepochs = 6\nbatch_size = 16\n'
        'metric = ["exact_match", "f1"]\nmax_seq_length = 48\ndoc_stride = 8\n'
        'splits = {train = "train", validation = "validation"}\n'
        'report = {dev = "validation"}\n'
    )
    argv = ["--suite", str(tmp_path / "qa.toml"), "--init_from", str(mlm), "--baselines", "tfidf"]
    suite.main([*argv, "--workdir", str(tmp_path / "S"), "--devices_per_job", "4"])
    report = json.loads((tmp_path / "S" / "suite.json").read_text())
    scores_ = report["tasks"]["toy"]["scores"]
    assert report["tasks"]["toy"]["metric"] == "exact_match/f1" and not report["failed"]
    assert set(scores_) == {"pretrained", "tfidf"} and scores_["pretrained"]["median"] > 0.4
    # one sentence, the whole context: its words less "who" hold the person among others
    assert 0 < scores_["tfidf"]["median"] < 0.5
    assert "is sentence overlap" in (tmp_path / "S" / "suite.md").read_text()


def test_decoding_picks_the_best_span_over_windows_and_no_answer_in_v2():
    from ptft_jax.tasks.question_answering import QuestionAnswering

    offsets = np.array([[-1, -1], [0, 3], [4, 9], [10, 12], [-1, -1]])  # [CLS] abc defgh ij [SEP]
    win = squad.Windows([np.zeros(5)] * 2, [np.zeros(5)] * 2, np.array([0, 0]), [offsets] * 2,
                        np.zeros(2, np.int64), np.zeros(2, np.int64))  # fmt: skip
    low, high = np.zeros((5, 2)), np.zeros((5, 2))
    low[1, 0] = low[2, 1] = 1.0  # "abc defgh": 2 in the first window
    high[2, 0] = high[3, 1] = 2.0  # "defgh ij": 4 in the second
    high[4] = 9.0  # [SEP] scores highest, but it is not in the context
    high[0] = 2.5  # [CLS]: "no answer" 5 > 4
    v1 = QuestionAnswering(seq_len=5)
    assert v1.spans(win, [low, high], 1) == [(4.0, 4, 12)]
    assert QuestionAnswering(seq_len=5, max_answer_length=1).spans(win, [low, high], 1)[0][0] < 4
    # v2's null score is the lowest [CLS] score over the windows (0 in the first): 4 wins
    assert QuestionAnswering(seq_len=5, with_negative=True).spans(win, [low, high], 1) == [
        (4.0, 4, 12)
    ]
    low[0] = 3.0  # now every window scores "no answer" at 5 or more: it wins
    v2 = QuestionAnswering(seq_len=5, with_negative=True)
    assert v2.spans(win, [low, high], 1) == [(5.0, -1, -1)]
