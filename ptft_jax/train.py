"""Train a model: ``python -m ptft_jax.train --config configs/x.py --workdir W [--config.K=V]``.

Resume order: a checkpoint in W wins; otherwise the state is initialised from scratch (or from
``init_from``). ``_run`` is the whole procedure: setup (``plan.make``: every check before
anything is written or compiled, the data built), the state, compilation, the training loop
(``_train``, a visible ``for`` loop in commented sections) and the finish (``ending.py``).
What differs between tasks is the task's (``tasks/``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import logging
import pathlib
import sys
import threading
import time

import jax
import numpy as np
from absl import app, flags
from flax import nnx
from ml_collections import config_flags

from ptft_jax import (
    aot,
    checkpoint,
    cli,
    config,
    distributed,
    ending,
    errors,
    metrics,
    plan,
    recovery,
    runlock,
    sharding,
    steps,
    stopping,
    weights,
)
from ptft_jax import best as best_lib
from ptft_jax import workdir as workdir_lib
from ptft_jax.data import tokenize
from ptft_jax.tasks.base import EvalContext

log = logging.getLogger("ptft_jax.train")


def run(
    cfg,
    workdir: str | pathlib.Path,
    cli_model_keys: tuple[str, ...] = (),
    devices=None,
    quiet: bool = False,
    stop: threading.Event | None = None,
) -> dict:
    """Train as ``cfg`` says in ``workdir``, the only run there (``W/run.lock``); returns the
    final summary.

    ``cli_model_keys`` are the ``model.*`` keys set on the command line: with ``init_from``
    the checkpoint decides the model shape, and only those may contradict it (an error).
    ``devices``: the devices the mesh is built on (default: all; a ``-1`` mesh axis takes the
    rest of these). ``quiet``: no progress bar or summary line on the terminal, those lines go
    to the ``ptft_jax`` logger instead (the workdir gets everything as usual). ``stop``: when
    set, the run checkpoints its current step and returns, as after SIGTERM (how the job
    runner stops runs in its threads: signals reach only the main thread).
    """
    with runlock.RunLock(pathlib.Path(workdir)) as lock:
        return _run(cfg, pathlib.Path(workdir), cli_model_keys, lock, devices, quiet, stop)


def _run(cfg, workdir: pathlib.Path, cli_model_keys, lock, devices, quiet, stop) -> dict:
    t_start = time.time()
    # --- Check everything a user can get wrong and build the data; nothing is written yet.
    s = plan.make(cfg, workdir, cli_model_keys, devices)
    cfg, task, mesh = s.cfg, s.task, s.mesh

    # --- Everything checked: only now does the workdir get written.
    lock.create(s.resuming)
    workdir_lib.write_run_files(workdir, cfg, s.data.tokenizer, s.data.label_names, s.resuming)
    log.info("data: %s", s.data.summary)

    with (
        jax.set_mesh(mesh),
        nnx.logical_axis_rules(sharding.LOGICAL_RULES),
        contextlib.ExitStack() as on_exit,
    ):
        on_exit.callback(checkpoint.route_orbax_logs(workdir))  # their tracebacks: W/errors.log
        # --- The steps; a distillation's teacher rides along as the train step's third input.
        teacher = weights.load_teacher(s.teacher, cfg, mesh)
        extra = ()
        if teacher is not None:
            task, extra = task.with_teacher(teacher[0]), (teacher[1],)
        train_step, eval_step, state_sh = steps.jit_steps(
            s.model_cfg, task, s.tx, s.schedule, mesh, cfg.train.seed, *extra
        )

        # --- State: resume from the latest checkpoint in W, else initialise (+ pretrained).
        ckpt = checkpoint.manager(workdir, cfg.train.keep_checkpoints)
        on_exit.push(lambda kind, *_: checkpoint.settle(ckpt) if kind else None)  # on errors
        state, latest, tracker = _initial_state(s, workdir, ckpt, state_sh)
        best = None  # the task's best checkpoint by its metric, when it keeps one
        if task.best_metric() is not None:
            best = best_lib.Best(workdir, task.best_metric(), cfg.train.patience, tracker)
        step = int(jax.device_get(state["step"]))
        writer = metrics.Writer(workdir, s.total_steps, step, latest is not None, quiet=quiet)
        on_exit.callback(writer.close)  # also when an error stops the run: the bar goes first
        if latest is not None:
            writer.print(f"resuming from step {step} (checkpoint in {workdir / 'checkpoints'})")
        stop_at = min(cfg.train.stop_at_step or s.total_steps, s.total_steps)
        if latest is not None and step >= stop_at:
            writer.print(
                f"the checkpoint at step {step} already reaches step {stop_at}; "
                "raise --config.train.steps to train further"
            )
        forward = steps.jit_forward(s.model_cfg, task.head, mesh) if s.data.probe else None
        ctx = EvalContext(eval_step, s.data, mesh, s.layout.micro, forward, s.eval_layout)

        # From here on SIGTERM and Ctrl-C finish the current step, save it and stop.
        preemption = stopping.Preemption()
        on_exit.callback(preemption.close)

        # --- Compile ahead of the loop, so compile time is measured on its own.
        first, compile_s = None, 0.0
        if step < stop_at:
            train_step, eval_step, first, compile_s = _compile(
                s, task, train_step, eval_step, state, extra, writer
            )
            ctx.eval_step = eval_step
        ev = {}
        if step == 0 and s.total_steps:
            ev = task.evaluate(ctx, state["params"], with_probe=True)
            writer.write(0, "validation", metrics.scalars(ev))
        if step >= stop_at:  # nothing to train: report where the checkpoint stands
            ev = task.evaluate(ctx, state["params"])

        # --- The loop.
        loop = Loop(state, step, stop_at, tracker, writer, ckpt, best, preemption, ev, latest, stop)
        _train(s, task, loop, train_step, extra, ctx, first)

        # --- Done: the best checkpoint on the test split, the summary.
        return ending.finish(s, task, loop, ctx, workdir, compile_s, t_start)


def _initial_state(s: plan.Plan, workdir: pathlib.Path, ckpt, state_sh):
    """``(state, the step resumed from or None, the best-checkpoint tracker)``."""
    abstract = checkpoint.abstract_like(jax.eval_shape(s.init_fn), state_sh)
    found = recovery.restore_verified(ckpt, abstract) if s.resuming else None
    tracker = {"best": None, "best_step": None, "since_best": 0}
    if found is not None:
        latest, state, data_state, meta = found
        tokenize.check_resumed(s.data.tokenizer, meta.get("tokenizer"), workdir, latest)
        s.data_iter.set_state(data_state)
        tracker.update(meta.get("tracker", {}))
        return state, latest, tracker
    state = s.init_fn()
    if s.pretrained is not None:  # pretrained tensors replace the random ones
        state["params"] = weights.place(s.pretrained, state["params"], state_sh["params"])
    return state, None, tracker


def _compile(s: plan.Plan, task, train_step, eval_step, state, extra, writer):
    """The steps compiled ahead: one shape (the first batch's, returned to train on), or the
    train and eval steps of every length bucket in parallel threads."""
    t0 = time.time()
    if not s.data.lengths:
        local = next(s.data_iter)
        batch = sharding.to_global(local, s.mesh, s.layout.micro)
        train_step = train_step.lower(state, batch, *extra).compile()
        compile_s = time.time() - t0
        writer.print(f"compiled the train step in {compile_s:.1f}s")
        return train_step, eval_step, (local, batch), compile_s
    accum, rows = s.layout.accum, s.layout.micro
    train_step, eval_step = steps.compile_lengths(
        train_step, eval_step, state, task, s.data.lengths, accum, rows, extra
    )
    compile_s = time.time() - t0
    lengths = s.data.lengths
    writer.print(f"compiled the train and eval steps for lengths {lengths} in {compile_s:.1f}s")
    return train_step, eval_step, None, compile_s


@dataclasses.dataclass
class Loop:
    """What the loop changes as it goes."""

    state: dict
    step: int
    stop_at: int
    tracker: dict  # the best evaluation so far: best, best_step, since_best
    writer: metrics.Writer
    ckpt: object
    best: best_lib.Best | None
    preemption: stopping.Preemption
    ev: dict  # the latest evaluation
    resumed_from: int | None
    stop: threading.Event | None = None  # set: checkpoint and return, as after SIGTERM
    stop_now: bool = False  # SIGTERM, Ctrl-C, or a non-finite step under on_nonfinite=stop
    nonfinite_at: int | None = None
    skipped: int = 0
    train_s: float = 0.0
    trained_steps: int = 0
    trained_tokens: int = 0
    computed_tokens: int = 0  # positions the steps computed: real tokens plus padding


def _train(s: plan.Plan, task, loop: Loop, train_step, extra, ctx: EvalContext, first) -> None:
    """Train from ``loop.step`` to ``loop.stop_at``. The host runs at most two steps ahead and
    reads metrics at log steps only."""
    cfg, t = s.cfg, s.cfg.train
    local, batch = first or (None, None)
    window = {"pending": [], "t0": time.time(), "steps": 0, "tokens": 0, "computed": 0}
    for step in range(loop.step + 1, loop.stop_at + 1):
        # --- One step (the batch of the compile run is the first one).
        if batch is None:
            local = next(s.data_iter)
            batch = sharding.to_global(local, s.mesh, s.layout.micro)
        loop.state, step_metrics = train_step(loop.state, batch, *extra)
        real, computed = task.token_counts(local)
        window["tokens"] += real * jax.process_count()
        window["computed"] += computed * jax.process_count()
        batch, loop.step = None, step
        window["steps"] += 1
        window["pending"].append(step_metrics)
        if len(window["pending"]) > 2:
            # At most two steps in flight: the host still never idles the device, and a
            # SIGTERM is seen within about two steps, not log_every of them.
            jax.block_until_ready(window["pending"][-3])
        loop.writer.advance()
        checkpoint.check_saves(loop.ckpt)  # a failed background save stops the run here
        checkpoint.check_saves(loop.best.mgr if loop.best is not None else None)
        last = step == loop.stop_at
        # SIGTERM, Ctrl-C or the caller's stop: checkpoint here
        loop.stop_now = loop.preemption.reached(step) or bool(loop.stop and loop.stop.is_set())

        # --- Log: train metrics, throughput, non-finite steps.
        if step % t.log_every == 0 or last or loop.stop_now:
            _log(loop, window, cfg)

        # --- Evaluate: every eval_every steps, at epoch ends and at the last step.
        epoch_end = s.per_epoch and step % s.per_epoch == 0
        stop_early = False
        if step % t.eval_every == 0 or last or epoch_end:
            loop.ev = task.evaluate(ctx, loop.state["params"], with_probe=last)
            loop.writer.write(step, "validation", metrics.scalars(loop.ev))
            if loop.best is not None:
                stop_early = loop.best.update(step, loop.ev, loop.state["params"])
                if loop.tracker["best_step"] == step:  # the summary's validation numbers
                    loop.tracker["validation"] = metrics.scalars(loop.ev)
            window["t0"] = time.time()  # evaluation time is not training throughput

        # --- Checkpoint, then stop early (patience) or on a signal.
        if step % t.checkpoint_every == 0 or last or stop_early or loop.stop_now:
            _save(loop, s)
        if stop_early:
            loop.writer.print(
                f"early stop at step {step}: {task.best_metric()} did not improve in "
                f"{t.patience} evaluations (best {loop.tracker['best']:.4f} at step "
                f"{loop.tracker['best_step']})"
            )
            break
        if loop.stop_now:
            break
    if s.total_steps == 0 and loop.resumed_from is None:
        # A converted (or freshly initialised) step-0 model for export, predict, evaluate.
        meta = {"step": 0, "config": json.loads(cfg.to_json_best_effort())}
        checkpoint.save(loop.ckpt, 0, loop.state, s.data_iter.get_state(), meta)


def _log(loop: Loop, window: dict, cfg) -> None:
    """One train row from the steps since the last: their mean metrics and the throughput."""
    host = jax.device_get(window["pending"])
    bad = [loop.step - len(host) + 1 + i for i, m in enumerate(host) if m["nonfinite"]]
    loop.skipped += len(bad)
    if bad and cfg.train.on_nonfinite == "stop":
        loop.nonfinite_at, loop.stop_now = bad[0], True
    dt, n = time.time() - window["t0"], window["steps"]
    loop.train_s, loop.trained_steps = loop.train_s + dt, loop.trained_steps + n
    loop.trained_tokens += window["tokens"]
    loop.computed_tokens += window["computed"]
    row = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
    row.update(
        nonfinite=len(bad),
        tokens_per_s=window["tokens"] / max(dt, 1e-9),
        real_token_share=window["tokens"] / max(window["computed"], 1),
        examples_per_s=cfg.train.batch_size * n / max(dt, 1e-9),
        step_time_s=dt / n,
    )
    loop.writer.write(loop.step, "train", row)
    window.update(pending=[], t0=time.time(), steps=0, tokens=0, computed=0)


def _save(loop: Loop, s: plan.Plan) -> None:
    meta = {
        "step": loop.step,
        "tracker": loop.tracker,
        "config": json.loads(s.cfg.to_json_best_effort()),
        "tokenizer": tokenize.tokenizer_fingerprint(s.data.tokenizer),
    }
    checkpoint.save(loop.ckpt, loop.step, loop.state, s.data_iter.get_state(), meta)


@cli.guarded
def main(argv) -> None:
    """absl entry point: user errors become one line on stderr and exit status 2 (cli.guarded),
    a non-finite loss exit status 3, Ctrl-C (after saving) exit status 130."""
    if len(argv) > 1:
        raise config.ConfigError(
            f"unexpected arguments {' '.join(argv[1:])}; config values go as --config.KEY=VALUE."
        )
    metrics.quiet_logs()
    f = flags.FLAGS
    if f.config is None or not (f.workdir or f.compile_only):
        cli.fail("pass --config configs/<name>.py and --workdir <dir>.")
    if f.compile_only:  # pods on paper: no workdir, no data, no local devices
        print(aot.describe(aot.compile_report(f.config, f.topology), f.config), flush=True)
        return
    cfg = config.command_line_wins(f.config, sys.argv[1:])  # before processes wait on others
    distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
    given = config.given_keys(sys.argv[1:])
    model_keys = tuple(k.removeprefix("model.") for k in given if k.startswith("model."))
    try:
        summary = run(cfg, f.workdir, model_keys)
    except stopping.NonFiniteError as e:
        cli.fail(str(e), errors.NON_FINITE)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        cli.fail(
            f"The disk is full ({e.filename or f.workdir}); free space there or move --workdir "
            "to a bigger disk, then run the same command to resume."
        )
    if summary.get("interrupted"):
        sys.exit(errors.INTERRUPTED)


if __name__ == "__main__":
    # Flags are defined only when run as a program, so entry points import each other freely.
    config_flags.DEFINE_config_file("config", None, "Config file (a get_config() .py).")
    flags.DEFINE_string("workdir", None, "Run folder: checkpoints, logs, tokenizer.")
    flags.DEFINE_string("coordinator_address", "", "Multi-process: host:port of process 0.")
    flags.DEFINE_integer("num_processes", 0, "Multi-process: how many processes in all.")
    flags.DEFINE_integer("process_id", -1, "Multi-process: this process's index.")
    flags.DEFINE_bool("compile_only", False, "Compile the train step for --topology and report.")
    flags.DEFINE_string(
        "topology", "v5p:2x2x1", "With --compile_only: a TPU slice, e.g. v5p:4x4x4."
    )
    app.run(main, flags_parser=cli.parse_config_flags)
