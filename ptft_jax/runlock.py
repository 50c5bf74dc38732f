"""One run per workdir: ``W/run.lock``, held by the training run (its process 0) while it runs.

The lock is an ``flock`` on the file, so the kernel (or the NFS server) drops it when the holder
dies, even by ``kill -9``; the file's text names the holder (pid, host, start time) for the
message a second run prints. A finished run removes the file.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import logging
import os
import pathlib
import socket

import jax
import numpy as np
from jax.experimental import multihost_utils

from ptft_jax import checkpoint
from ptft_jax.errors import ConfigError

NAME = "run.lock"
log = logging.getLogger(__name__)


class WorkdirBusy(ConfigError):
    """Another live run holds the workdir."""


def _holder(fd: int) -> dict:
    """The holder's description from the lock file (empty if none or unreadable)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        found = json.loads(os.read(fd, 4096).decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def _who(holder: dict) -> str:
    return (
        f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, "
        f"started {holder.get('started', '?')}"
    )


class Lock:
    """The held lock of one workdir; ``release`` removes the file and drops the lock."""

    def __init__(self, path: pathlib.Path, fd: int | None):
        self.path, self.fd = path, fd

    def release(self) -> None:
        if self.fd is None:
            return
        # Unlink first, still holding the lock: a run that opened the old file meanwhile sees
        # that it no longer has this name and starts over on a fresh file.
        self.path.unlink(missing_ok=True)
        os.close(self.fd)
        self.fd = None


def acquire(workdir: pathlib.Path) -> Lock:
    """Take ``W/run.lock`` (the workdir must exist); a live holder stops this run with one
    sentence naming it, a dead one's lock is taken over with a line saying so."""
    path = workdir / NAME
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            raise WorkdirBusy(
                f"Another run is training in {workdir} ({_who(holder)}); wait for it to finish "
                "or stop it, or pass another --workdir."
            ) from None
        except OSError as e:  # a filesystem without locks: say so, run unprotected
            if e.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS):
                raise
            os.close(fd)
            log.warning("%s cannot be locked (%s): nothing stops a second run there", path, e)
            return Lock(path, None)
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the file was removed by a run that just finished: lock the new one
    previous = _holder(fd)
    if previous:
        log.info("took over %s from a run that is no longer running (%s)", path, _who(previous))
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().isoformat(timespec="seconds"),
    }
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, (json.dumps(me) + "\n").encode("utf-8"))
    return Lock(path, fd)


def _agree(ok: bool) -> bool:
    """Process 0's ``ok`` on every process (only process 0 takes the lock)."""
    if jax.process_count() == 1:
        return ok
    return bool(multihost_utils.broadcast_one_to_all(np.asarray(ok)))


class RunLock:
    """``with RunLock(W) as lock:`` holds W's lock for a training run: from the start when W
    exists, else from ``lock.create()``, which makes W once every check has passed."""

    def __init__(self, workdir: pathlib.Path):
        self.workdir, self.lock, self.taken = workdir, None, False

    def _take(self) -> None:
        self.taken, error = True, None
        if jax.process_index() == 0:
            try:
                self.lock = acquire(self.workdir)
            except WorkdirBusy as e:
                error = e
        if not _agree(error is None):
            raise error or WorkdirBusy(f"Process 0 could not lock {self.workdir}; see its error.")

    def __enter__(self) -> RunLock:
        if self.workdir.is_dir():
            self._take()
        return self

    def create(self, resuming: bool) -> None:
        """Make the workdir and hold its lock; stop if another run wrote a checkpoint there
        while this one was starting (this one decided without it)."""
        if self.taken:
            return
        if jax.process_index() == 0:
            self.workdir.mkdir(parents=True, exist_ok=True)
        self._take()
        if checkpoint.has_checkpoint(self.workdir) != resuming:
            raise WorkdirBusy(
                f"Another run wrote a checkpoint to {self.workdir} while this one was starting; "
                "run the same command again to resume from it."
            )

    def __exit__(self, *exc) -> None:
        if self.lock is not None:
            self.lock.release()
            self.lock = None
