"""The side-by-side benchmark: its FLOPs formula, its JSON, and that it runs without the data
stack (the GPU machines it is meant for may lack datasets, grain and ml_collections)."""

import json
import pathlib
import subprocess
import sys

import jax
import pytest
from flax import nnx

from ptft_jax import bench, bench_workload, optim, sharding, steps
from ptft_jax.models.bert import BertConfig as ModelConfig
from ptft_jax.tasks.mlm import MLM

ROOT = pathlib.Path(__file__).resolve().parents[1]
WITHOUT_DATA_STACK = """
import runpy, sys
for name in ("datasets", "grain", "ml_collections"):
    sys.modules[name] = None  # any import of them now fails
sys.argv = ["ptft_jax.bench", *sys.argv[1:]]
runpy.run_module("ptft_jax.bench", run_name="__main__")
"""


def test_flops_formula_matches_the_compiler():
    """The formula against XLA's count for ptft_jax's compiled train step (bert-mini, 8 x 128):
    the matmuls and attention it counts are nearly all the step's FLOPs."""
    layers, hidden, heads, inter = bench_workload.MODELS["bert-mini"]
    cfg = ModelConfig(
        vocab_size=bench_workload.VOCAB,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=inter,
        max_position_embeddings=512,
    )
    batch, seq = 8, 128
    k = bench_workload.masked_per_row(seq)
    tx, schedule = optim.make_optimizer(bench._TrainCfg(bench_workload.TRAIN), 100)
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    shapes = {
        "input_ids": (seq, "int32"),
        "attention_mask": (seq, "int32"),
        "token_type_ids": (seq, "int32"),
        "masked_positions": (k, "int32"),
        "masked_ids": (k, "int32"),
        "masked_weights": (k, "float32"),
    }
    abstract = {n: jax.ShapeDtypeStruct((1, batch, d), t) for n, (d, t) in shapes.items()}
    with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.LOGICAL_RULES):
        task = MLM(seq_len=seq, max_predictions=k)
        train, _, _ = steps.jit_steps(cfg, task, tx, schedule, mesh, 0)
        state = jax.eval_shape(steps.make_init_fn(cfg, "mlm", tx, mesh, 0))
        cost = train.lower(state, abstract).compile().cost_analysis()
    compiled = (cost[0] if isinstance(cost, list) else cost)["flops"]
    formula = bench_workload.model_flops("bert-mini", batch, seq, batch * k, batch * k)
    assert formula == pytest.approx(compiled, rel=0.1)


@pytest.mark.slow
def test_bench_runs_without_the_data_stack_and_writes_its_json(tmp_path):
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-c", WITHOUT_DATA_STACK, "--preset", "cpu", "--model", "bert-tiny"]
    cmd += ["--batch", "8", "--seq", "32", "--warmup", "1", "--steps", "2", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    systems = [r["system"] for r in result["runs"]]
    assert systems == ["ptft_jax", "hf_eager"]
    for r in result["runs"]:
        assert r["batch"] == 8 and r["seq"] == 32 and r["tokens_per_s"] > 0
        assert 0 < r["mfu_common"] <= r["mfu"] < 1
        assert r["loss"] == pytest.approx(10.3, abs=0.5)  # ln(30522): an untrained model
    ours, peer = result["runs"]
    assert result["ratios"] == {
        "hf_eager": pytest.approx(ours["tokens_per_s"] / peer["tokens_per_s"])
    }
    assert ours["head_rows"] == ours["last_layer_rows"] == 8 * 5
    assert ours["attention"] == "xla" and "attention_fallback" not in ours  # CPUs: XLA's kernel
    assert peer["head_rows"] == peer["last_layer_rows"] == 8 * 32
    assert '"ratios"' in done.stdout and "FLOPs per step" in done.stdout


def test_a_refused_cudnn_kernel_is_measured_as_xla_and_said(monkeypatch):
    """Where "auto" picks cuDNN but the kernel cannot run (here: no GPU), the bench times XLA's
    attention instead and records why, rather than failing the whole comparison."""
    from ptft_jax import ops

    auto_is_cudnn = lambda choice, *a: "cudnn" if choice == "auto" else choice  # noqa: E731
    monkeypatch.setattr(ops, "attention_implementation", auto_is_cudnn)
    out = bench.run_ptft_jax("bert-tiny", 8, 16, "bfloat16", 0.0, warmup=1, steps=1)
    assert out["attention"] == "xla"
    assert out["attention_fallback"].startswith("cudnn failed: ")
    assert out["step_s"] > 0 and out["loss"] == pytest.approx(10.3, abs=0.5)
