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

from ptft_jax import checkpoint, config, optim, recovery, runlock, workdir
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
    once = r"step 4 is damaged .*; run its train command once .*, or pass --checkpoint 2 to read"
    with pytest.raises(DataError, match=once):
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
        step, restored, data, _ = recovery.restore_verified(mgr, abstract)
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
        recovery.restore_verified(mgr, abstract)
    mgr.close()


def test_a_damaged_best_checkpoint_is_named(tmp_path):
    """The best parameters (classification's W/best) carry checksums too."""
    mgr = checkpoint.manager(tmp_path, keep=1, name="best")
    params = {"w": jax.numpy.arange(8.0)}
    checkpoint.save_params(mgr, 3, params)
    mgr.wait_until_finished()
    np.testing.assert_array_equal(recovery.restore_params(mgr, params)["w"], params["w"])
    meta_file = tmp_path / "best" / "3" / "meta" / "metadata"
    meta = json.loads(meta_file.read_text())
    meta["checksums"]["['w']"] ^= 1
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"The best checkpoint \(step 3\) in .* is damaged \("):
        recovery.restore_params(mgr, params)
    mgr.close()


# --- Not damage: a changed config, a systematic failure ---------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(
    "override,message",
    [
        (
            {"max_grad_norm": 0.0},
            r"were saved with train.max_grad_norm=1.0, which shapes the train state they hold, "
            r"but the config says 0.0; resume with --config.train.max_grad_norm=1.0, or use a "
            r"new --workdir",
        ),
        (
            {"freeze_embeddings": True, "learning_rate": 1e-3},
            r"were saved with train.freeze_embeddings=False, .* but the config says True; "
            r"resume with --config.train.freeze_embeddings=False, or",
        ),
    ],
    ids=["max_grad_norm", "freeze_embeddings"],
)
def test_an_optimizer_setting_that_reshapes_the_state_stops_and_moves_nothing(
    tmp_path, finished, straight, override, message
):
    """A config change that drops or adds optimizer state is no damage: one sentence naming
    the field and both values, the checkpoints' bytes as they were, and the original command
    then resumes and ends as an uninterrupted run does."""
    w = tmp_path / "w"
    shutil.copytree(finished, w)
    before = _snapshot(w)
    with pytest.raises(config.ConfigError, match=message):
        run(_cfg(stop_at_step=0, **override), w)
    assert _snapshot(w) == before
    assert not (w / "damaged").exists()
    assert run(_cfg(stop_at_step=0), w)["step"] == 6
    _same_params(w, straight)


def _saved(tmp_path: pathlib.Path, state: dict, steps=(1, 2)):
    mgr = checkpoint.manager(tmp_path, keep=3)
    for step in steps:
        checkpoint.save(mgr, step, state, {"position": step}, {"step": step})
    mgr.wait_until_finished()
    return mgr


def _abstract(state: dict) -> dict:
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)


def _files(folder: pathlib.Path) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_a_checkpoint_of_another_structure_is_not_damage(tmp_path):
    """The restore itself (past the config's checks, e.g. a hand-edited config.json): an intact
    step whose arrays differ in structure or shape stops with one sentence; nothing moves."""
    state = {"w": jax.numpy.arange(8.0), "step": jax.numpy.int32(3)}
    mgr = _saved(tmp_path, state)
    before = _files(tmp_path)
    other = {**_abstract(state), "extra": jax.ShapeDtypeStruct((2,), np.float32)}
    with pytest.raises(recovery.MismatchError, match=r"holds another state than this config "):
        recovery.restore_verified(mgr, other)
    wider = {**_abstract(state), "w": jax.ShapeDtypeStruct((9,), np.float32)}
    with pytest.raises(recovery.MismatchError, match=r"w is \(\(8,\), 'float32'\) in it but"):
        recovery.restore_verified(mgr, wider)
    assert _files(tmp_path) == before and mgr.all_steps() == [1, 2]
    mgr.close()


def test_a_systematic_restore_failure_moves_nothing(tmp_path, monkeypatch):
    """Out of memory while restoring is no damage: one line, the traceback in W/errors.log,
    every checkpoint where it was."""
    state = {"w": jax.numpy.arange(8.0), "step": jax.numpy.int32(3)}
    mgr = _saved(tmp_path, state)
    before = _files(tmp_path / "checkpoints")

    def out_of_memory(*args, **kwargs):
        raise ValueError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8.00GiB.")

    monkeypatch.setattr(recovery, "restore", out_of_memory)
    with pytest.raises(checkpoint.CheckpointError) as e:
        recovery.restore_verified(mgr, _abstract(state))
    line = str(e.value)
    assert "Restoring the checkpoint of step 2 failed (RESOURCE_EXHAUSTED: Out of memory" in line
    assert "which is no damage to any checkpoint and moved nothing" in line
    assert line.count(". ") == 0 and "\n" not in line
    log_text = (tmp_path / "errors.log").read_text()
    assert "Traceback" in log_text and "out_of_memory" in log_text
    assert _files(tmp_path / "checkpoints") == before and mgr.all_steps() == [1, 2]
    assert not (tmp_path / "damaged").exists()
    mgr.close()


