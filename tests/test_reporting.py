"""What a run and its commands say about themselves: which checkpoint and step each number comes
from (the summary line, evaluate, predict, ``--checkpoint``), command-line values that win over
the config file's, progress in a log file, and no warning about a setting the user did not make."""

import io
import json
import logging
import re
import subprocess
import sys

import jax
import numpy as np
import pytest
from test_classify import tiny_classifier

from ptft_jax import config as config_lib
from ptft_jax import hf, metrics, tasks, weights, workdir
from ptft_jax.config import command_line_wins
from ptft_jax.data import store
from ptft_jax.errors import ConfigError
from ptft_jax.evaluate import evaluate
from ptft_jax.train import run


def test_the_checkpoint_is_best_or_last_or_a_kept_step():
    choose = workdir.choose
    assert choose(None, [2, 4, 6], 4, "W") == ("best", 4), "the best when the run keeps one"
    assert choose(None, [2, 4, 6], None, "W") == ("last", 6), "else the last"
    assert choose("last", [2, 4, 6], 4, "W") == ("last", 6)
    assert choose("4", [2, 4, 6], 4, "W") == ("kept", 4)
    assert choose(2, [2, 4, 6], None, "W") == ("kept", 2)
    assert choose("6", [2, 4, 6], 4, "W") == ("last", 6)
    with pytest.raises(ConfigError, match=r"^W keeps no checkpoint of step 5; pass one of its "):
        choose("5", [2, 4, 6], 4, "W")
    with pytest.raises(
        ConfigError, match=r"kept steps \(2, 4, 6\), last or best as --checkpoint STEP\.$"
    ):
        choose("5", [2, 4, 6], 4, "W")
    with pytest.raises(ConfigError, match=r"W keeps no best checkpoint .* kept steps: 3, 6\.$"):
        choose("best", [3, 6], None, "W")
    with pytest.raises(ConfigError, match=r"--checkpoint 'newest' is neither best, last nor a"):
        choose("newest", [3, 6], None, "W")


def test_steps_on_the_command_line_replace_the_config_files_epochs(caplog, tmp_path):
    def cfg(epochs=3, steps=100):
        c = config_lib.base_config()
        c.train.update(epochs=epochs, steps=steps)
        return c

    with caplog.at_level(logging.INFO, logger="ptft_jax"):
        got = command_line_wins(cfg(steps=5), ["--config=c.py", "--config.train.steps=5"])
    assert (got.train.epochs, got.train.steps) == (0, 5)
    assert "train.steps=5 from the command line replaces the config's train.epochs=3" in (
        caplog.text
    )
    # The flag's value as the next argument counts the same.
    assert command_line_wins(cfg(), ["--config.train.steps", "100"]).train.epochs == 0
    with pytest.raises(ConfigError, match=r"both set the run's length .*; pass only one of them"):
        command_line_wins(cfg(), ["--config.train.steps=5", "--config.train.epochs=3"])
    # Nothing to replace: a config without epochs, or only epochs given.
    assert command_line_wins(cfg(epochs=0), ["--config.train.steps=5"]).train.epochs == 0
    assert command_line_wins(cfg(), ["--config.train.epochs=3"]).train.epochs == 3
    both = ["--config.train.steps=5", "--config.train.epochs=0"]  # epochs=0: no conflict
    assert command_line_wins(cfg(epochs=0, steps=5), both).train.steps == 5

    # A cap given on the command line for a prepared folder, which it cannot cap, stops the run;
    # the same cap from the config file does not.
    (tmp_path / store.MANIFEST).write_text("{}")
    c = cfg(epochs=0)
    c.data.update(source=str(tmp_path), max_documents=1500)
    with pytest.raises(ConfigError, match="max_documents=1500 cannot cap the prepared folder"):
        command_line_wins(c, ["--config.data.max_documents=1500"])
    assert command_line_wins(c, ["--config.data.source=" + str(tmp_path)]) is c


def test_the_config_files_document_cap_is_no_warning_for_a_prepared_folder(
    monkeypatch, caplog, tmp_path
):
    from ptft_jax.data import tokenize

    c = config_lib.base_config()
    c.data.update(source=str(tmp_path), max_documents=1500)
    monkeypatch.setattr(tokenize, "special_ids", lambda tok: {"pad": 0})
    monkeypatch.setattr(store, "open_for", lambda *a: ("train", "validation"))
    with caplog.at_level(logging.INFO, logger="ptft_jax"):
        assert tasks.get(c).stored(c, None) == ("train", "validation")
    assert [r.levelname for r in caplog.records] == ["INFO"]
    assert "prepared folder" in caplog.text and "trains on all of its blocks" in caplog.text


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_in_a_log_file_is_one_plain_line_per_logged_step(tmp_path, capsys):
    log = io.StringIO()  # not a terminal, as a log file or a pipe
    w = metrics.Writer(tmp_path, total_steps=20, start_step=0, resumed=False, progress=log)
    for step in range(1, 21):
        w.advance()
        if step % 5 == 0:
            row = {"loss": 1.0 / step, "tokens_per_s": 12345.0, "step_time_s": 0.4}
            w.write(step, "train", row)
        if step == 10:
            w.write(step, "validation", {"loss": 0.25})
    w.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert [line.split(":")[0] for line in lines] == [f"step {s}/20" for s in (5, 10, 15, 20)]
    assert lines[0] == "step 5/20: loss 0.2000, 12,345 tokens/s, ETA 6s"  # 15 steps of 0.4 s
    assert lines[-1].endswith(", ETA 0s")
    assert capsys.readouterr().out == "step 10 validation: loss 0.2500\n"  # on its own line

    # On a terminal: the bar, and no progress lines.
    tty = _Terminal()
    w = metrics.Writer(tmp_path, total_steps=20, start_step=0, resumed=False, progress=tty)
    w.advance(5)
    w.write(5, "train", {"loss": 0.2, "tokens_per_s": 12345.0})
    w.close()
    assert "\r" in tty.getvalue() and "step 5/20:" not in tty.getvalue()


