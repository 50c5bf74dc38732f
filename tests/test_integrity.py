"""Workdir integrity: one run per workdir, the run's own tokenizer or none, no NaN in any
checkpoint, and a damaged checkpoint survived (fault injection on the workdir itself)."""

import json
import logging
import math
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest
from helpers import mlm_batch, run_steps
from test_bad_input import CONFIG, _snapshot
from test_train import tiny_config

from ptft_jax import checkpoint, config, optim, runlock, workdir
from ptft_jax.data.sources import DataError
from ptft_jax.train import run

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _params(w: pathlib.Path) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(workdir.load(w).params))]


def _same_params(a: pathlib.Path, b: pathlib.Path) -> None:
    for x, y in zip(_params(a), _params(b), strict=True):
        np.testing.assert_array_equal(x, y)


def _rows(w: pathlib.Path) -> list[tuple]:
    rows = [json.loads(line) for line in (w / "metrics.jsonl").read_text().splitlines()]
    return [(r["step"], r["split"], r["loss"]) for r in rows]


def _layout(w: pathlib.Path) -> set[str]:
    """The workdir's files; names that differ between identical runs (OCDBT data files, whose
    number varies too, and event files named by time and host) count as one pattern."""
    names = []
    for p in w.rglob("*"):
        rel = p.relative_to(w)
        random = rel.parent.name in ("d", "tensorboard")
        names.append(str(rel.parent / "*") if random else str(rel))
    return set(names)


# --- One run per workdir ---------------------------------------------------------------------

HOLD = """
import pathlib, sys, time
from ptft_jax import runlock
runlock.acquire(pathlib.Path(sys.argv[1]))
print("held", flush=True)
time.sleep(60)
"""


def test_a_held_lock_names_its_holder_and_a_dead_ones_is_taken_over(tmp_path, caplog):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(runlock.WorkdirBusy, match=rf"\(pid {holder.pid} on .*\); wait for it"):
        runlock.acquire(tmp_path)
    holder.send_signal(signal.SIGKILL)  # the kernel drops its lock; its file stays
    holder.wait()
    assert (tmp_path / runlock.NAME).exists()
    with caplog.at_level(logging.INFO, logger="ptft_jax"):
        lock = runlock.acquire(tmp_path)
    assert f"no longer running (pid {holder.pid} on" in caplog.text
    assert json.loads((tmp_path / runlock.NAME).read_text())["pid"] == os.getpid()
    lock.release()
    assert not (tmp_path / runlock.NAME).exists()


@pytest.mark.slow
def test_two_runs_started_together_one_trains(tmp_path):
    """Two identical commands at once: exactly one trains, the other says why (exit 2), and
    the workdir is exactly a single run's."""
    cfg = tmp_path / "mlm.py"
    cfg.write_text(CONFIG.format(tests=str(ROOT / "tests"), classify=False, data=""))

    def command(w):
        return [sys.executable, "-m", "ptft_jax.train", "--config", str(cfg), "--workdir", str(w)]

    procs = [subprocess.Popen(command(tmp_path / "w"), stderr=subprocess.PIPE, text=True)]
    procs.append(subprocess.Popen(command(tmp_path / "w"), stderr=subprocess.PIPE, text=True))
    errs = [p.communicate(timeout=600)[1] for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], errs
    loser = errs[[p.returncode for p in procs].index(2)]
    assert loser.strip().splitlines()[-1].startswith("error: Another run "), loser[-2000:]
    assert "Traceback" not in loser, loser[-2000:]
    single = subprocess.run(command(tmp_path / "single"), capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-2000:]
    assert _layout(tmp_path / "w") == _layout(tmp_path / "single")
    assert not (tmp_path / "w" / runlock.NAME).exists()
    _same_params(tmp_path / "w", tmp_path / "single")
    assert _rows(tmp_path / "w") == _rows(tmp_path / "single")


# --- The run's own tokenizer -----------------------------------------------------------------


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> pathlib.Path:
    """A tiny MLM run stopped at step 4 of 6, checkpoints at 2 and 4."""
    w = tmp_path_factory.mktemp("integrity") / "w"
    run(_cfg(), w)
    return w


