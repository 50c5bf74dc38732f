"""``python -m ptft_jax.<command>`` re-executes itself with tcmalloc preloaded when it finds one.

No tcmalloc needs to be installed: the end-to-end test puts a stand-in, a copy of the C math
library (a real shared library, harmless to preload) named as tcmalloc's, in a folder of
``LD_LIBRARY_PATH``, where the finder looks first, and checks that the command re-executed with
it in ``LD_PRELOAD`` and that the dynamic loader mapped it into the new process."""

import ctypes.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from ptft_jax import malloc

PROBE = """
def get_config():
    import json, os
    maps = open("/proc/self/maps").read().split()
    print(json.dumps({
        "pid": os.getpid(),
        "preload": os.environ.get("LD_PRELOAD", ""),
        "flag": os.environ.get("PTFT_JAX_TCMALLOC"),
        "mapped": sorted({p for p in maps if "tcmalloc" in p}),
    }))
    raise SystemExit(0)
"""


def _stand_in(folder: pathlib.Path, name: str = "libtcmalloc_minimal.so.4") -> pathlib.Path:
    """A copy of the C math library (libm, which every glibc process can map) named ``name``."""
    ctypes.CDLL(ctypes.util.find_library("m"))  # mapped into this process, if it was not yet
    maps = pathlib.Path("/proc/self/maps").read_text().split()
    libm = next(p for p in maps if re.fullmatch(r"/\S*/libm(-[\d.]+)?\.so(\.\d+)?", p))
    folder.mkdir(exist_ok=True)
    shutil.copy(libm, folder / name)
    return (folder / name).resolve()


def _base_env() -> dict:
    drop = ("LD_PRELOAD", "LD_LIBRARY_PATH", "PTFT_JAX_TCMALLOC")
    return {k: v for k, v in os.environ.items() if k not in drop}


def _probe(tmp_path, **env) -> dict:
    """What ``python -m ptft_jax.train`` sees once it reaches its config (after any re-exec)."""
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    cmd = [sys.executable, "-m", "ptft_jax.train", "--config", str(probe), "--workdir", "w"]
    out = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, cwd=tmp_path, env={**_base_env(), **env}
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_commands_reexecute_with_a_found_tcmalloc(tmp_path):
    lib = _stand_in(tmp_path / "lib")
    path = f"{tmp_path / 'empty'}{os.pathsep}{lib.parent}"  # found in the second folder
    seen = _probe(tmp_path, LD_LIBRARY_PATH=path)
    assert seen["preload"] == str(lib), seen
    assert seen["mapped"] == [str(lib)], "the dynamic loader mapped the preloaded library"
    assert seen["flag"] == "0", "the re-executed process never re-executes again"

    off = _probe(tmp_path, LD_LIBRARY_PATH=path, PTFT_JAX_TCMALLOC="0")
    assert off["preload"] == "" and off["mapped"] == [], off


@pytest.fixture
def execve(monkeypatch):
    """Calls to os.execve, recorded instead of made; the process is a ``train`` command."""
    calls = []

    def fake(path, args, env):
        calls.append((path, args, env))

    monkeypatch.setattr(os, "execve", fake)
    monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "ptft_jax.train", "--workdir", "w"])
    for name in ("LD_PRELOAD", "LD_LIBRARY_PATH", "PTFT_JAX_TCMALLOC"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_reexecution_keeps_the_command_and_other_preloads(tmp_path, monkeypatch, execve):
    lib = _stand_in(tmp_path / "lib")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(lib.parent))
    monkeypatch.setenv("LD_PRELOAD", "/opt/other.so")
    malloc.use_tcmalloc()
    [(path, args, env)] = execve
    assert path == sys.executable
    assert args == [sys.executable, "-m", "ptft_jax.train", "--workdir", "w"]
    assert env["LD_PRELOAD"] == f"{lib} /opt/other.so" and env["PTFT_JAX_TCMALLOC"] == "0"
    assert env["LD_LIBRARY_PATH"] == str(lib.parent)


def test_no_reexecution_when_off_done_or_not_found(tmp_path, monkeypatch, execve):
    lib = _stand_in(tmp_path / "lib")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(lib.parent))
    with monkeypatch.context() as m:
        m.setenv("PTFT_JAX_TCMALLOC", "0")
        malloc.use_tcmalloc()
    with monkeypatch.context() as m:
        m.setenv("LD_PRELOAD", "/usr/lib/libtcmalloc.so.4")  # preloaded already
        malloc.use_tcmalloc()
    with monkeypatch.context() as m:
        m.setattr(sys, "orig_argv", ["python", "-m", "ptft_jax.plot", "w"])  # not a command
        malloc.use_tcmalloc()
    with monkeypatch.context() as m:
        m.setenv("LD_LIBRARY_PATH", str(tmp_path))  # none there, and none in the system
        m.setattr(ctypes.util, "find_library", lambda name: None)
        malloc.use_tcmalloc()
    assert execve == []
    malloc.use_tcmalloc()  # the control: the same process with none of the above re-executes
    assert len(execve) == 1


def test_finder_order(tmp_path, monkeypatch):
    first, second = tmp_path / "a", tmp_path / "b"
    _stand_in(second, "libtcmalloc.so.4")
    minimal = _stand_in(second, "libtcmalloc_minimal.so.4")
    _stand_in(first, "libtcmalloc_debug.so.4")  # not a name the finder takes
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: f"lib{name}.so.9")
    monkeypatch.setenv("LD_LIBRARY_PATH", f"{first}{os.pathsep}{os.pathsep}{second}")
    assert malloc.find_tcmalloc() == str(minimal), "LD_LIBRARY_PATH first, the minimal one first"
    monkeypatch.setenv("LD_LIBRARY_PATH", str(first))
    assert malloc.find_tcmalloc() == "libtcmalloc_minimal.so.9", "then the system's"
    monkeypatch.setattr(ctypes.util, "find_library", {"tcmalloc": "libtcmalloc.so.9"}.get)
    assert malloc.find_tcmalloc() == "libtcmalloc.so.9"
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert malloc.find_tcmalloc() is None


def test_only_commands_reexecute(monkeypatch):
    monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "ptft_jax.train", "--workdir", "w"])
    assert malloc._command() == "train"
    monkeypatch.setattr(sys, "orig_argv", ["python", "-m", "pytest", "-q"])
    assert malloc._command() is None
    monkeypatch.setattr(sys, "orig_argv", ["python", "script.py"])
    assert malloc._command() is None
