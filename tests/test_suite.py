"""The evaluation suite end to end: a toy suite (2 tiny tasks x 2 learning rates x 2 seeds,
pretrained and random init, TF-IDF) from a tiny MLM run; its report against its own jobs; a
rerun that trains nothing; kill -9 during a suite and a rerun equal to the uninterrupted suite;
GLUE's own folder layout; and each mistake's one sentence, with nothing written."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from test_train import tiny_config

from ptft_jax import errors, suite, suite_report, suitespec
from ptft_jax.train import run

GLUE = pathlib.Path(__file__).parent / "fixtures" / "glue"
WORDS = {0: "dull bad boring awful weak".split(), 1: "fine good great lovely strong".split()}


def _write_toy_data(folder: pathlib.Path) -> None:
    """A single-text task (which class's words a line uses) and a pair regression (how many
    words two lines share), made of the words of a fixed seed."""
    import numpy as np

    rng = np.random.default_rng(0)
    for split, n in (("train", 48), ("validation", 16), ("test", 16)):
        rows, pairs = [], []
        for _ in range(n):
            label = int(rng.integers(2))
            rows.append({"sentence": " ".join(rng.choice(WORDS[label], 4)), "y": label})
            a, b = rng.choice(WORDS[0] + WORDS[1], 3), rng.choice(WORDS[0] + WORDS[1], 3)
            pairs.append(
                {
                    "text": " ".join(a),
                    "text_pair": " ".join(b),
                    "label": float(len(set(a) & set(b))),
                }
            )
        for name, records in (("words", rows), ("overlap", pairs)):
            (folder / name).mkdir(parents=True, exist_ok=True)
            text = "".join(json.dumps(r) + "\n" for r in records)
            (folder / name / f"{split}.jsonl").write_text(text)


TOY = """
name = "toy"
learning_rates = [1e-3, 3e-3]
seeds = [0, 1]
[defaults]
epochs = 2
batch_size = 16
max_seq_length = 32
max_train_examples = 32
[tasks.words]
source = "words"
text_field = "sentence"
label_field = "y"
metric = ["accuracy", "f1"]
[tasks.overlap]
title = "Overlap"
source = "overlap"
text_pair_field = "text_pair"
num_labels = 1
metric = ["pearson", "spearman"]
"""


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """A tiny MLM run keeping two checkpoints (steps 2 and 4), positions for GLUE's 128."""
    w = tmp_path_factory.mktemp("suite") / "mlm"
    c = tiny_config(steps=4, checkpoint_every=2, eval_every=4, log_every=2)
    c.model.max_position_embeddings = 128
    run(c, w)
    return w


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    folder = tmp_path_factory.mktemp("toy")
    _write_toy_data(folder)
    (folder / "toy.toml").write_text(TOY)
    return folder / "toy.toml"


def _args(**kw):
    argv = []
    for key, value in kw.items():
        argv += [f"--{key}"] + ([str(value)] if value != "" else [])
    return argv


@pytest.fixture(scope="module")
def toy_run(pretrained, toy, tmp_path_factory):
    s = tmp_path_factory.mktemp("toy-run") / "S"
    t0 = time.time()
    suite.main(_args(suite=toy, init_from=pretrained, workdir=s, devices_per_job=2))
    return s, time.time() - t0


def _scores(report: dict) -> dict:
    return {t: v["scores"] for t, v in report["tasks"].items()} | {"average": report["average"]}


