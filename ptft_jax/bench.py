"""Training speed side by side: ptft_jax's train step against transformers on PyTorch.

    python -m ptft_jax.bench --preset cpu   # BERT-mini class, 32 x 128, fp32 (2 cores: ~4 min)
    python -m ptft_jax.bench --preset gpu   # BERT-base, 256 x 128 and 64 x 512, bf16
    python -m ptft_jax.bench --preset cpu --model bert-tiny --batch 16 --seq 64 --peers hf_eager
    python -m ptft_jax.bench --preset cpu --model gpt-mini     # GPT, 16 x 128, fp32
    python -m ptft_jax.bench --preset gpu --model gpt2-small   # GPT-2 124M, 16 x 1024, bf16
    python -m ptft_jax.bench --preset cpu --model modernbert-mini   # 8 x 512, fp32
    python -m ptft_jax.bench --preset gpu --model modernbert-base   # 64 x 1024, 8 x 8192, bf16

``--model`` picks the family. A BERT model (``bert-*``) trains MLM: the same model (shapes,
vocabulary, random init, 15% of positions labelled, dropout 0.1, AdamW with clipping) is
trained on the same random batch by each system, each in its own subprocess: ptft_jax through
the train step ``train.py`` uses (``steps.jit_steps``), and ``BertForMaskedLM`` (SDPA
attention; bf16 autocast and fused AdamW on GPU) eagerly (``hf_eager``) or under
``torch.compile`` (``hf_compile``). A ModernBERT model (``modernbert-*``) trains MLM against
``ModernBertForMaskedLM`` with ``sparse_prediction`` (its head at the labelled positions
only, as its recipe trains), without dropout but the attention's. A GPT model (``gpt-tiny``,
``gpt-mini``, ``gpt2-small``) trains causal LM the same way: ptft_jax's ``causal_lm`` task
against ``GPT2LMHeadModel``, every position labelled with its next token. Without
``--batch``/``--seq`` the preset's shapes for the family run: BERT 32 x 128 (cpu), 256 x 128
and 64 x 512 (gpu); GPT 16 x 128 (cpu), 16 x 1024 (gpu); ModernBERT 8 x 512 (cpu), 64 x 1024
and 8 x 8192 (gpu). After warm-up steps, a number of timed steps give tokens/s (every position of
every row is a real token: no padding).

Model FLOPs per step (printed with the results) for BERT, with R the rows the last layer's
queries run on and P the rows the MLM head runs on:
    tokens x (6 x lower layers' matmul parameters + 12 x (layers - 1) x hidden x seq)
    + tokens x 6 x 2 hidden^2 (the last layer's keys and values)
    + R x (6 x (2 hidden^2 + 2 hidden x intermediate) + 12 x hidden x seq)
    + P x 6 x (hidden^2 + hidden x vocab)
ptft_jax computes the last layer's queries, attention output, MLP and the MLM head at the
masked positions only (R = P = masked positions: nothing else reaches the loss);
``BertForMaskedLM`` computes them at every position (R = P = tokens, the textbook count).
``mfu`` counts the FLOPs each system computes; ``mfu_common`` counts both on one basis, the
work the loss needs (R = P = masked positions). For GPT, where both systems compute every
position (so ``mfu_common`` = ``mfu``), the textbook count:
    tokens x (6 x (layers x (4 hidden^2 + 2 hidden x intermediate) + hidden x vocab)
              + 12 x layers x hidden x seq)
that is, 6 x the matmul parameters outside the embeddings (the tied LM head's hidden x vocab
included) and the attention scores and values over the whole (unmasked) sequence, per token.
MFU divides by the chip's dense peak (bf16 on GPUs, from the vendor's table) or, on CPUs, by
the peak that a large fp32 matmul reaches in JAX on the same machine (measured at start, in
its own subprocess).

The data stack (datasets, grain, ml_collections) is never imported here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import time

from ptft_jax import cli
from ptft_jax.bench_workload import (
    FLOPS_FORMULAS,
    MODELS,
    TRAIN,
    loss_rows,
    masked_per_row,
    model_fields,
    model_flops,
    peak_rss,
    random_batch,
)

PRESETS = {
    "cpu": {
        "model": "bert-mini",
        # By the model's family; ModernBERT at rows of four local windows.
        "shapes": {"bert": [(32, 128)], "gpt2": [(16, 128)], "modernbert": [(8, 512)]},
        "dtype": "float32",
        "peers": ["hf_eager"],
        "attention_dropout": {"bert": 0.1, "gpt2": 0.1, "modernbert": 0.0},  # their recipes
        "warmup": 3,
        "steps": 20,
    },
    "gpu": {
        "model": "bert-base",
        # GPT-2 at its full context, as it pretrains; ModernBERT at its first phase's 1,024
        # and its longest context.
        "shapes": {
            "bert": [(256, 128), (64, 512)],
            "gpt2": [(16, 1024)],
            "modernbert": [(64, 1024), (8, 8192)],
        },
        "dtype": "bfloat16",
        "peers": ["hf_eager", "hf_compile"],
        # Without attention dropout both systems may use fused attention kernels (cuDNN in
        # JAX, SDPA's flash/efficient kernels in PyTorch), as current BERT recipes do.
        "attention_dropout": {"bert": 0.0, "gpt2": 0.0, "modernbert": 0.0},
        "warmup": 5,
        "steps": 30,
    },
}
# Dense bf16 peak FLOP/s per chip, as the vendors publish them (no sparsity).
GPU_PEAKS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "L4": 121e12}


class _TrainCfg(dict):
    """The optimizer settings ``optim.make_optimizer`` reads, without ml_collections."""

    __getattr__ = dict.__getitem__


def run_ptft_jax(model, batch, seq, dtype, attention_dropout, warmup, steps) -> dict:
    """Time ``steps`` train steps of ptft_jax's real train step (MLM for BERT, causal LM for
    GPT) on all local devices, with the attention kernel ``model.attention="auto"`` picks;
    should cuDNN's refuse the shape or the GPU, XLA's is measured instead and the JSON says
    so."""
    from ptft_jax import models, ops

    fields = model_fields(model, seq, attention_dropout)
    cfg = models.get(MODELS[model].family).CONFIG(**fields, dtype=dtype)
    kernel = ops.attention_implementation(cfg.attention, dtype, cfg.head_dim)
    timed = (model, batch, seq, warmup, steps)
    try:
        out = _time_steps(dataclasses.replace(cfg, attention=kernel), *timed)
    except Exception as e:  # noqa: BLE001 - any refusal of the cuDNN kernel
        if kernel != "cudnn":
            raise
        out = _time_steps(dataclasses.replace(cfg, attention="xla"), *timed)
        out["attention_fallback"] = f"cudnn failed: {type(e).__name__}: {str(e)[:300]}"
        kernel = "xla"
    return {**out, "attention": kernel}


def task_and_batch(model: str, batch: int, seq: int):
    """The task ``model``'s family trains and its host batch of one microbatch
    (``random_batch``'s rows, every position real)."""
    import numpy as np

    raw = random_batch(model, batch, seq)
    ones = np.ones((batch, seq), np.int32)
    if MODELS[model].family == "gpt2":
        from ptft_jax.tasks.causal_lm import CausalLM

        task = CausalLM(seq_len=seq)
        host = {**raw, "attention_mask": ones, "label_weights": ones}
    else:
        from ptft_jax.tasks.mlm import MLM

        task = MLM(seq_len=seq, max_predictions=masked_per_row(seq))
        host = {
            **raw,
            "attention_mask": ones,
            "token_type_ids": np.zeros_like(ones),
            "masked_weights": np.ones(raw["masked_ids"].shape),
        }
    # One microbatch, in the dtypes of the task's batch spec.
    host = {k: host[k][None].astype(dtype) for k, (_, dtype) in task.batch_spec().items()}
    return task, host


def _time_steps(model_cfg, model, batch, seq, warmup, steps) -> dict:
    import jax
    from flax import nnx

    from ptft_jax import optim, sharding
    from ptft_jax import steps as steps_lib

    task, host = task_and_batch(model, batch, seq)
    tx, schedule = optim.make_optimizer(_TrainCfg(TRAIN), 10_000)
    mesh = sharding.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.LOGICAL_RULES):
        train, _, _ = steps_lib.jit_steps(model_cfg, task, tx, schedule, mesh, 0)
        state = steps_lib.make_init_fn(model_cfg, task.head, tx, mesh, 0)()
        device_batch = sharding.to_global(host, mesh, batch)
        t0 = time.perf_counter()
        step = train.lower(state, device_batch).compile()
        compile_s = time.perf_counter() - t0
        for _ in range(warmup):
            state, metrics = step(state, device_batch)
        jax.block_until_ready(state)
        t0 = time.perf_counter()
        for _ in range(steps):
            state, metrics = step(state, device_batch)
        jax.block_until_ready((state, metrics))
        elapsed = time.perf_counter() - t0
    stats = jax.local_devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    return {
        "step_s": elapsed / steps,
        "compile_s": compile_s,
        "loss": float(metrics["loss"]),
        "peak_memory_bytes": int(peak) if peak else peak_rss(),
        "peak_memory_kind": "device" if peak else "host RSS",
        # The head and the last layer run only where the loss reads them (MLM: the masked
        # positions; causal LM: all of them).
        "head_rows": loss_rows(model, batch, seq),
        "last_layer_rows": loss_rows(model, batch, seq),
        "device": jax.local_devices()[0].device_kind,
        "devices": jax.local_device_count(),
        "versions": {"jax": jax.__version__},
    }


