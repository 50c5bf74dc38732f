"""Repeated training runs (a learning curve's sizes, an evaluation suite's grid), one harness.

    outcomes = run_jobs([Job("sst2 lr=2e-05 seed=1 pretrained", cfg, S / "..."), ...], K)

Each job is ``train.run(job.cfg, job.workdir)``, the one train path. A job that finished in an
earlier invocation (``W/job.json``: ``{"name", "config": the job's cfg as JSON, "summary":
train.run's summary without the state}``) is skipped and its summary read back; one that was
stopped or killed mid-run is run again, and ``train.run`` resumes it from its latest checkpoint.
A job whose config changed since it finished is not reused: its outcome is the sentence naming
what changed. A failed job (its one sentence; an unexpected exception's traceback in
``W/errors.log``) does not stop the others.

``devices_per_job=K`` runs ``local devices / K`` jobs side by side, each on its own K devices,
in threads of this process (meshes and logical-axis rules are thread-local); each job's log
lines go to its ``W/train.log`` and the terminal shows one progress bar over the jobs. A job's
numbers depend on its config and device count only, never on the jobs beside it or the order
they end in; with a ``-1`` mesh axis, 2 devices instead of 8 change the order of the float
reductions only: losses agree to float32 rounding, counts exactly (tests/test_jobs.py).
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import datetime
import json
import logging
import os
import pathlib
import queue
import shutil
import sys
import threading
import time
import traceback

import jax
import ml_collections

from ptft_jax import checkpoint, defaults, errors, metrics, plan, stopping, train

log = logging.getLogger(__name__)
RECORD = "job.json"


@dataclasses.dataclass(frozen=True)
class Job:
    """One training run: ``name`` is unique (the progress and failure lines show it), ``cfg`` a
    complete train config, ``workdir`` its own folder."""

    name: str
    cfg: ml_collections.ConfigDict
    workdir: pathlib.Path
    # False: once W/job.json holds the result, W/checkpoints and W/best are deleted (a grid of
    # fine-tuning runs would otherwise keep a model and its optimizer state per job)
    keep_checkpoints: bool = True


@dataclasses.dataclass
class Outcome:
    """How a job ended: its ``summary`` (``train.run``'s, JSON-able, without the state; None
    when it failed) or its one-sentence ``error``; ``skipped``: it had finished in an earlier
    invocation (the summary read back from ``W/job.json``)."""

    job: Job
    summary: dict | None
    error: str | None
    skipped: bool = False
    started: float = 0.0  # time.time() when it started here (0: it did not run here)
    seconds: float = 0.0  # how long it ran here
    devices: tuple[int, ...] = ()  # ids of the devices it ran on (empty: all, or not run here)


def run_jobs(
    jobs: list[Job], devices_per_job: int = 0, desc: str = "jobs", progress=None
) -> list[Outcome]:
    """Run every job; returns their outcomes in the order of ``jobs``.

    ``devices_per_job``: 0 runs one job at a time on all devices, in the order of the list; K
    (a divisor of the local device count) runs ``local devices / K`` at once, each on its own
    K devices. With several processes every process runs the same list in the same order, one
    job at a time on all devices (K must be 0; the workdirs on a filesystem they share, as
    checkpoints need, since process 0 writes ``W/job.json``). ``desc`` names the progress bar, on
    ``progress`` (standard error by default). SIGTERM or Ctrl-C: the running jobs save their
    step and stop, and the process exits (status 0, or 130 after Ctrl-C) as ``train`` does;
    the next invocation resumes them.
    """
    groups = device_groups(devices_per_job)
    _check_unique(jobs)
    outcomes: list[Outcome | None] = [None] * len(jobs)
    todo = []
    for i, job in enumerate(jobs):
        outcomes[i] = _finished_before(job)
        if outcomes[i] is None:
            todo.append(i)
    at_once = min(len(groups), max(len(todo), 1))
    bar = metrics.JobsBar(len(jobs), desc, at_once, progress)
    try:
        for outcome in outcomes:
            if outcome is not None:
                _report(bar, outcome)
        with _LogRoutes() as routes:
            _run_all(jobs, todo, groups[:at_once], outcomes, bar, routes)
    finally:
        bar.close()
    return outcomes


def device_groups(devices_per_job: int) -> list[list | None]:
    """The device subsets jobs run on: ``[None]`` (all devices, one job at a time) for 0."""
    if jax.process_count() > 1:
        if devices_per_job:
            raise errors.ConfigError(
                f"devices_per_job={devices_per_job} runs jobs side by side on one machine's "
                f"devices, but this run spans {jax.process_count()} processes; leave it at 0 "
                "to run one job at a time on all devices."
            )
        return [None]
    if devices_per_job == 0:
        return [None]
    devices, n = jax.local_devices(), jax.local_device_count()
    if devices_per_job < 0 or n % devices_per_job:
        divisors = [str(k) for k in range(1, n + 1) if n % k == 0]
        raise errors.ConfigError(
            f"devices_per_job={devices_per_job} does not divide the {n} local devices; pass "
            f"one of {', '.join(divisors)}, or 0 to run one job at a time on all of them."
        )
    k = devices_per_job
    return [devices[i : i + k] for i in range(0, n, k)]


def _check_unique(jobs: list[Job]) -> None:
    for what, key in (("name", lambda j: j.name), ("workdir", lambda j: j.workdir.resolve())):
        seen = collections.Counter(map(key, jobs))
        twice = [str(v) for v, count in seen.items() if count > 1]
        if twice:
            raise errors.ConfigError(
                f"two jobs share the {what} {twice[0]}; give every job its own {what}."
            )


def _run_all(jobs, todo, groups, outcomes, bar, routes) -> None:
    """Run ``todo`` (indices of ``jobs``) in one thread per device group, taking jobs in list
    order; fill in ``outcomes`` and the bar as jobs end. Signals reach this (the main) thread
    only: they ask the running jobs to checkpoint and stop."""
    pending, lock, ended = collections.deque(todo), threading.Lock(), queue.Queue()
    stop = threading.Event()

    def worker(devices):
        try:
            while not stop.is_set():
                with lock:
                    if not pending:
                        return
                    i = pending.popleft()
                ended.put((i, _run_one(jobs[i], devices, stop, routes)))
        except BaseException as e:  # noqa: BLE001 (handed to the main thread, raised there)
            ended.put((None, e))
        finally:
            ended.put((None, None))

    preemption = stopping.Preemption()  # SIGTERM and Ctrl-C: stop at the jobs' next steps
    try:
        threads = [threading.Thread(target=worker, args=(g,), daemon=True) for g in groups]
        for t in threads:
            t.start()
        running, raised = len(threads), None
        while running:
            try:
                i, got = ended.get(timeout=0.2)
            except queue.Empty:
                if preemption.signal is not None:
                    stop.set()
                continue
            if i is None and got is None:  # a worker ended
                running -= 1
            elif i is None:  # a worker raised: stop the others, raise it here
                raised = raised or got
                stop.set()
            elif got is not None:  # None: a signal stopped the job
                outcomes[i] = got
                _report(bar, got)
    finally:
        preemption.close()
    if raised is not None:
        raise raised
    if preemption.signal is not None:
        why = "interrupted" if preemption.interrupted else "preempted"
        bar.say(f"{why}: the running jobs saved a checkpoint; run the same command to resume.")
        sys.exit(errors.INTERRUPTED if preemption.interrupted else 0)


def _report(bar: metrics.JobsBar, outcome: Outcome) -> None:
    name, seconds = outcome.job.name, None if outcome.skipped else outcome.seconds
    if outcome.error is not None:
        bar.failed(name, outcome.error, seconds)
        return
    note, test = "", outcome.summary.get("test") or {}
    metric = outcome.summary.get("best_metric")
    if metric in test:
        note = f" (test {metric.replace('_', ' ')} {test[metric]:.4f})"
    bar.finished(name, seconds, note)


def _run_one(job: Job, devices, stop: threading.Event, routes: _LogRoutes) -> Outcome | None:
    """Train ``job`` (its log lines to ``W/train.log``); its outcome, or None when a signal
    stopped it (it resumes next time)."""
    started = time.time()
    ids = tuple(d.id for d in devices) if devices is not None else ()
    try:
        job.workdir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        error = f"{job.workdir} cannot be created ({e.strerror}); pass a folder you can write."
        return Outcome(job, None, error, False, started, 0.0, ids)
    with routes.route(job.workdir / "train.log"):
        log.info("job %s: training in %s on devices %s", job.name, job.workdir, ids or "all")
        try:
            summary = train.run(job.cfg, job.workdir, devices=devices, quiet=True, stop=stop)
        except errors.UserError as e:
            error = str(e)
        except Exception as e:  # noqa: BLE001 (one line here, the traceback in W/errors.log)
            error = _unexpected(job, e)
        else:
            error = None
        seconds = time.time() - started
        if error is not None:
            log.error("job %s failed: %s", job.name, error)
            return Outcome(job, None, error, False, started, seconds, ids)
    if summary.get("preempted"):
        return None
    summary = _record(job, summary)
    if not job.keep_checkpoints and jax.process_index() == 0:
        for folder in ("checkpoints", "best"):
            shutil.rmtree(job.workdir / folder, ignore_errors=True)
    return Outcome(job, summary, None, False, started, seconds, ids)


def _unexpected(job: Job, e: Exception) -> str:
    """``<Type>: <first line>`` of an exception no user can fix; its traceback appended to the
    job's ``W/errors.log``."""
    line = f"{type(e).__name__}: {checkpoint.first_line(e)}"
    path = checkpoint.errors_log(job.workdir)
    try:
        with open(path, "a", encoding="utf-8") as f:
            stamp = datetime.datetime.now().isoformat(timespec="seconds")
            f.write(f"--- {stamp} job {job.name} failed\n")
            f.write("".join(traceback.format_exception(e)))
    except OSError:
        return f"{line} (its traceback could not be written to {path})"
    return f"{line} (traceback in {path})"