@pytest.mark.slow
def test_toy_suite_reports_what_its_jobs_measured(toy_run, toy):
    s, _ = toy_run
    report = json.loads((s / "suite.json").read_text())
    assert report["suite"] == "toy" and report["starts"] == ["pretrained", "random", "tfidf"]
    assert len(report["jobs"]) == 2 * 2 * 2 * 2 and not report["failed"]
    spec = suitespec.load(str(toy))
    for task in ("words", "overlap"):
        scores = report["tasks"][task]["scores"]
        for start in ("pretrained", "random"):
            mine = [j for j in report["jobs"] if j["task"] == task and j["start"] == start]
            assert scores[start] == suite_report.select(spec.task(task), mine)
            assert scores[start]["learning_rate"] in (1e-3, 3e-3)
            assert scores[start]["min"] <= scores[start]["median"] <= scores[start]["max"]
        assert scores["tfidf"]["learning_rate"] is None
        assert scores["tfidf"]["min"] == scores["tfidf"]["median"] == scores["tfidf"]["max"]
    assert report["pretraining_gain"] == pytest.approx(
        report["average"]["pretrained"] - report["average"]["random"]
    )
    # the jobs fine-tuned what they say: the pretrained start from the MLM run, the random one
    # the same shape with the MLM run's tokenizer
    job = json.loads((s / "jobs/words/pretrained/lr0.001-seed0/config.json").read_text())
    rand = json.loads((s / "jobs/words/random/lr0.001-seed0/config.json").read_text())
    assert job["init_from"] and not rand["init_from"]
    assert rand["model"]["hidden_size"] == job["model"]["hidden_size"] == 32
    assert rand["data"]["tokenizer"] == str(pathlib.Path(job["init_from"]) / "tokenizer")
    md = (s / "suite.md").read_text()
    assert "| random init |" in md and "| TF-IDF + linear |" in md and "Overlap" in md
    assert (s / "suite.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_rerun_trains_nothing_and_compare_reads_it(toy_run, toy, pretrained, capsys):
    s, _ = toy_run
    before = (s / "suite.json").read_text()
    stamps = {p: p.stat().st_mtime_ns for p in s.glob("jobs/*/*/*/metrics.jsonl")}
    suite.main(_args(suite=toy, init_from=pretrained, workdir=s))
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert json.loads((s / "suite.json").read_text()) == json.loads(before)
    capsys.readouterr()
    suite.main(["--compare", str(s), str(s)])
    table = capsys.readouterr().out
    assert table.count(f"| {s} | {pretrained} |") == 2 and "| average |" in table


@pytest.mark.slow
def test_kill_9_during_a_suite_then_rerun_equals_the_uninterrupted_suite(
    toy_run, toy, pretrained, tmp_path
):
    s_ref, _ = toy_run
    s = tmp_path / "S"
    argv = _args(suite=toy, init_from=pretrained, workdir=s, devices_per_job=2)
    cmd = [sys.executable, "-m", "ptft_jax.suite", *argv]
    env = {**os.environ, "PTFT_JAX_TCMALLOC": "0"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    # killed once some jobs have finished and the next one has begun
    while time.time() < deadline and proc.poll() is None:
        done = list(s.glob("jobs/*/*/*/job.json"))
        started = list(s.glob("jobs/*/*/*/metrics.jsonl"))
        if len(done) >= 3 and len(started) > len(done):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the suite ended before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in s.glob("jobs/*/*/*/job.json")}
    assert 3 <= len(finished) < 16
    suite.main(argv)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # not rerun
    got = json.loads((s / "suite.json").read_text())
    want = json.loads((s_ref / "suite.json").read_text())
    assert _scores(got) == _scores(want)


@pytest.mark.slow
def test_glue_from_its_own_folder_layout(pretrained, tmp_path):
    s = tmp_path / "S"
    suite.main(
        _args(
            suite="glue",
            data_dir=GLUE,
            init_from=pretrained,
            workdir=s,
            quick="",
            baselines="tfidf",
        )
    )
    report = json.loads((s / "suite.json").read_text())
    assert list(report["tasks"]) == "cola sst2 mrpc stsb qqp mnli qnli rte".split()
    assert len(report["jobs"]) == 8 and not report["failed"], report["failed"]
    mnli = report["tasks"]["mnli"]["scores"]["pretrained"]
    assert set(mnli["columns"]) == {"m", "mm"}  # matched and mismatched dev
    assert report["tasks"]["mrpc"]["metric"] == "f1/accuracy"
    scores = [report["tasks"][t]["scores"]["pretrained"]["median"] for t in report["tasks"]]
    assert report["average"]["pretrained"] == pytest.approx(sum(scores) / 8)
    assert (
        "| start | CoLA (mcc) | SST-2 (accuracy) | MRPC (f1/accuracy) |"
        in (s / "suite.md").read_text()
    )


@pytest.mark.slow
def test_task_adaptive_pretraining_continues_mlm_on_each_tasks_training_text(
    toy, pretrained, tmp_path
):
    """``--tapt_steps``: per task and start, an MLM run from the start on the task's training
    text (pairs' second texts too, no evaluation text), then the grid from there, a row beside
    the start fine-tuned directly, and the gain in the report."""
    s = tmp_path / "S"
    argv = _args(suite=toy, init_from=pretrained, workdir=s, learning_rates="1e-3", seeds="0")
    suite.main(argv + ["--baselines", "none", "--tapt_steps", "2", "--tasks", "overlap"])
    report = json.loads((s / "suite.json").read_text())
    assert report["starts"] == ["pretrained", "pretrained + TAPT"] and not report["failed"]
    assert len(report["jobs"]) == 2
    avg = report["average"]
    assert report["tapt_gain"] == pytest.approx(avg["pretrained + TAPT"] - avg["pretrained"])
    assert "Task-adaptive pretraining (2 MLM steps" in (s / "suite.md").read_text()
    mlm = json.loads((s / "tapt/overlap/pretrained/config.json").read_text())
    assert mlm["task"] == "mlm" and mlm["init_from"] == str(pretrained)
    assert mlm["train"]["steps"] == 2 and mlm["model"]["hidden_size"] == 32
    train = [json.loads(x) for x in (s / "data/overlap/train.jsonl").read_text().splitlines()]
    tapt = [json.loads(x)["text"] for x in (s / "tapt/overlap/text/train.jsonl").open()]
    assert set(tapt) == {r[f] for r in train for f in ("text", "text_pair")}
    assert len(tapt) == len(set(tapt))
    job = json.loads((s / "jobs/overlap/pretrained+TAPT/lr0.001-seed0/config.json").read_text())
    assert job["init_from"] == str(s / "tapt/overlap/pretrained")
    # what each run read, in its log: the [UNK] share of every split
    log = (s / "jobs/overlap/pretrained+TAPT/lr0.001-seed0/train.log").read_text()
    assert f"[UNK] share of {s / 'data/overlap'}: train " in log and ", test " in log
    log = (s / "tapt/overlap/pretrained/train.log").read_text()
    assert f"[UNK] share of {s / 'tapt/overlap/text'}: train " in log


MISTAKES = [
    (dict(suite="gleu"), "unknown suite 'gleu'; use one of glue, offline-en, offline-zh"),
    (dict(suite="glue", tasks="cola,wnli"), "--tasks names 'wnli', which suite glue does not have"),
    (dict(suite="glue", tasks="mnli", data_dir="{glue_missing}"), "has no MNLI/dev_mismatched.tsv"),
    (
        dict(init_from="{pretrained}@3"),
        "keeps no checkpoint of step 3; pass one of its kept steps (2, 4)",
    ),
    (dict(init_from="{data}"), "is neither a finished workdir nor hf:<folder or hub id>"),
    (dict(init_from="{data}@all"), "is not a workdir with kept checkpoints"),
    (dict(learning_rates="1e-4,x"), "--learning_rates '1e-4,x' is not a comma-separated list"),
    (dict(baselines="bert"), "--baselines names 'bert'; use random, tfidf or both"),
    (dict(tapt_steps=-5), "--tapt_steps must be 0 (no task-adaptive pretraining) or more"),
]


@pytest.mark.parametrize("given,expected", MISTAKES, ids=[e for _, e in MISTAKES])
def test_each_mistake_is_one_sentence_and_writes_nothing(given, expected, pretrained, tmp_path):
    import shutil

    missing = tmp_path / "glue"
    shutil.copytree(GLUE, missing)
    (missing / "MNLI" / "dev_mismatched.tsv").unlink()
    (tmp_path / "data.jsonl").write_text('{"text": "a"}\n')
    names = {"glue_missing": missing, "pretrained": pretrained, "data": tmp_path / "data.jsonl"}
    kw = {
        "suite": "glue",
        "data_dir": GLUE,
        "tasks": "rte",
        "init_from": pretrained,
        "workdir": tmp_path / "S",
    }
    kw.update({k: str(v).format(**names) for k, v in given.items()})
    with pytest.raises(errors.UserError) as e:
        suite.main(_args(**kw))
    assert expected in str(e.value), str(e.value)
    assert not (tmp_path / "S").exists()


def test_a_mistake_on_the_command_line_is_one_line_and_exit_2(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "ptft_jax.suite",
        "--suite",
        "glue",
        "--workdir",
        str(tmp_path / "S"),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True)
    assert done.returncode == 2 and done.stderr.strip().count("\n") == 0, done.stderr
    assert "--init_from is required" in done.stderr and not (tmp_path / "S").exists()