def measure_peak(dtype: str) -> tuple[float, str]:
    """The chip's peak FLOP/s: the vendor's bf16 figure for known GPUs, else a measured one."""
    import jax
    import jax.numpy as jnp

    kind = jax.local_devices()[0].device_kind
    if dtype == "bfloat16":
        for name, peak in GPU_PEAKS.items():
            if name in kind:
                return peak * jax.local_device_count(), f"{kind} dense bf16 spec"
    n = 2048 if jax.default_backend() == "cpu" else 8192
    a = jnp.ones((n, n), jnp.dtype(dtype))
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = math.inf
    for _ in range(10):  # the fastest of ten: the peak, not the average under interference
        t0 = time.perf_counter()
        f(a).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best, f"measured {n}x{n} {dtype} matmul in JAX on {kind}"


def _worker(args) -> None:
    if args.worker == "peak":
        peak, source = measure_peak(args.dtype)
        print(json.dumps({"peak_flops": peak, "peak_source": source}))
        return
    common = (args.model, args.batch, args.seq, args.dtype, args.attention_dropout)
    common += (args.warmup, args.steps)
    if args.worker == "ptft_jax":
        out = run_ptft_jax(*common)
    else:
        from ptft_jax.bench_peers import run_hf

        out = run_hf(*common, compiled=args.worker == "hf_compile")
    print(json.dumps(out))