def test_a_bit_flipped_in_an_array_file_is_caught_by_its_checksum(tmp_path, caplog):
    """A changed byte inside the stored array data that Orbax still reads without error (an
    incompressible array is stored as raw bytes): only the checksum can see it."""
    rng = np.random.default_rng(0)
    bits = rng.integers(-(2**31), 2**31, (64, 64), dtype=np.int64).astype(np.int32)
    state = {"w": jax.numpy.asarray(bits), "step": jax.numpy.int32(3)}
    mgr = _saved(tmp_path, state)
    needle = bits[10, :4].tobytes()
    hits = [
        (p, p.read_bytes().find(needle))
        for p in (tmp_path / "checkpoints" / "2" / "state").rglob("*")
        if p.is_file() and needle in p.read_bytes()
    ]
    assert len(hits) == 1, "the array's bytes are stored as they are"
    path, at = hits[0]
    data = bytearray(path.read_bytes())
    data[at + 1] ^= 0x01
    path.write_bytes(bytes(data))
    raw, _, _ = checkpoint.restore(mgr, 2, _abstract(state))  # Orbax reads it without error
    assert int(np.sum(np.asarray(raw["w"]) != bits)) == 1
    with caplog.at_level(logging.WARNING, logger="ptft_jax"):
        step, restored, data_state, _ = recovery.restore_verified(mgr, _abstract(state))
    assert step == 1 and data_state == {"position": 1}
    np.testing.assert_array_equal(np.asarray(restored["w"]), bits)
    assert "step 2 is damaged (['w'] does not match its checksum)" in caplog.text
    assert (tmp_path / "damaged" / "2").is_dir()
    mgr.close()


@pytest.mark.slow
def test_a_workdir_whose_checkpoints_were_set_aside_never_restarts_unasked(
    tmp_path, finished, straight
):
    """Every checkpoint damaged: the run stops; the same command again stops too, naming
    W/damaged and the two ways on, and changes nothing; restart_from_scratch=True starts over
    in that workdir and ends as a fresh run does, the damaged steps kept."""
    w = tmp_path / "w"
    shutil.copytree(finished, w)
    for step in ("2", "4"):
        _damage(w / "checkpoints" / step, "deleted")
    with pytest.raises(DataError, match="Every checkpoint in .* is damaged"):
        run(_cfg(stop_at_step=0), w)
    before = _snapshot(w)
    with pytest.raises(
        DataError,
        match=r"has no checkpoint left to resume from: every one was set aside in .*damaged "
        r"\(steps 2, 4\); move a step back into .*checkpoints to resume from it, or set "
        r"--config.train.restart_from_scratch=True",
    ):
        run(_cfg(stop_at_step=0), w)
    assert _snapshot(w) == before
    assert run(_cfg(stop_at_step=0, restart_from_scratch=True), w)["step"] == 6
    assert sorted(p.name for p in (w / "damaged").iterdir()) == ["2", "4"]
    _same_params(w, straight)


@pytest.mark.slow
def test_a_failed_background_save_stops_at_the_next_step(tmp_path, monkeypatch):
    """A save that fails after it started (here its background part reports a full disk)
    stops the run at the next step, not at the next save: no train row after it."""
    import errno

    import orbax.checkpoint as ocp

    started = []
    real_save = checkpoint.save

    def save(mgr, step, *args):
        real_save(mgr, step, *args)
        started.append(step)

    def check_for_errors(self):
        if started and pathlib.Path(self.directory).name == "checkpoints":
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint, "save", save)
    monkeypatch.setattr(ocp.CheckpointManager, "check_for_errors", check_for_errors)
    monkeypatch.setattr(ocp.CheckpointManager, "is_saving_in_progress", lambda self: False)
    w = tmp_path / "w"
    cfg = _cfg(stop_at_step=0, steps=8, checkpoint_every=4, log_every=1, eval_every=100)
    with pytest.raises(checkpoint.DiskFullError, match="filled up during a checkpoint save"):
        run(cfg, w)
    assert started == [4]
    steps = [r[0] for r in _rows(w) if r[1] == "train"]
    assert max(steps) == 4, steps


def test_a_fresh_start_sets_aside_an_earlier_attempts_best(tmp_path, caplog):
    """An earlier attempt's W/best (step 600: a run set aside and restarted, or one that died
    before its first checkpoint) would outlive this run's best (step 100) in the rotation and
    be read back as this run's model; a fresh start moves it to W/earlier/best, kept."""
    import transformers

    from ptft_jax.best import Best

    def tracker():
        return {"best": None, "best_step": None, "since_best": 0}

    ones, zeros = {"w": jax.numpy.ones(3)}, {"w": jax.numpy.zeros(3)}
    old = Best(tmp_path, "accuracy", 0, tracker())
    old.update(600, {"accuracy": 0.9}, ones)
    old.mgr.wait_until_finished()
    old.mgr.close()
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nfilm\n")
    tok = transformers.BertTokenizerFast(vocab_file=str(tmp_path / "vocab.txt"))
    with caplog.at_level(logging.WARNING, logger="ptft_jax"):
        workdir.write_run_files(tmp_path, tiny_config(), tok, None, resuming=False)
    assert "held the best checkpoint of an earlier attempt" in caplog.text
    assert not (tmp_path / "best").exists() and (tmp_path / "earlier" / "best" / "600").is_dir()
    new = Best(tmp_path, "accuracy", 0, tracker())
    new.update(100, {"accuracy": 0.5}, zeros)
    new.mgr.wait_until_finished()
    np.testing.assert_array_equal(new.params(zeros)["w"], zeros["w"])  # this run's, not 600's
    assert workdir.set_aside_earlier_best(tmp_path) == tmp_path / "earlier" / "best.1"
    assert workdir.set_aside_earlier_best(tmp_path) is None  # nothing left to move