def _cfg(**kw):
    args = dict(steps=6, stop_at_step=4, checkpoint_every=2, eval_every=6, keep_checkpoints=3)
    return tiny_config(**{**args, **kw})


@pytest.mark.slow
@pytest.mark.parametrize(
    "damage,message",
    [
        ("folder", r"tokenizer is missing, but the checkpoints in .* were trained with it"),
        (
            "tokenizer.json",
            r"tokenizer is missing or unreadable \(it holds no tokenizer.json, vocab.txt or "
            r"vocab.json\), but the checkpoints in .* were trained with it",
        ),
        ("vocabulary", r"is not the tokenizer the checkpoint of step 4 was trained with"),
        (
            "truncated",
            r"tokenizer is missing or unreadable \(tokenizer.json does not parse\), but the "
            r"checkpoints in .* were trained with it",
        ),
    ],
)
def test_a_missing_or_changed_tokenizer_stops_the_resume(tmp_path, finished, damage, message):
    w = tmp_path / "w"
    shutil.copytree(finished, w)
    if damage == "folder":
        shutil.rmtree(w / "tokenizer")
    elif damage == "tokenizer.json":
        (w / "tokenizer" / "tokenizer.json").unlink()
    elif damage == "truncated":  # a copy or a disk that failed halfway
        path = w / "tokenizer" / "tokenizer.json"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    else:  # another tokenizer of the same size: two token names swapped
        path = w / "tokenizer" / "tokenizer.json"
        tok = json.loads(path.read_text())
        vocab = tok["model"]["vocab"]
        a, b = sorted(vocab, key=vocab.get)[100:102]
        vocab[a], vocab[b] = vocab[b], vocab[a]
        path.write_text(json.dumps(tok))
    before = _snapshot(w)
    with pytest.raises(DataError, match=message + r".*; restore that folder or start a new"):
        run(_cfg(stop_at_step=0), w)
    assert _snapshot(w) == before


# --- Finite by construction ------------------------------------------------------------------


BAD_NUMBERS = [
    ("learning_rate", math.nan),
    ("learning_rate", math.inf),
    ("learning_rate", -1e-4),
    ("adam_b2", 1.0),
    ("adam_eps", 0.0),
    ("weight_decay", math.nan),
    ("temperature", 0.0),
]


@pytest.mark.parametrize("key,value", BAD_NUMBERS)
def test_the_config_rejects_numbers_that_cannot_train(key, value):
    c = tiny_config()
    c.train[key] = value
    with pytest.raises(config.ConfigError, match=rf"train.{key}={value} must be a finite number"):
        config.validate(c)


def test_no_update_with_non_finite_parameters_reaches_the_state(tiny_model_cfg, monkeypatch):
    """A learning rate that turns NaN inside the step (past every config check), and a batch
    whose loss is NaN: both updates are dropped and counted; the parameters stay finite."""
    batch = mlm_batch(tiny_model_cfg)
    clean, _ = run_steps(tiny_model_cfg, {"data": 4, "fsdp": 2, "tensor": 1}, batch, n=0)
    real = optim.learning_rate_schedule
    monkeypatch.setattr(
        optim, "learning_rate_schedule", lambda t, n: lambda s: real(t, n)(s) * np.nan
    )
    params, history = run_steps(tiny_model_cfg, {"data": 4, "fsdp": 2, "tensor": 1}, batch)
    assert [int(m["nonfinite"]) for m in history] == [1, 1]
    assert all(np.isfinite(m["loss"]) for m in history), "the loss itself was finite"
    jax.tree.map(np.testing.assert_array_equal, params, clean)
    monkeypatch.setattr(optim, "learning_rate_schedule", real)
    poisoned = {**batch, "masked_weights": batch["masked_weights"] * np.float32(np.nan)}
    params, history = run_steps(tiny_model_cfg, {"data": 8, "fsdp": 1, "tensor": 1}, poisoned)
    assert [int(m["nonfinite"]) for m in history] == [1, 1]
    jax.tree.map(np.testing.assert_array_equal, params, clean)


