"""Train a BERT: ``python -m ptft_jax.train --config configs/x.py --workdir W [--config.K=V]``.

Resume order: a checkpoint in W wins; otherwise the state is initialised from scratch.
The loop below is the whole training procedure, in commented sections.
"""

from __future__ import annotations

import json
import logging
import pathlib
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx
from jax.experimental import multihost_utils
from ml_collections import config_flags

from ptft_jax import checkpoint, config, hf, metrics, optim, sharding, steps
from ptft_jax.data import pipeline, sources, tokenize
from ptft_jax.data.builtin import cache_dir

USER_ERRORS = (config.ConfigError, sources.DataError, sharding.MeshError)


def _evaluate(eval_step, params, eval_data, mesh, rows: int) -> dict:
    """Metrics over the held-out batches (masked once, identically for every evaluation)."""
    totals = None
    for batch in eval_data:
        sums = eval_step(params, sharding.to_global(batch, mesh, rows))
        totals = sums if totals is None else jax.tree.map(jnp.add, totals, sums)
    return metrics.mlm_eval_metrics(jax.device_get(totals))


def run(cfg, workdir: str | pathlib.Path, cli_model_keys: tuple[str, ...] = ()) -> dict:
    """Train as ``cfg`` says in ``workdir``; returns the final summary.

    ``cli_model_keys`` are the ``model.*`` keys set on the command line: with ``init_from``
    the checkpoint decides the model shape, and only those may contradict it (an error).
    """
    t_start = time.time()
    workdir = pathlib.Path(workdir)

    # --- Check everything a user can get wrong before building or compiling anything.
    config.validate(cfg)
    init_folder = hf.resolve(cfg.init_from) if cfg.init_from else None
    if init_folder is not None:
        fields = hf.read_config(init_folder)
        cfg = config.apply_checkpoint_model(cfg, fields, init_folder, cli_model_keys)
        config.validate(cfg)
    resuming = checkpoint.has_checkpoint(workdir)
    if resuming:
        changed = config.check_resume_compatible(workdir / "config.json", cfg)
        if changed:
            logging.warning(
                "resuming with changed %s: the data order differs from the original run's",
                ", ".join(changed),
            )
    model_cfg = config.model_config(cfg)
    mesh = sharding.make_mesh(cfg.mesh)
    accum = cfg.train.grad_accum_steps
    micro = cfg.train.batch_size // accum
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    if micro % shards:
        raise config.ConfigError(
            f"The microbatch (train.batch_size / grad_accum_steps = {micro}) is not divisible by "
            f"the data x fsdp mesh size {shards}; change train.batch_size or mesh.*."
        )
    start, stop = sharding.process_rows(mesh, micro)
    layout = pipeline.BatchLayout(accum=accum, micro=micro, start=start, stop=stop)
    eval_layout = pipeline.BatchLayout(accum=1, micro=micro, start=start, stop=stop)

    # --- Data: records, tokenizer, packed blocks, the masked evaluation batches.
    records = sources.load_records(cfg.data.source)
    train_texts, eval_texts = pipeline.mlm_texts(cfg.data, records)
    tokenizer = tokenize.get_tokenizer(
        cfg.data, workdir, train_texts, model_cfg.vocab_size, resuming
    )
    if jax.process_count() > 1 and not resuming and not cfg.data.tokenizer:
        # Every host must use process 0's tokenizer (training may break ties differently).
        if jax.process_index() == 0:
            tokenize.save_tokenizer(tokenizer, workdir / "tokenizer")
        multihost_utils.sync_global_devices("ptft_jax:tokenizer")
        tokenizer = tokenize.load_tokenizer(str(workdir / "tokenizer"))
    seq_len = cfg.data.max_seq_length
    train_blocks = pipeline.pack_texts(train_texts, tokenizer, seq_len, cache_dir())
    eval_blocks = pipeline.pack_texts(eval_texts, tokenizer, seq_len, cache_dir())
    spec = pipeline.masking_spec(cfg.data, tokenizer)
    dataset = pipeline.train_dataset(train_blocks, spec, layout, cfg.train.seed)
    data_iter = pipeline.train_iterator(dataset, cfg.data.num_threads, cfg.data.prefetch)
    eval_data = list(
        pipeline.eval_batches(
            eval_blocks, spec, eval_layout, cfg.train.seed, cfg.train.eval_batches
        )
    )

    abstract_state = jax.eval_shape(
        steps.make_init_fn(
            model_cfg, cfg.task, optim.make_optimizer(cfg.train, 1)[0], mesh, cfg.train.seed
        )
    )
    pretrained = None
    if init_folder is not None and not resuming:
        tensors = hf.read_tensors(init_folder, cfg.allow_pytorch_bin)
        pretrained, fresh = hf.load_params(tensors, abstract_state["params"])
        heads = sorted({"/".join(p.split("/")[:2]) for p in fresh})
        note = f"; initialised fresh: {', '.join(heads)}" if heads else ""
        logging.warning("loaded %s from %s%s", cfg.init_from, init_folder, note)

    # --- Everything checked: only now does the workdir get written.
    if jax.process_index() == 0:
        workdir.mkdir(parents=True, exist_ok=True)
        if not (resuming and (workdir / "tokenizer").exists()):
            tokenize.save_tokenizer(tokenizer, workdir / "tokenizer")
        if not resuming:
            config.save(cfg, workdir / "config.json")
    logging.info(
        "data: %d train blocks, %d eval blocks of %d tokens; tokenizer %s",
        len(train_blocks),
        len(eval_blocks),
        seq_len,
        tokenize.describe(tokenizer),
    )

    with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.LOGICAL_RULES):
        # --- State: resume from the latest checkpoint in W, else initialise from scratch.
        total_steps = cfg.train.steps
        tx, schedule = optim.make_optimizer(cfg.train, max(total_steps, 1))
        init_fn = steps.make_init_fn(model_cfg, cfg.task, tx, mesh, cfg.train.seed)
        train_step, eval_step, state_sh = steps.jit_steps(
            model_cfg,
            cfg.task,
            tx,
            schedule,
            mesh,
            cfg.train.seed,
            {k: v.ndim for k, v in eval_data[0].items()},
        )
        ckpt = checkpoint.manager(workdir, cfg.train.keep_checkpoints)
        latest = ckpt.latest_step()
        if latest is not None:
            abstract = checkpoint.abstract_like(jax.eval_shape(init_fn), state_sh)
            state, data_state, _ = checkpoint.restore(ckpt, latest, abstract)
            data_iter.set_state(data_state)
            logging.info("resumed from step %d of %s", latest, workdir)
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
        if latest is not None:
            writer.print(f"resuming from step {step} (checkpoint in {workdir / 'checkpoints'})")

        stop_at = min(cfg.train.stop_at_step or total_steps, total_steps)
        if latest is not None and step >= stop_at:
            writer.print(
                f"the checkpoint at step {step} already reaches step {stop_at}; "
                "raise --config.train.steps to train further"
            )

        # --- Compile once, ahead of the loop, so that compile time is measured on its own.
        batch, compile_s, ev = None, 0.0, {}
        if step < stop_at:
            t0 = time.time()
            batch = sharding.to_global(next(data_iter), mesh, layout.micro)
            train_step = train_step.lower(state, batch).compile()
            compile_s = time.time() - t0
            writer.print(f"compiled the train step in {compile_s:.1f}s")
        if step == 0 and total_steps:
            ev = _evaluate(eval_step, state["params"], eval_data, mesh, micro)
            writer.write(0, "validation", ev)

        # --- The loop. The host waits for the device only at log, eval and checkpoint steps.
        tokens_per_step = cfg.train.batch_size * cfg.data.max_seq_length
        pending, t_log, steps_since_log = [], time.time(), 0
        train_s, trained_steps = 0.0, 0  # for the run's average throughput
        if step >= stop_at:  # nothing to train: report where the checkpoint stands
            ev = _evaluate(eval_step, state["params"], eval_data, mesh, micro)
        while step < stop_at:
            if batch is None:
                batch = sharding.to_global(next(data_iter), mesh, layout.micro)
            state, step_metrics = train_step(state, batch)
            batch = None
            step += 1
            steps_since_log += 1
            pending.append(step_metrics)
            writer.advance()
            last = step == stop_at
            if step % cfg.train.log_every == 0 or last:
                host = jax.device_get(pending)
                dt = time.time() - t_log
                tok_s = tokens_per_step * steps_since_log / max(dt, 1e-9)
                train_s, trained_steps = train_s + dt, trained_steps + steps_since_log
                row = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
                row.update(tokens_per_s=tok_s, step_time_s=dt / steps_since_log)
                writer.write(step, "train", row)
                pending, t_log, steps_since_log = [], time.time(), 0
            if step % cfg.train.eval_every == 0 or last:
                ev = _evaluate(eval_step, state["params"], eval_data, mesh, micro)
                writer.write(step, "validation", ev)
                t_log = time.time()  # evaluation time is not training throughput
            if step % cfg.train.checkpoint_every == 0 or last:
                meta = {"step": step, "config": json.loads(cfg.to_json_best_effort())}
                checkpoint.save(ckpt, step, state, data_iter.get_state(), meta)

        if total_steps == 0 and latest is None:
            # A converted (or freshly initialised) step-0 model for export, predict, evaluate.
            meta = {"step": 0, "config": json.loads(cfg.to_json_best_effort())}
            checkpoint.save(ckpt, 0, state, data_iter.get_state(), meta)

        # --- Done: wait for the last async save, then the one-line summary.
        ckpt.wait_until_finished()
        ckpt.close()
        tok_s = tokens_per_step * trained_steps / train_s if train_s else 0.0
        summary = {
            "step": step,
            "eval_loss": ev.get("loss", float("nan")),
            "eval_mlm_accuracy": ev.get("mlm_accuracy", float("nan")),
            "tokens_per_s": tok_s,
            "compile_s": compile_s,
            "wall_s": time.time() - t_start,
        }
        writer.close()
        if jax.process_index() == 0:
            print(
                f"done: step {step}, eval loss {summary['eval_loss']:.4f}, MLM accuracy "
                f"{summary['eval_mlm_accuracy']:.4f}, {tok_s:,.0f} tokens/s, compile "
                f"{compile_s:.1f}s, wall {summary['wall_s']:.1f}s",
                flush=True,
            )
        return {**summary, "state": state}


def main(argv) -> None:
    """absl entry point: user errors become one line on stderr and exit status 2."""
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    metrics.quiet_logs()
    cfg, workdir = flags.FLAGS.config, flags.FLAGS.workdir
    if cfg is None or not workdir:
        print("error: pass --config configs/<name>.py and --workdir <dir>.", file=sys.stderr)
        sys.exit(2)
    try:
        model_keys = tuple(
            a.split("=", 1)[0].removeprefix("--config.model.")
            for a in sys.argv[1:]
            if a.startswith("--config.model.")
        )
        run(cfg, workdir, model_keys)
    except USER_ERRORS as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing, with config mistakes reported in one sentence instead of a traceback."""
    bad = config.unknown_override(argv[1:])
    if bad:
        print(
            f"error: unknown config key {bad!r}; check its spelling against ptft_jax/config.py.",
            file=sys.stderr,
        )
        sys.exit(2)
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    # Flags are defined only when run as a program, so entry points import each other freely.
    config_flags.DEFINE_config_file("config", None, "Config file (a get_config() .py).")
    flags.DEFINE_string("workdir", None, "Run folder: checkpoints, logs, tokenizer.")
    app.run(main, flags_parser=parse_flags)
