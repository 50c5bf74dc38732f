"""Run ptft_jax's commands on tcmalloc when the system has it.

XLA on CPU allocates and frees large buffers every step. glibc's malloc returns them to the
kernel and takes them back as fresh zeroed pages (millions of page faults per minute, about a
fifth of a step's time on a 2-core machine); tcmalloc keeps them. ``python -m ptft_jax.<command>``
therefore re-executes itself once, before anything else is imported, with tcmalloc in
``LD_PRELOAD`` when a tcmalloc library is installed (Debian/Ubuntu: ``libtcmalloc-minimal4``;
elsewhere, a ``libtcmalloc_minimal.so*`` or ``libtcmalloc.so*`` in a folder of
``LD_LIBRARY_PATH`` is found too, with no compiler or ldconfig needed).
``PTFT_JAX_TCMALLOC=0`` turns this off. Imports of ptft_jax as a library are never affected.
"""

from __future__ import annotations

import ctypes.util
import glob
import os
import sys

COMMANDS = ("train", "evaluate", "predict", "export", "bench")
_LIBS = ("tcmalloc_minimal", "tcmalloc")


def _command() -> str | None:
    """The ptft_jax command this interpreter was started for (``python -m ptft_jax.X``)."""
    argv = getattr(sys, "orig_argv", [])
    for i, arg in enumerate(argv[:-1]):
        if arg == "-m":
            module = argv[i + 1]
            prefix, _, name = module.partition(".")
            return name if prefix == "ptft_jax" and name in COMMANDS else None
    return None


def find_tcmalloc() -> str | None:
    """A tcmalloc library: a file in a folder of ``LD_LIBRARY_PATH`` first (the dynamic
    loader's own order), else the name ctypes finds (the system's library cache)."""
    folders = [f for f in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if f]
    for folder in folders:
        for name in _LIBS:
            found = sorted(glob.glob(os.path.join(glob.escape(folder), f"lib{name}.so*")))
            if found:
                return os.path.abspath(found[0])
    for name in _LIBS:
        found = ctypes.util.find_library(name)
        if found:
            return found
    return None


def use_tcmalloc() -> None:
    """Re-execute this command with tcmalloc preloaded, when that applies (see the module doc)."""
    if os.environ.get("PTFT_JAX_TCMALLOC", "1") == "0" or _command() is None:
        return
    if "tcmalloc" in os.environ.get("LD_PRELOAD", ""):
        return
    lib = find_tcmalloc()
    if lib is None:
        return
    env = dict(os.environ)
    env["LD_PRELOAD"] = f"{lib} {env['LD_PRELOAD']}" if env.get("LD_PRELOAD") else lib
    env["PTFT_JAX_TCMALLOC"] = "0"  # never twice, even if the preload did not take
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
