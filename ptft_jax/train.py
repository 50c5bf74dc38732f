"""Train a BERT: ``python -m ptft_jax.train --config configs/x.py --workdir W [--config.K=V]``.

Resume order: a checkpoint in W wins; otherwise the state is initialised from scratch.
The loop below is the whole training procedure, in commented sections.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import pathlib
import sys
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
    distill,
    distributed,
    errors,
    evaluation,
    hf,
    metrics,
    optim,
    runlock,
    sharding,
    steps,
    stopping,
    weights,
)
from ptft_jax.data import pipeline, prepare, tokenize

log = logging.getLogger("ptft_jax.train")


def run(cfg, workdir: str | pathlib.Path, cli_model_keys: tuple[str, ...] = ()) -> dict:
    """Train as ``cfg`` says in ``workdir``, the only run there (``W/run.lock``); returns the
    final summary.

    ``cli_model_keys`` are the ``model.*`` keys set on the command line: with ``init_from``
    the checkpoint decides the model shape, and only those may contradict it (an error).
    """
    with runlock.RunLock(pathlib.Path(workdir)) as lock:
        return _run(cfg, pathlib.Path(workdir), cli_model_keys, lock)


def _run(cfg, workdir: pathlib.Path, cli_model_keys, lock: runlock.RunLock) -> dict:
    t_start = time.time()

    # --- Check everything a user can get wrong before building or compiling anything.
    config.validate(cfg)
    distributed.preflight(cfg)
    teacher = distill.teacher_of(cfg) if cfg.task == "distill" else None
    layers = tuple(cfg.train.student_layers_from_teacher)
    if teacher is not None:
        cfg = distill.student_config(cfg, teacher)  # the teacher's task, tokenizer, labels
    source = weights.resolve(cfg.init_from, cfg.allow_pytorch_bin) if cfg.init_from else None
    if teacher is not None and layers:
        source = distill.student_source(teacher, layers)
    if source is not None:
        cfg = config.apply_checkpoint_model(cfg, source.fields, source.tokenizer, cli_model_keys)
        config.validate(cfg)
    resuming = checkpoint.has_checkpoint(workdir)
    if resuming:
        changed = config.check_resume_compatible(workdir / "config.json", cfg)
        if changed:
            log.warning(
                "resuming with changed %s: the data order differs from the original run's",
                ", ".join(changed),
            )
    model_cfg, kind = config.model_config(cfg), config.model_task(cfg)
    mesh = sharding.make_mesh(cfg.mesh)
    accum = cfg.train.grad_accum_steps
    micro = cfg.train.batch_size // accum
    sharding.check_rows(mesh, micro)
    start, stop = sharding.process_rows(mesh, micro)
    layout = pipeline.BatchLayout(accum=accum, micro=micro, start=start, stop=stop)
    eval_layout = pipeline.BatchLayout(accum=1, micro=micro, start=start, stop=stop)

    # --- Data: records, tokenizer, the train dataset, the evaluation batches.
    get_tokenizer = tokenize.factory(cfg.data, workdir, model_cfg.vocab_size, resuming)
    data = prepare.for_task(cfg, kind, get_tokenizer, layout, eval_layout, workdir / "labels.json")
    data_iter = pipeline.train_iterator(data.train, cfg.data.num_threads, cfg.data.prefetch)
    per_epoch = data.steps_per_epoch if cfg.train.epochs else 0  # then epoch ends evaluate too
    total_steps = cfg.train.epochs * per_epoch if per_epoch else cfg.train.steps
    tx, schedule = optim.make_optimizer(cfg.train, max(total_steps, 1))
    init_fn = steps.make_init_fn(model_cfg, kind, tx, mesh, cfg.train.seed)
    pretrained = None
    if source is not None and not resuming:
        pretrained, fresh = hf.load_params(source.tensors(), jax.eval_shape(init_fn)["params"])
        heads = sorted({p.rsplit("/", 1)[0] for p in fresh})  # the modules, not each tensor
        note = f"; initialised fresh: {', '.join(heads)}" if heads else ""
        origin = cfg.init_from or f"layers {layers} of the teacher {cfg.train.teacher}"
        log.info("loaded %s%s", origin, note)

    # --- Everything checked: only now does the workdir get written.
    lock.create(resuming)
    if jax.process_index() == 0:
        if not (resuming and (workdir / "tokenizer").exists()):
            tokenize.save_tokenizer(data.tokenizer, workdir / "tokenizer")
        if data.label_names is not None:
            (workdir / "labels.json").write_text(json.dumps({"names": data.label_names}) + "\n")
        if not resuming:
            config.save(cfg, workdir / "config.json")
    log.info("data: %s", data.summary)

    with (
        jax.set_mesh(mesh),
        nnx.logical_axis_rules(sharding.LOGICAL_RULES),
        contextlib.ExitStack() as on_exit,
    ):
        # --- State: resume from the latest checkpoint in W, else initialise (+ pretrained).
        first = data.eval[0][0] if kind == "classification" else data.eval[0]
        train_step, eval_step, state_sh = steps.jit_steps(
            model_cfg,
            kind,
            tx,
            schedule,
            mesh,
            cfg.train.seed,
            {k: v.ndim for k, v in first.items()},
            teacher=distill.load_teacher(teacher, cfg, mesh),
            temperature=cfg.train.temperature,
        )
        ckpt = checkpoint.manager(workdir, cfg.train.keep_checkpoints)
        best_ckpt = checkpoint.manager(workdir, 1, "best") if kind == "classification" else None
        abstract = checkpoint.abstract_like(jax.eval_shape(init_fn), state_sh)
        found = checkpoint.restore_verified(ckpt, abstract) if resuming else None
        latest, tracker = None, {"best": None, "best_step": None, "since_best": 0}
        if found is not None:
            latest, state, data_state, meta = found
            tokenize.check_resumed(data.tokenizer, meta.get("tokenizer"), workdir, latest)
            data_iter.set_state(data_state)
            tracker.update(meta.get("tracker", {}))
        else:
            state = init_fn()
            if pretrained is not None:
                # Pretrained tensors replace the random ones; heads the checkpoint lacks stay.
                state["params"] = jax.tree.map(
                    lambda new, old, sh: (
                        old if isinstance(new, jax.ShapeDtypeStruct) else jax.device_put(new, sh)
                    ),
                    pretrained,
                    state["params"],
                    state_sh["params"],
                )
        step = int(jax.device_get(state["step"]))
        writer = metrics.Writer(workdir, total_steps, step, resumed=latest is not None)
        on_exit.callback(writer.close)  # also when an error stops the run: the bar goes first
        if latest is not None:
            writer.print(f"resuming from step {step} (checkpoint in {workdir / 'checkpoints'})")
        stop_at = min(cfg.train.stop_at_step or total_steps, total_steps)
        if latest is not None and step >= stop_at:
            writer.print(
                f"the checkpoint at step {step} already reaches step {stop_at}; "
                "raise --config.train.steps to train further"
            )

        embed_step = steps.jit_embed(model_cfg, mesh) if data.probe else None

        def evaluate(params, batches=None, labels=None, with_probe=False) -> dict:
            probe_with = (embed_step, eval_layout) if with_probe else None
            return evaluation.for_task(
                kind, eval_step, params, data, mesh, micro, model_cfg, batches, labels, probe_with
            )

        best_metric = cfg.train.metric_for_best or (
            "accuracy" if model_cfg.num_labels > 1 else "pearson"
        )

        # From here on SIGTERM and Ctrl-C finish the current step, save it and stop.
        preemption = stopping.Preemption()
        on_exit.callback(preemption.close)

        # --- Compile ahead of the loop, so compile time is measured on its own: MLM's one
        # shape; for classification, the train and eval steps of every length bucket, in
        # parallel threads.
        local, batch, compile_s, ev = None, None, 0.0, {}
        if step < stop_at and kind != "classification":
            t0 = time.time()
            local = next(data_iter)
            batch = sharding.to_global(local, mesh, layout.micro)
            train_step = train_step.lower(state, batch).compile()
            compile_s = time.time() - t0
            writer.print(f"compiled the train step in {compile_s:.1f}s")
        elif step < stop_at:
            t0 = time.time()

            train_step, eval_step = steps.compile_lengths(
                train_step, eval_step, state, first, data.lengths, accum, layout.micro
            )
            compile_s = time.time() - t0
            writer.print(
                f"compiled the train and eval steps for lengths {data.lengths} in {compile_s:.1f}s"
            )
        if step == 0 and total_steps:
            ev = evaluate(state["params"], with_probe=True)
            writer.write(0, "validation", evaluation.scalars(ev))

        # --- The loop. The host runs at most two steps ahead and reads metrics at log steps.
        pending, t_log, steps_since_log, tokens_since_log = [], time.time(), 0, 0
        skipped, nonfinite_at, stop_now = 0, None, False
        train_s, trained_steps, trained_tokens = 0.0, 0, 0
        if step >= stop_at:  # nothing to train: report where the checkpoint stands
            ev = evaluate(state["params"])
        while step < stop_at:
            if batch is None:
                local = next(data_iter)
                batch = sharding.to_global(local, mesh, layout.micro)
            state, step_metrics = train_step(state, batch)
            tokens_since_log += int(local["attention_mask"].sum()) * jax.process_count()
            batch = None
            step += 1
            steps_since_log += 1
            pending.append(step_metrics)
            if len(pending) > 2:
                # At most two steps in flight: the host still never idles the device, and a
                # SIGTERM is seen within about two steps, not log_every of them.
                jax.block_until_ready(pending[-3])
            writer.advance()
            last = step == stop_at
            stop_now = preemption.reached(step)  # SIGTERM or Ctrl-C: checkpoint this step
            if step % cfg.train.log_every == 0 or last or stop_now:
                host = jax.device_get(pending)
                bad = [step - len(host) + 1 + i for i, m in enumerate(host) if m["nonfinite"]]
                skipped += len(bad)
                if bad and cfg.train.on_nonfinite == "stop":
                    nonfinite_at, stop_now = bad[0], True
                dt = time.time() - t_log
                tok_s = tokens_since_log / max(dt, 1e-9)
                train_s, trained_steps = train_s + dt, trained_steps + steps_since_log
                trained_tokens += tokens_since_log
                row = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
                row.update(
                    nonfinite=len(bad),
                    tokens_per_s=tok_s,
                    examples_per_s=cfg.train.batch_size * steps_since_log / max(dt, 1e-9),
                    step_time_s=dt / steps_since_log,
                )
                writer.write(step, "train", row)
                pending, t_log, steps_since_log, tokens_since_log = [], time.time(), 0, 0
            epoch_end = per_epoch and step % per_epoch == 0
            stop_early = False
            if step % cfg.train.eval_every == 0 or last or epoch_end:
                ev = evaluate(state["params"], with_probe=last)
                writer.write(step, "validation", evaluation.scalars(ev))
                if best_ckpt is not None:
                    if metrics.is_better(best_metric, ev[best_metric], tracker["best"]):
                        tracker.update(best=ev[best_metric], best_step=step, since_best=0)
                        checkpoint.save_params(best_ckpt, step, state["params"])
                    else:
                        tracker["since_best"] += 1
                    stop_early = 0 < cfg.train.patience <= tracker["since_best"]
                t_log = time.time()  # evaluation time is not training throughput
            if step % cfg.train.checkpoint_every == 0 or last or stop_early or stop_now:
                meta = {
                    "step": step,
                    "tracker": tracker,
                    "config": json.loads(cfg.to_json_best_effort()),
                    "tokenizer": tokenize.tokenizer_fingerprint(data.tokenizer),
                }
                checkpoint.save(ckpt, step, state, data_iter.get_state(), meta)
            if stop_early:
                writer.print(
                    f"early stop at step {step}: {best_metric} did not improve in "
                    f"{cfg.train.patience} evaluations (best {tracker['best']:.4f} at step "
                    f"{tracker['best_step']})"
                )
                break
            if stop_now:
                break
        if total_steps == 0 and latest is None:
            # A converted (or freshly initialised) step-0 model for export, predict, evaluate.
            meta = {"step": 0, "config": json.loads(cfg.to_json_best_effort())}
            checkpoint.save(ckpt, 0, state, data_iter.get_state(), meta)

        # --- Done: the best checkpoint on the test split (classification), the summary.
        checkpoint.finish(ckpt)
        checkpoint.finish(best_ckpt, close=False)
        if nonfinite_at is not None or stop_now:
            checkpoint.finish(best_ckpt)
            writer.close()
        if nonfinite_at is not None:
            raise stopping.NonFiniteError(
                f"The loss or gradient was not finite at step {nonfinite_at}; that update was "
                f"dropped and the last good state is saved at step {step}. Lower "
                "train.learning_rate, check the data, or set train.on_nonfinite=skip."
            )
        if stop_now:  # preempted: exit promptly, the next run resumes from this checkpoint
            if jax.process_index() == 0:
                why = "interrupted" if preemption.interrupted else "preempted"
                print(
                    f"{why}: saved a checkpoint at step {step}; run the same command to resume.",
                    flush=True,
                )
            return {
                "step": step,
                "preempted": True,
                "interrupted": preemption.interrupted,
                "state": state,
            }
        test = {}
        if best_ckpt is not None:
            best_params = state["params"]
            if best_ckpt.latest_step() is not None:
                best_params = checkpoint.restore_params(best_ckpt, state["params"])
            best_ckpt.close()
            if data.test is not None:
                test = evaluate(best_params, data.test, data.test_labels)
                test["step"] = tracker["best_step"] or step
                if jax.process_index() == 0:
                    (workdir / "eval_test.json").write_text(json.dumps(test, indent=2) + "\n")
        tok_s = trained_tokens / train_s if train_s else 0.0
        summary = {
            "step": step,
            "skipped_steps": skipped,
            "eval_loss": ev.get("loss", float("nan")),
            "eval_accuracy": ev.get(steps.ACCURACY[kind], float("nan")),
            "test": test,
            "tokens_per_s": tok_s,
            "compile_s": compile_s,
            "wall_s": time.time() - t_start,
        }
        writer.close()
        if jax.process_index() == 0:
            extra = f", test {best_metric} {test[best_metric]:.4f}" if test else ""
            extra += (
                f", probe accuracy {ev['probe_accuracy']:.4f}" if "probe_accuracy" in ev else ""
            )
            if trained_steps:  # a run that found its work done reports no speed
                extra += f", {tok_s:,.0f} tokens/s, compile {compile_s:.1f}s"
            print(
                f"done: step {step}, eval loss {summary['eval_loss']:.4f}, "
                f"{steps.ACCURACY[kind].replace('_', ' ')} {summary['eval_accuracy']:.4f}"
                f"{extra}, wall {summary['wall_s']:.1f}s",
                flush=True,
            )
        return {**summary, "state": state}


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
    distributed.initialize(f.coordinator_address, f.num_processes, f.process_id)
    model_keys = tuple(
        a.split("=", 1)[0].removeprefix("--config.model.")
        for a in sys.argv[1:]
        if a.startswith("--config.model.")
    )
    try:
        summary = run(f.config, f.workdir, model_keys)
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
