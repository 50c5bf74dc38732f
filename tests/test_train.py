"""End-to-end runs of ``ptft_jax.train`` on real text (builtin:wiki_en, a few hundred docs)."""

import json
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from ptft_jax import config as config_lib
from ptft_jax import stopping
from ptft_jax.train import run


def tiny_config(tokenizer="", **train):
    c = config_lib.base_config()
    c.model.update(
        vocab_size=1024,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    c.data.update(source="builtin:wiki_en", max_documents=200, max_seq_length=64)
    c.data.eval_fraction = 0.1
    c.train.update(
        steps=12,
        batch_size=16,
        learning_rate=3e-3,
        warmup_steps=2,
        log_every=3,
        eval_every=6,
        checkpoint_every=6,
        eval_batches=2,
    )
    c.train.update(train)
    c.data.tokenizer = tokenizer
    c.mesh.update(data=4, fsdp=2, tensor=1)
    return c


@pytest.mark.slow
def test_train_stop_resume_is_bit_identical(tmp_path):
    straight = run(tiny_config(), tmp_path / "a")
    # Both runs use the first run's tokenizer, as a resume reuses W/tokenizer.
    tok = str(tmp_path / "a" / "tokenizer")
    first = run(tiny_config(tok, stop_at_step=6), tmp_path / "b")
    assert first["step"] == 6
    resumed = run(tiny_config(tok), tmp_path / "b")
    assert resumed["step"] == 12
    pa, pb = (jax.device_get(r["state"]["params"]) for r in (straight, resumed))
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
        np.testing.assert_array_equal(x, y)

    # The workdir holds what users and scripts rely on.
    w = tmp_path / "a"
    rows = [json.loads(line) for line in (w / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [3, 6, 9, 12]
    assert all(
        {"loss", "mlm_accuracy", "grad_norm", "learning_rate", "tokens_per_s"} <= r.keys()
        and 0.9 < r["real_token_share"] <= 1.0  # packed blocks: padding in the last one only
        for r in train_rows
    )
    evals = [r for r in rows if r["split"] == "validation"]
    assert [r["step"] for r in evals] == [0, 6, 12]
    assert evals[-1]["loss"] < evals[0]["loss"] - 0.2, "eval loss should fall"
    assert {"loss", "mlm_accuracy", "perplexity"} <= evals[-1].keys()
    assert json.loads((w / "config.json").read_text())["model"]["hidden_size"] == 32
    assert (w / "tokenizer" / "tokenizer.json").exists()
    assert sorted(p.name for p in (w / "checkpoints").iterdir()) == ["12", "6"]
    assert list((w / "tensorboard").iterdir())

    # A resume that changes a model shape stops with a clear error.
    bad = tiny_config()
    bad.model.hidden_size = 64
    with pytest.raises(config_lib.ConfigError, match="model.hidden_size=32"):
        run(bad, w)


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["stop", "skip"])
def test_nonfinite_loss_never_reaches_the_state(tmp_path, mode):
    """A huge learning rate overflows the model after the first update: every later update is
    dropped; "stop" saves the last good state and raises, "skip" counts and carries on."""
    cfg = tiny_config(learning_rate=1e30, warmup_steps=0, on_nonfinite=mode)
    w = tmp_path / "w"
    if mode == "stop":
        # Seen at the next host sync (log_every=3); steps 2 and 3 were dropped.
        with pytest.raises(stopping.NonFiniteError, match="at step 2; .* saved at step 3"):
            run(cfg, w)
        assert sorted(p.name for p in (w / "checkpoints").iterdir()) == ["3"]
    else:
        summary = run(cfg, w)
        assert summary["step"] == 12 and summary["skipped_steps"] == 11
        rows = [json.loads(line) for line in (w / "metrics.jsonl").read_text().splitlines()]
        assert sum(r.get("nonfinite", 0) for r in rows if r["split"] == "train") == 11
    from ptft_jax import workdir

    params = workdir.load(w).params
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))


@pytest.mark.slow
@pytest.mark.parametrize(
    "sig,code,word", [(signal.SIGTERM, 0, "preempted"), (signal.SIGINT, 130, "interrupted")]
)
def test_a_signal_checkpoints_the_current_step_and_exits(tmp_path, sig, code, word):
    """SIGTERM (preemption) and Ctrl-C both finish the step, save it and say how to resume;
    Ctrl-C exits 130 as shells expect, SIGTERM 0."""
    w = tmp_path / "w"
    base = [sys.executable, "-m", "ptft_jax.train", "--config", "configs/bert_tiny_mlm.py"]
    base += ["--workdir", str(w), "--config.train.log_every=1"]
    cmd = [*base, "--config.train.steps=100000", "--config.train.eval_every=100000"]
    cmd += ["--config.train.checkpoint_every=100000"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics_file = w / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if metrics_file.exists() and '"split": "train"' in metrics_file.read_text():
            break
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    proc.send_signal(sig)
    t0 = time.time()
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err[-2000:]
    assert "Traceback" not in err, err[-2000:]
    assert time.time() - t0 < 30, "must finish within the usual 30 s grace period"
    saved = [int(p.name) for p in (w / "checkpoints").iterdir()]
    assert len(saved) == 1 and saved[0] >= 1
    assert f"{word}: saved a checkpoint at step {saved[0]}; run the same command" in out
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    assert max(r["step"] for r in rows if r["split"] == "train") == saved[0]

    again = subprocess.run(
        [*base, f"--config.train.steps={saved[0] + 2}"],
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"resuming from step {saved[0]}" in again.stdout + again.stderr


SECOND_CTRL_C = """
import os, signal, time
from ptft_jax import stopping
p = stopping.Preemption()
os.kill(os.getpid(), signal.SIGINT)
assert p.reached(1) and p.interrupted
os.kill(os.getpid(), signal.SIGINT)
time.sleep(5)
raise SystemExit("a second Ctrl-C must exit at once")
"""


def test_a_second_ctrl_c_exits_at_once():
    proc = subprocess.run([sys.executable, "-c", SECOND_CTRL_C], capture_output=True, text=True)
    assert proc.returncode == 130, proc.stderr
    assert "finishing this step and saving a checkpoint" in proc.stderr
    assert "interrupted again: exiting without saving." in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_the_same_command_twice_trains_the_same_tokenizer_and_parameters(tmp_path):
    from ptft_jax import workdir

    args = ["--config", "configs/bert_tiny_mlm.py", "--config.train.steps=3"]
    args += ["--config.data.max_documents=400", "--config.model.vocab_size=2048"]
    for w in ("a", "b"):
        cmd = [sys.executable, "-m", "ptft_jax.train", *args, "--workdir", str(tmp_path / w)]
        subprocess.run(cmd, check=True, capture_output=True)
    a, b = ({p.name: p.read_bytes() for p in (tmp_path / w / "tokenizer").iterdir()} for w in "ab")
    assert a == b and "tokenizer.json" in a
    pa, pb = (jax.device_get(workdir.load(tmp_path / w).params) for w in "ab")
    for x, y in zip(jax.tree.leaves(pa), jax.tree.leaves(pb), strict=True):
        np.testing.assert_array_equal(x, y)
