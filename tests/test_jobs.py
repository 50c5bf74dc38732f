"""The job runner (``ptft_jax.jobs``): four jobs side by side on two devices each give the numbers
they give one at a time on all eight; a rerun skips the finished ones; a ``kill -9`` mid-job
followed by a rerun ends as an uninterrupted run; a failed job is one line and the others
finish. The jobs are a learning curve's sizes (``learning_curve.size_jobs``)."""

import io
import json
import logging
import pathlib
import signal
import subprocess
import sys
import time

import pytest
from helpers import FLOAT_TOLERANCE
from test_classify import tiny_classifier

from ptft_jax import errors, jobs, learning_curve, metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]
SIZES = (16, 32, 48, 64)
STEPS, EVALS = 6, 2  # evaluations at steps 0, 3 and 6; checkpoints at 2, 4 and 6
CONFIG = """
import sys
sys.path.insert(0, {tests!r})
from test_jobs import tiny

def get_config():
    return tiny()
"""


def tiny():
    """A classifier small enough to train four times over in seconds, on any device count."""
    c = tiny_classifier(eval_batches=2, checkpoint_every=2, keep_checkpoints=3)
    c.model.num_hidden_layers = 1
    c.data.length_buckets = 1  # one compiled shape for every size
    c.mesh.update(data=-1, fsdp=1, tensor=1)  # the devices a job is given
    return c


def _jobs(w: pathlib.Path) -> list[jobs.Job]:
    return learning_curve.size_jobs(tiny(), w, SIZES, STEPS, EVALS)


class _Seen(logging.Handler):
    """Every record the terminal's handlers would get."""

    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def _run(w, devices_per_job):
    seen, stream = _Seen(), io.StringIO()
    logging.getLogger().addHandler(seen)
    try:
        out = jobs.run_jobs(_jobs(w), devices_per_job, "sizes", stream)
    finally:
        logging.getLogger().removeHandler(seen)
    return out, stream.getvalue(), seen.records


@pytest.fixture(scope="module")
def one_at_a_time(tmp_path_factory):
    return _run(tmp_path_factory.mktemp("one"), 0)[0]


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory):
    w = tmp_path_factory.mktemp("side")
    return (w, *_run(w, 2))


def _numbers(summary: dict) -> dict:
    keys = ("step", "best_step", "test", "validation", "eval_loss", "eval_accuracy")
    return {k: summary[k] for k in keys}


def _same(got: dict, want: dict) -> None:
    """Counts, and the fractions of counts, exactly; losses within float32 rounding."""
    for split in ("test", "validation"):
        for key, value in want[split].items():
            if key == "loss":
                assert got[split][key] == pytest.approx(value, **FLOAT_TOLERANCE), (split, key)
            else:
                assert got[split][key] == value, (split, key)
    assert got["eval_loss"] == pytest.approx(want["eval_loss"], **FLOAT_TOLERANCE)
    for key in ("step", "best_step", "eval_accuracy"):
        assert got[key] == want[key], key


def test_a_failed_job_is_one_line_and_the_others_finish(one_at_a_time, tmp_path, monkeypatch):
    work = _jobs(tmp_path)[:3]
    work[0].cfg.data.source = str(tmp_path / "missing.csv")
    real = jobs.train.run

    def run(cfg, workdir, **kw):  # an error no user can cause, as a bug would raise
        if workdir.name == "n32":
            raise RuntimeError("a bug\nits second line")
        return real(cfg, workdir, **kw)

    monkeypatch.setattr(jobs.train, "run", run)
    stream = io.StringIO()
    # Side by side on two devices each: the failures end early, the other goes on.
    bad, bug, good = jobs.run_jobs(work, devices_per_job=2, progress=stream)
    assert bad.summary is None and "missing.csv" in bad.error and "\n" not in bad.error
    log = tmp_path / "n32" / "errors.log"
    assert bug.error == f"RuntimeError: a bug (traceback in {log})"
    assert "Traceback" in log.read_text() and "its second line" in log.read_text()
    assert not (tmp_path / "n16" / "job.json").exists()  # a failed job has no record
    assert good.error is None and (tmp_path / "n48" / "job.json").exists()
    _same(_numbers(good.summary), _numbers(one_at_a_time[2].summary))
    lines = stream.getvalue().splitlines()  # each failure as it fails, then the one that ran
    assert sorted(lines[:2]) == [f"failed: n=16: {bad.error}", f"failed: n=32: {bug.error}"]
    assert len(lines) == 3 and lines[2].startswith("jobs 3/3: n=48 done in"), lines