def test_the_summary_line_names_each_numbers_step_checkpoint_and_the_files(tmp_path):
    summary = {
        "step": 30,
        "eval_loss": 0.41234,
        "eval_accuracy": 0.81,
        "test": {"accuracy": 0.812, "checkpoint": "best", "step": 20},
        "tokens_per_s": 1234.4,
        "real_token_share": 0.95,
        "compile_s": 13.52,
        "wall_s": 100.21,
        "trained_steps": 30,
        "best_metric": "accuracy",
        "workdir": "runs/mr",
        "wrote": [
            "checkpoints up to step 30",
            "best/ (step 20)",
            "metrics.jsonl",
            "eval_test.json",
        ],
    }
    assert metrics.done_line(summary, "accuracy") == (
        "done: step 30, validation loss 0.4123, accuracy 0.8100 (step 30); "
        "test accuracy 0.8120 (best checkpoint, step 20); "
        "1,234 tokens/s (95% of computed), compile 13.5s, wall 100.2s; "
        "wrote runs/mr: checkpoints up to step 30, best/ (step 20), metrics.jsonl, eval_test.json"
    )
    mlm = {**summary, "test": {}, "trained_steps": 0, "probe_accuracy": 0.5, "best_metric": None}
    mlm["wrote"] = ["checkpoints up to step 30", "metrics.jsonl"]
    assert metrics.done_line(mlm, "mlm_accuracy") == (
        "done: step 30, validation loss 0.4123, mlm accuracy 0.8100, probe accuracy 0.5000 "
        "(step 30); wall 100.2s; wrote runs/mr: checkpoints up to step 30, metrics.jsonl"
    )


@pytest.mark.slow
def test_evaluate_and_predict_say_which_checkpoint_and_take_another(
    tmp_path, capsys, caplog, monkeypatch
):
    w = tmp_path / "w"
    c = tiny_classifier(epochs=0, steps=6, eval_every=2, checkpoint_every=2, keep_checkpoints=3)
    summary = run(c, w)
    done = capsys.readouterr().out.strip().splitlines()[-1]
    test = json.loads((w / "eval_test.json").read_text())
    best = summary["best_step"]
    assert test["checkpoint"] == "best" and test["step"] == best == summary["test"]["step"]
    assert done.startswith("done: step 6, validation loss ") and " (step 6); test accuracy " in done
    assert f"(best checkpoint, step {best}); " in done
    assert done.endswith(
        f"; wrote {w}: checkpoints up to step 6, best/ (step {best}), metrics.jsonl, eval_test.json"
    )

    with caplog.at_level(logging.INFO, logger="ptft_jax"):
        got = evaluate(str(w), "test")
    assert (got["checkpoint"], got["step"]) == ("best", best)
    assert got["accuracy"] == pytest.approx(test["accuracy"], abs=1e-9)
    assert f"{w}: the best checkpoint, step {best} (the last is step 6)" in caplog.text
    assert json.loads((w / "eval_test.json").read_text())["checkpoint"] == "best"
    last = evaluate(str(w), "validation", "last")
    assert (last["checkpoint"], last["step"]) == ("last", 6)
    with pytest.raises(ConfigError, match=r"keeps no checkpoint of step 3; .* \(2, 4, 6\)"):
        evaluate(str(w), "test", "3")

    # No matplotlib: an info line (plots are on by default), an error when --plot asks for one.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    (w / "confusion_test.png").unlink()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ptft_jax"):
        assert evaluate(str(w), "test", "4")["checkpoint"] == "kept"
    assert not (w / "confusion_test.png").exists()
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert "no confusion_test.png: matplotlib is not installed" in caplog.text
    with pytest.raises(ConfigError, match="the confusion plot needs matplotlib"):
        evaluate(str(w), "test", plot=True)
    monkeypatch.undo()

    cmd = [sys.executable, "-m", "ptft_jax.predict", "--workdir", str(w), "--text", "a fine film"]
    proc = subprocess.run([*cmd, "--checkpoint", "4"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{w}: the kept checkpoint, step 4 (the last is step 6)" in proc.stderr
    assert set(json.loads(proc.stdout)["probs"]) == {"negative", "positive"}
    proc = subprocess.run([*cmd, "--checkpoint", "5"], capture_output=True, text=True)
    assert proc.returncode == 2 and f"error: {w} keeps no checkpoint of step 5;" in proc.stderr

    # init_from=W@STEP (or W@best, W@last): the weights of that checkpoint, a step W does not
    # keep refused in one sentence before anything is compiled.
    at4 = weights.resolve(f"{w}@4").tensors()
    want = hf.to_hf_tensors(jax.device_get(workdir.load(w, "4").params), "bert")
    assert at4.keys() == want.keys() and all(np.array_equal(at4[k], want[k]) for k in want)
    at6 = weights.resolve(f"{w}@last").tensors()
    assert any(not np.array_equal(at4[k], at6[k]) for k in want)
    spelled = re.escape(f"(2, 4, 6), last or best as init_from={w}@STEP.")
    with pytest.raises(
        ConfigError, match=r"keeps no checkpoint of step 5; pass one of .*" + spelled
    ):
        weights.resolve(f"{w}@5")
    c.init_from = f"{w}@4"
    config_lib.validate(c)
