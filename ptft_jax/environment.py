"""The environment of ``python -m ptft_jax.<command>``: no start-up warnings a user cannot
act on. Imports of ptft_jax as a library are never affected."""

from __future__ import annotations

import glob
import os
import sys


def quiet_environment() -> None:
    """For ``python -m ptft_jax.<command>`` only: no start-up warnings a user cannot act on.

    transformers advises installing PyTorch, which ptft_jax never needs; and with the ``tpu``
    extra installed, jax probes for a TPU and libtpu prints errors on hosts without one.
    """
    argv = getattr(sys, "orig_argv", [])
    module = argv[argv.index("-m") + 1] if "-m" in argv[:-1] else ""
    if not module.startswith("ptft_jax."):
        return
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "JAX_PLATFORMS" not in os.environ and not _has_accelerator():
        os.environ["JAX_PLATFORMS"] = "cpu"


def _has_accelerator() -> bool:
    """A TPU (``/dev/accel*``, or ``/dev/vfio/<n>`` on v5 and later) or an NVIDIA or AMD GPU."""
    nodes = ("/dev/accel[0-9]*", "/dev/vfio/[0-9]*", "/dev/nvidia[0-9]*", "/dev/kfd")
    return any(glob.glob(pattern) for pattern in nodes)