def _spawn(system: str, model: str, batch: int, seq: int, args) -> dict:
    cmd = [sys.executable, "-m", "ptft_jax.bench", "--worker", system, "--model", model]
    cmd += ["--batch", str(batch), "--seq", str(seq), "--dtype", args.dtype]
    cmd += ["--attention_dropout", str(args.attention_dropout)]
    cmd += ["--warmup", str(args.warmup), "--steps", str(args.steps)]
    env = dict(os.environ)
    if system.startswith("hf"):
        # The peers run as their users run them: without the tcmalloc preload ptft_jax's
        # commands give themselves (see ptft_jax/malloc.py).
        env["LD_PRELOAD"] = " ".join(
            x for x in env.get("LD_PRELOAD", "").split() if "tcmalloc" not in x
        )
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"error: the {system} run at {batch} x {seq} failed:\n{tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _parse(argv) -> argparse.Namespace:
    p = cli.ArgumentParser(prog="python -m ptft_jax.bench", description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=sorted(PRESETS), default="cpu")
    p.add_argument(
        "--model",
        choices=sorted(MODELS),
        help="bert-*, modernbert-*: MLM; gpt-*, gpt2-small: GPT-2, causal LM (default: the "
        "preset's BERT)",
    )
    p.add_argument("--batch", type=int, help="rows per step (with --seq: one shape)")
    p.add_argument("--seq", type=int, help="sequence length (with --batch: one shape)")
    p.add_argument("--peers", help="comma-separated: hf_eager, hf_compile ('' for none)")
    p.add_argument("--dtype", choices=["float32", "bfloat16"])
    p.add_argument("--attention_dropout", type=float, help="both systems' attention dropout")
    p.add_argument("--warmup", type=int)
    p.add_argument("--steps", type=int, help="timed steps per system and shape")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    preset = PRESETS[args.preset]
    for key in ("model", "dtype", "attention_dropout", "warmup", "steps"):
        if getattr(args, key) is None:
            setattr(args, key, preset[key])
    if isinstance(args.attention_dropout, dict):  # the preset's, by family
        args.attention_dropout = args.attention_dropout[MODELS[args.model].family]
    args.peers = preset["peers"] if args.peers is None else [x for x in args.peers.split(",") if x]
    unknown = sorted(set(args.peers) - {"hf_eager", "hf_compile"})
    if unknown:
        p.error(f"unknown peer {unknown[0]!r}; use hf_eager and/or hf_compile.")
    if (args.batch is None) != (args.seq is None):
        p.error("give --batch and --seq together (one shape), or neither (the preset's shapes).")
    family = MODELS[args.model].family
    args.shapes = [(args.batch, args.seq)] if args.batch else preset["shapes"][family]
    if min(args.warmup, args.steps) < 1:
        p.error("--warmup and --steps must be at least 1.")
    return args


