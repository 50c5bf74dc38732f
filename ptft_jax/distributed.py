"""Multi-process runs: joining the cluster, and a preflight that all processes agree.

One process per host (or per GPU) runs the same command. ``initialize`` joins them through
``jax.distributed``: automatically on TPU pods, SLURM and Open MPI, or from explicit
``--coordinator_address``, ``--num_processes`` and ``--process_id`` flags (what
``launch/local_multiprocess.sh`` passes). ``preflight`` then compares a hash of the resolved
config and of the library versions across processes, so a mismatch stops every process with
one sentence instead of hanging in the first collective.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os

import jax
import numpy as np

from ptft_jax import __version__
from ptft_jax.errors import ConfigError

log = logging.getLogger(__name__)


def _in_cluster() -> bool:
    """Whether SLURM, Open MPI or a TPU pod started this process as one of several."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1:
        return True
    if int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return True
    return len(os.environ.get("TPU_WORKER_HOSTNAMES", "").split(",")) > 1


def initialize(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1):
    """Join the other processes of this run, if there are any; a no-op for one process."""
    explicit = bool(coordinator_address) or num_processes > 1
    if explicit:
        if not coordinator_address or num_processes < 1 or not 0 <= process_id < num_processes:
            raise ConfigError(
                "--coordinator_address, --num_processes and --process_id go together: pass "
                "host:port, the process count, and this process's index below that count."
            )
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    elif _in_cluster():
        jax.distributed.initialize()
    else:
        return
    log.info(
        "process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )


def fingerprint(cfg) -> dict:
    """What every process of one run must share: the resolved config and library versions."""
    versions = {"ptft_jax": __version__, "jax": jax.__version__}
    for package in ("flax", "orbax-checkpoint", "jaxlib"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "none"
    return {"config": json.loads(cfg.to_json_best_effort()), "versions": versions}


def preflight(cfg) -> None:
    """Stop every process with one sentence when their configs or versions differ."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    text = json.dumps(fingerprint(cfg), sort_keys=True)
    digest = np.frombuffer(hashlib.sha256(text.encode()).digest(), np.uint8)
    every = np.asarray(multihost_utils.process_allgather(digest))  # [processes, 32]
    differ = [i for i in range(every.shape[0]) if not np.array_equal(every[i], every[0])]
    if differ:
        raise ConfigError(
            f"process {differ[0]} runs a different config or different versions of "
            "jax/flax/orbax/ptft_jax than process 0; start every process from the same "
            "revision with the same arguments."
        )