@pytest.mark.slow
def test_four_jobs_on_two_devices_each_run_at_once_and_equal_one_at_a_time(
    one_at_a_time, side_by_side
):
    _, beside, lines, _ = side_by_side
    assert [o.job.name for o in beside] == [f"n={n}" for n in SIZES]  # the order of the list
    assert all(o.error is None and not o.skipped for o in one_at_a_time + beside)
    # Side by side: four disjoint pairs of devices, a mesh of two each, all running at once.
    assert all(len(o.devices) == 2 for o in beside)
    assert sorted(d for o in beside for d in o.devices) == list(range(8))
    assert all(o.summary["mesh"] == {"data": 2, "fsdp": 1, "tensor": 1} for o in beside)
    assert max(o.started for o in beside) < min(o.started + o.seconds for o in beside)
    # One at a time: all eight devices, one job after the other in the list's order.
    assert all(o.summary["mesh"]["data"] == 8 and o.devices == () for o in one_at_a_time)
    for a, b in zip(one_at_a_time, one_at_a_time[1:], strict=False):
        assert a.started + a.seconds <= b.started
    # The same numbers: a job's depend on its config, not on what runs beside it. The
    # reductions over 8 or 2 batch shards round differently: losses agree to float32
    # rounding (seen: one test loss 9e-8 relative apart), counts exactly.
    for alone, among in zip(one_at_a_time, beside, strict=True):
        _same(_numbers(among.summary), _numbers(alone.summary))
    # The best checkpoint's validation numbers (those the test split is scored with).
    for o in beside:
        s = o.summary
        assert s["validation"]["checkpoint"] == s["test"]["checkpoint"] == "best"
        assert s["validation"]["step"] == s["test"]["step"] == s["best_step"] in (3, 6)
        rows = [json.loads(x) for x in (o.job.workdir / "metrics.jsonl").read_text().splitlines()]
        at_best = [r for r in rows if r["split"] == "validation" and r["step"] == s["best_step"]]
        assert at_best[0]["accuracy"] == s["validation"]["accuracy"]
    # One plain line per finished job on the progress stream (not a terminal).
    assert lines.count("\n") == 4 and all(f"n={n} done in" in lines for n in SIZES), lines


def test_each_job_logs_to_its_own_train_log_not_the_terminal(side_by_side):
    w, beside, _, seen = side_by_side
    for o in beside:
        log = (o.job.workdir / "train.log").read_text()
        assert f"job {o.job.name}: training in {o.job.workdir}" in log
        assert "done: step 6" in log and "compiled the train step" in log
        others = [n for n in SIZES if f"n={n}" != o.job.name]
        assert not any(f"/n{n}" in log or f"job n={n}" in log for n in others), log
    assert not [r.getMessage() for r in seen if r.name.startswith("ptft_jax")]


