"""Crash safety: ``kill -9`` at random moments (start-up, train steps, async checkpoint saves),
each followed by a resume, ends with the parameters of a run that was never interrupted."""

import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from ptft_jax import workdir

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = """
import sys
sys.path.insert(0, {tests!r})
from test_train import tiny_config

def get_config():
    return tiny_config({tokenizer!r}, steps=40, checkpoint_every=2, log_every=1, eval_every=20)
"""


def _command(cfg: pathlib.Path, w: pathlib.Path) -> list[str]:
    return [sys.executable, "-m", "ptft_jax.train", "--config", str(cfg), "--workdir", str(w)]


def _trained_steps(w: pathlib.Path) -> int:
    """The last train step the running process logged (metrics.jsonl; -1 before any)."""
    try:
        lines = (w / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return -1
    steps = [int(line.split('"step": ')[1].split(",")[0]) for line in lines if '"train"' in line]
    return max(steps, default=-1)


def _saving(w: pathlib.Path) -> bool:
    """Whether an async checkpoint save is in flight (Orbax writes a tmp folder, then renames)."""
    folder = w / "checkpoints"
    return folder.is_dir() and any("tmp" in p.name for p in folder.iterdir())


def _params(w: pathlib.Path) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(workdir.load(w).params))]


@pytest.mark.slow
def test_ten_kill_9_then_resume_is_bit_identical(tmp_path):
    (tmp_path / "straight.py").write_text(CONFIG.format(tests=str(ROOT / "tests"), tokenizer=""))
    straight = tmp_path / "straight"
    done = subprocess.run(
        _command(tmp_path / "straight.py", straight), capture_output=True, text=True, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # The killed run uses the straight run's tokenizer, as a resume reuses W/tokenizer.
    cfg = tmp_path / "killed.py"
    cfg.write_text(CONFIG.format(tests=str(ROOT / "tests"), tokenizer=str(straight / "tokenizer")))

    w, rng, kills = tmp_path / "killed", np.random.default_rng(0), []
    while len(kills) < 10:
        proc = subprocess.Popen(
            _command(cfg, w),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        moment = ["start-up", "step", "save"][len(kills) % 3]
        begun, target = _trained_steps(w), None
        deadline = time.time() + 120
        delay = rng.uniform(0.5, 6.0)  # start-up: import, data, tokenizer, compile
        while proc.poll() is None and time.time() < deadline:
            if moment == "start-up" and time.time() - deadline + 120 > delay:
                break
            if moment == "step":
                target = target or begun + int(rng.integers(1, 4))
                if _trained_steps(w) >= target:
                    time.sleep(rng.uniform(0, 0.03))
                    break
            if moment == "save" and _trained_steps(w) > begun and _saving(w):
                break
            time.sleep(0.002)
        if proc.poll() is not None:  # finished before the moment came: a hard failure
            raise AssertionError(f"run ended before kill {len(kills) + 1}: {proc.stderr.read()}")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
        kills.append((moment, _trained_steps(w), _saving(w)))

    # The kills landed where they should: mid-training and mid-save included.
    assert sum(1 for m, _, saving in kills if m == "save" and saving) >= 2, kills
    assert sum(1 for m, step, _ in kills if m == "step" and step > 0) >= 2, kills
    final = subprocess.run(_command(cfg, w), capture_output=True, text=True, cwd=ROOT)
    assert final.returncode == 0, final.stderr[-3000:]
    assert "done: step 40" in final.stdout
    for want, got in zip(_params(straight), _params(w), strict=True):
        np.testing.assert_array_equal(got, want)
