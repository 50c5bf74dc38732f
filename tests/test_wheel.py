"""The package as users install it: an sdist and a wheel built from the sources, the wheel
installed apart from the checkout, a training run started from outside it."""

import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import pytest

import ptft_jax

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = """
from ptft_jax.config import base_config

def get_config():
    c = base_config()
    c.model.update(vocab_size=512, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                   intermediate_size=64, max_position_embeddings=64)
    c.data.update(source="builtin:wiki_en", max_documents=100, max_seq_length=32)
    c.train.update(steps=2, batch_size=8, log_every=1, eval_every=2, checkpoint_every=2,
                   eval_batches=1)
    return c
"""


@pytest.mark.slow
def test_the_wheel_installs_and_trains_outside_the_checkout(tmp_path):
    src = tmp_path / "src"  # a copy: building writes build/ and egg-info next to the sources
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "ptft_jax", src / "ptft_jax", ignore=shutil.ignore_patterns("__pycache__")
    )
    dist = tmp_path / "dist"
    build = [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)]
    done = subprocess.run(build, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    version = ptft_jax.__version__  # written once: the package's metadata reads it
    assert (dist / f"ptft_jax-{version}.tar.gz").is_file()
    wheel = dist / f"ptft_jax-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    modules = {str(p.relative_to(ROOT)) for p in (ROOT / "ptft_jax").rglob("*.py")}
    assert modules <= names, sorted(modules - names)
    suites = {str(p.relative_to(ROOT)) for p in (ROOT / "ptft_jax" / "suites").glob("*.toml")}
    assert suites and suites <= names, sorted(suites - names)  # --suite glue works installed

    site = tmp_path / "site"
    install = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index"]
    done = subprocess.run([*install, "--target", str(site), str(wheel)], capture_output=True)
    assert done.returncode == 0, done.stderr[-3000:]
    (tmp_path / "my_config.py").write_text(CONFIG)
    env = {**os.environ, "PYTHONPATH": str(site)}
    where = subprocess.run(
        [sys.executable, "-c", "import ptft_jax; print(ptft_jax.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert where.stdout.strip().startswith(str(site)), where.stdout + where.stderr
    cmd = [sys.executable, "-m", "ptft_jax.train", "--config", "my_config.py", "--workdir", "w"]
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip().splitlines()[-1].startswith("done: step 2,"), run.stdout