def main(argv=None) -> dict | None:
    args = _parse(sys.argv[1:] if argv is None else argv)
    if args.worker:
        _worker(args)
        return None
    peak = _spawn("peak", args.model, 1, 1, args)
    runs, ratios = [], {}
    for batch, seq in args.shapes:
        shape_runs = {}
        for system in ["ptft_jax", *args.peers]:
            r = _spawn(system, args.model, batch, seq, args)
            flops = model_flops(args.model, batch, seq, r["head_rows"], r["last_layer_rows"])
            needed = loss_rows(args.model, batch, seq)
            common = model_flops(args.model, batch, seq, needed, needed)
            r = {
                "system": system,
                "model": args.model,
                "batch": batch,
                "seq": seq,
                "dtype": args.dtype,
                "attention_dropout": args.attention_dropout,
                "tokens_per_s": batch * seq / r["step_s"],
                "mfu": flops / r["step_s"] / peak["peak_flops"],
                "mfu_common": common / r["step_s"] / peak["peak_flops"],
                "model_flops_per_step": flops,
                **r,
            }
            shape_runs[system] = r
            runs.append(r)
            print(_line(r), flush=True)
        ours = shape_runs["ptft_jax"]["tokens_per_s"]
        shape_ratios = {p: ours / shape_runs[p]["tokens_per_s"] for p in args.peers}
        if len(args.shapes) > 1:
            ratios[f"{batch}x{seq}"] = shape_ratios
        else:
            ratios = shape_ratios
    result = {
        "runs": runs,
        "ratios": ratios,
        "peak_flops": peak["peak_flops"],
        "peak_source": peak["peak_source"],
        "flops_formula": FLOPS_FORMULAS[MODELS[args.model].family],
        "date": time.strftime("%Y-%m-%d"),
    }
    print(f"peak {peak['peak_flops'] / 1e12:.2f} TFLOP/s ({peak['peak_source']})")
    print(f"FLOPs per step: {result['flops_formula']}")
    print(json.dumps({"ratios": ratios}))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


def _line(r: dict) -> str:
    mem = r["peak_memory_bytes"] / 2**30
    return (
        f"{r['system']:>10} {r['model']} {r['batch']}x{r['seq']} {r['dtype']}: "
        f"{r['tokens_per_s']:,.0f} tokens/s, step {1e3 * r['step_s']:.1f} ms, "
        f"compile {r['compile_s']:.1f}s, MFU {100 * r['mfu']:.1f}% "
        f"(common basis {100 * r['mfu_common']:.1f}%), peak memory {mem:.2f} GiB "
        f"({r['peak_memory_kind']}), loss {r['loss']:.3f}"
        + (f", attention {r['attention']}" if "attention" in r else "")
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    cli.guarded(main)()
