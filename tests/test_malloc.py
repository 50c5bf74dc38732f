"""``python -m ptft_jax.<command>`` runs on tcmalloc when the system has it."""

import os
import subprocess
import sys

import pytest

from ptft_jax import malloc

PROBE = """
def get_config():
    import os
    maps = open("/proc/self/maps").read()
    print("tcmalloc" if "tcmalloc" in maps else "glibc", os.environ.get("LD_PRELOAD", ""))
    raise SystemExit(0)
"""


def _allocator(tmp_path, **env) -> str:
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    cmd = [sys.executable, "-m", "ptft_jax.train", "--config", str(probe), "--workdir", "w"]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env={**_base_env(), **env}
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()[0]


def _base_env() -> dict:
    return {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "PTFT_JAX_TCMALLOC")}


@pytest.mark.skipif(malloc.find_tcmalloc() is None, reason="no tcmalloc library on this system")
def test_commands_preload_tcmalloc(tmp_path):
    assert _allocator(tmp_path) == "tcmalloc"
    assert _allocator(tmp_path, PTFT_JAX_TCMALLOC="0") == "glibc"


def test_only_commands_reexecute(monkeypatch):
    monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "ptft_jax.train", "--workdir", "w"])
    assert malloc._command() == "train"
    monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "pytest", "-q"])
    assert malloc._command() is None
    monkeypatch.setattr(sys, "orig_argv", ["python", "script.py"])
    assert malloc._command() is None