# --- A damaged checkpoint --------------------------------------------------------------------


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> pathlib.Path:
    """The same run, never interrupted: 6 steps."""
    w = tmp_path_factory.mktemp("straight") / "w"
    run(_cfg(stop_at_step=0), w)
    return w


def _damage(step_dir: pathlib.Path, kind: str) -> None:
    """Damage the array data of a step: the files of its state's top-level ``d/`` folder, which
    every restore reads (OCDBT's per-process folders also hold superseded, unread files)."""
    targets = sorted((step_dir / "state" / "d").iterdir())
    assert targets
    for path in targets:
        if kind == "truncated":
            os.truncate(path, path.stat().st_size // 2)
        elif kind == "deleted":
            path.unlink()
        else:  # bytes overwritten in place, size unchanged
            data = bytearray(path.read_bytes())
            middle = len(data) // 2
            data[middle : middle + 64] = bytes(b ^ 0x5A for b in data[middle : middle + 64])
            path.write_bytes(bytes(data))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["truncated", "deleted", "overwritten"])
def test_a_damaged_checkpoint_resumes_from_the_one_before(
    tmp_path, finished, straight, kind, caplog
):
    w = tmp_path / "w"
    shutil.copytree(finished, w)
    _damage(w / "checkpoints" / "4", kind)
    with pytest.raises(DataError, match="step 4 is damaged .*; run its train command once"):
        workdir.load(w)  # evaluate, predict, export: read-only, they say so and stop
    with caplog.at_level(logging.WARNING, logger="ptft_jax"):
        summary = run(_cfg(stop_at_step=0), w)
    assert summary["step"] == 6
    assert "the checkpoint of step 4 is damaged" in caplog.text
    assert (w / "damaged" / "4").is_dir(), "kept aside, not deleted"
    _same_params(w, straight)


def test_a_checksum_mismatch_is_damage(tmp_path, caplog):
    """Values that read back without error but differ from what was saved."""
    mgr = checkpoint.manager(tmp_path, keep=3)
    state = {"w": jax.numpy.arange(8.0), "step": jax.numpy.int32(3)}
    for step in (1, 2):
        checkpoint.save(mgr, step, state, {"position": step}, {"step": step})
    mgr.wait_until_finished()
    meta_file = tmp_path / "checkpoints" / "2" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta["checksums"]["['w']"] ^= 1
    meta_file.write_text(json.dumps(meta))
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)
    with caplog.at_level(logging.WARNING, logger="ptft_jax"):
        step, restored, data, _ = checkpoint.restore_verified(mgr, abstract)
    assert step == 1 and data == {"position": 1}
    assert "step 2 is damaged (['w'] does not match its checksum)" in caplog.text
    assert mgr.all_steps() == [1] and (tmp_path / "damaged" / "2").is_dir()
    mgr.close()


def test_every_checkpoint_damaged_stops(tmp_path):
    mgr = checkpoint.manager(tmp_path, keep=3)
    state = {"w": jax.numpy.arange(8.0)}
    checkpoint.save(mgr, 1, state, {}, {})
    mgr.wait_until_finished()
    for f in (tmp_path / "checkpoints" / "1" / "state").rglob("*"):
        if f.is_file():
            f.unlink()
    abstract = {"w": jax.ShapeDtypeStruct((8,), np.float32)}
    with pytest.raises(DataError, match="Every checkpoint in .* is damaged"):
        checkpoint.restore_verified(mgr, abstract)
    mgr.close()


def test_a_damaged_best_checkpoint_is_named(tmp_path):
    """The best parameters (classification's W/best) carry checksums too."""
    mgr = checkpoint.manager(tmp_path, keep=1, name="best")
    params = {"w": jax.numpy.arange(8.0)}
    checkpoint.save_params(mgr, 3, params)
    mgr.wait_until_finished()
    np.testing.assert_array_equal(checkpoint.restore_params(mgr, params)["w"], params["w"])
    meta_file = tmp_path / "best" / "3" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta["checksums"]["['w']"] ^= 1
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"The best checkpoint \(step 3\) in .* is damaged \("):
        checkpoint.restore_params(mgr, params)
    mgr.close()