def _config_json(cfg: ml_collections.ConfigDict) -> dict:
    return json.loads(cfg.to_json_best_effort())


def _record(job: Job, summary: dict) -> dict:
    """Write ``W/job.json`` (``{"name", "config", "summary"}``; the config as the job gave it)
    in one rename, so a kill leaves either none or the whole file; returns the summary as it
    reads back (JSON: lists for tuples)."""
    summary = json.loads(
        json.dumps({k: v for k, v in summary.items() if k != "state"}, default=_plain)
    )
    record = {"name": job.name, "config": _config_json(job.cfg), "summary": summary}
    if jax.process_index() == 0:
        path = job.workdir / RECORD
        tmp = path.with_name(f".{RECORD}.tmp")
        tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
        os.replace(tmp, path)
    return summary


def _plain(value):
    """A numpy or jax number or array as JSON takes it."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON-able")


def _finished_before(job: Job) -> Outcome | None:
    """The outcome of a job an earlier invocation finished (``W/job.json``), or None to run it;
    a job finished with another config is not reused: its outcome names what changed."""
    path = job.workdir / RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:  # written in one rename, so only a hand edit gets here
        error = f"{path} cannot be read ({e}); delete it to run the job again."
        return Outcome(job, None, error)
    then, now = plan.flat(record["config"]), plan.flat(_config_json(job.cfg))
    # A key the saved config lacks (newer than the run) had its default value then.
    default = plan.flat(_config_json(defaults.base_config()))
    changed = [k for k in sorted(now) if then.get(k, default.get(k, now[k])) != now[k]]
    if not changed:
        return Outcome(job, record["summary"], None, skipped=True)
    shown = ", ".join(f"{k}={then.get(k)} there, {now.get(k)} now" for k in changed[:3])
    more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
    error = (
        f"{job.workdir} finished with another config ({shown}{more}); pass another workdir "
        f"for this config, or delete {path} to train on in {job.workdir} with it."
    )
    return Outcome(job, None, error)


class _LogRoutes(logging.Handler):
    """While jobs run in threads: each job thread's log records (ours, Orbax's, warnings) go to
    its ``W/train.log``, none to the terminal, where the progress bar over jobs stays alone."""

    def __enter__(self) -> _LogRoutes:
        self.files: dict[int, logging.Handler] = {}  # thread ident -> its job's file
        root, ours = logging.getLogger(), logging.getLogger("ptft_jax")
        self.terminal = list(root.handlers)  # they no longer see a job's records
        for handler in self.terminal:
            handler.addFilter(self._not_a_job)
        root.addHandler(self)
        self.level = ours.level
        if ours.getEffectiveLevel() > logging.INFO:  # the job's info lines reach its file
            ours.setLevel(logging.INFO)
        self.warnings = getattr(logging, "_warnings_showwarning", None) is not None
        logging.captureWarnings(True)
        return self

    def __exit__(self, *exc) -> None:
        logging.captureWarnings(self.warnings)
        logging.getLogger("ptft_jax").setLevel(self.level)
        logging.getLogger().removeHandler(self)
        for handler in self.terminal:
            handler.removeFilter(self._not_a_job)

    def _not_a_job(self, record: logging.LogRecord) -> bool:
        return record.thread not in self.files

    def emit(self, record: logging.LogRecord) -> None:
        file = self.files.get(record.thread)
        if file is not None:
            file.handle(record)
        elif not self.terminal and logging.lastResort is not None:
            if record.levelno >= logging.lastResort.level:  # as if nothing handled it
                logging.lastResort.handle(record)

    @contextlib.contextmanager
    def route(self, path: pathlib.Path):
        """This thread's records go to ``path`` (appended) inside the block."""
        file = logging.FileHandler(path, encoding="utf-8")
        file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.files[threading.get_ident()] = file
        try:
            yield
        finally:
            del self.files[threading.get_ident()]
            file.close()