def test_a_rerun_skips_finished_jobs_and_a_changed_config_is_one_sentence(side_by_side):
    w, beside, _, _ = side_by_side
    files = sorted(p for p in w.rglob("*") if p.is_file() and p.name != "train.log")
    before = {p: p.stat().st_mtime_ns for p in files}
    stream = io.StringIO()
    again = jobs.run_jobs(_jobs(w), 2, "sizes", stream)
    assert all(o.skipped and o.error is None for o in again)
    assert [o.summary for o in again] == [o.summary for o in beside]  # read back as returned
    assert sorted(p for p in w.rglob("*") if p.is_file() and p.name != "train.log") == files
    assert {p: p.stat().st_mtime_ns for p in files} == before  # nothing trained or written
    assert stream.getvalue().count("done earlier") == 4
    record = json.loads((w / "n16" / "job.json").read_text())
    assert sorted(record) == ["config", "name", "summary"] and record["name"] == "n=16"
    assert record["config"]["data"]["max_train_examples"] == 16

    changed = _jobs(w)[:1]
    changed[0].cfg.train.learning_rate = 5e-4
    (out,) = jobs.run_jobs(changed, progress=stream)
    assert not out.skipped and out.summary is None
    assert out.error == (
        f"{w / 'n16'} finished with another config (train.learning_rate=0.001 there, 0.0005 "
        f"now); pass another workdir for this config, or delete {w / 'n16' / 'job.json'} to "
        f"train on in {w / 'n16'} with it."
    )
    assert f"failed: n=16: {out.error}" in stream.getvalue()


@pytest.mark.slow
def test_a_killed_learning_curve_resumes_and_ends_as_an_uninterrupted_one(one_at_a_time, tmp_path):
    (tmp_path / "c.py").write_text(CONFIG.format(tests=str(ROOT / "tests")))
    w = tmp_path / "w"
    sizes = ",".join(map(str, SIZES))
    command = [sys.executable, "-m", "ptft_jax.learning_curve", "--config", str(tmp_path / "c.py")]
    command += ["--workdir", str(w), "--sizes", sizes, "--steps", str(STEPS)]
    command += ["--evals", str(EVALS), "--out", str(tmp_path / "lc.png")]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT)
    deadline = time.time() + 300
    # kill -9 while the second size trains: after its first checkpoint, before it finishes
    while proc.poll() is None and time.time() < deadline:
        if (w / "n32" / "checkpoints" / "2").is_dir():
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert (w / "n16" / "job.json").exists() and not (w / "n32" / "job.json").exists()

    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sizes 1/4: n=16 done earlier" in done.stderr
    assert "resuming from step" in (w / "n32" / "train.log").read_text()
    rows = json.loads((w / "learning_curve.json").read_text())
    # The same mesh (all eight devices) as the uninterrupted run: the same numbers, exactly.
    want = [
        {"n": n, "steps": o.summary["step"], **o.summary["test"]}
        for n, o in zip(SIZES, one_at_a_time, strict=True)
    ]
    assert rows == want


def test_devices_per_job_that_does_not_divide_the_devices_is_one_sentence(tmp_path):
    with pytest.raises(errors.ConfigError) as e:
        jobs.run_jobs(_jobs(tmp_path), devices_per_job=3)
    assert str(e.value) == (
        "devices_per_job=3 does not divide the 8 local devices; pass one of 1, 2, 4, 8, or 0 "
        "to run one job at a time on all of them."
    )
    assert not any(tmp_path.iterdir())
    with pytest.raises(errors.ConfigError, match="two jobs share the name n=16"):
        jobs.run_jobs(_jobs(tmp_path)[:1] * 2)


def test_the_bar_counts_jobs_and_the_time_left_from_those_run():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    screen = Terminal()
    bar = metrics.JobsBar(8, "grid", 4, screen)
    bar.finished("a", None)  # finished in an earlier invocation: no time to go by
    assert "1/8" in screen.getvalue() and "left" not in screen.getvalue()
    bar.finished("b", 10.0)
    bar.failed("c", "The data is missing; fix it.", 20.0)
    assert "failed: c: The data is missing; fix it.\n" in screen.getvalue()
    assert "3/8" in screen.getvalue() and "left 19s" in screen.getvalue()  # 15s x 5 jobs / 4
    bar.close()
    lines = io.StringIO()  # not a terminal: one line per job
    bar = metrics.JobsBar(3, "grid", 1, lines)
    bar.finished("a", None)
    bar.finished("b", 30.0, " (test accuracy 0.5000)")
    assert lines.getvalue().splitlines() == [
        "grid 1/3: a done earlier",
        "grid 2/3: b done in 30s (test accuracy 0.5000), ETA 30s",
    ]
