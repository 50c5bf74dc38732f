"""The side-by-side benchmark: its FLOPs formula, its JSON, and that it runs without the data
stack (the GPU machines it is meant for may lack datasets, grain and ml_collections)."""

import json
import pathlib
import subprocess
import sys

import jax
import pytest
from flax import nnx

from ptft_jax import bench, bench_workload, models, optim, sharding, steps

ROOT = pathlib.Path(__file__).resolve().parents[1]
WITHOUT_DATA_STACK = """
import runpy, sys
for name in ("datasets", "grain", "ml_collections"):
    sys.modules[name] = None  # any import of them now fails
sys.argv = ["ptft_jax.bench", *sys.argv[1:]]
runpy.run_module("ptft_jax.bench", run_name="__main__")
"""


@pytest.mark.parametrize(
    "model, batch, seq", [("bert-mini", 8, 128), ("gpt-tiny", 4, 64), ("modernbert-mini", 2, 512)]
)
def test_flops_formula_matches_the_compiler(model, batch, seq):
    """The formula against XLA's count for ptft_jax's compiled train step on the bench's own
    batch: the matmuls and attention it counts are nearly all the step's FLOPs (BERT: the
    masked positions' head and last layer; GPT: every position's; ModernBERT's local layers:
    129 keys a query, where the banded kernel computes 192)."""
    family = bench_workload.MODELS[model].family
    dropout = bench.PRESETS["cpu"]["attention_dropout"][family]  # ModernBERT's: none
    cfg = models.get(family).CONFIG(**bench_workload.model_fields(model, seq, dropout))
    task, host = bench.task_and_batch(model, batch, seq)
    abstract = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in host.items()}
    tx, schedule = optim.make_optimizer(bench._TrainCfg(bench_workload.TRAIN), 100)
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.LOGICAL_RULES):
        train, _, _ = steps.jit_steps(cfg, task, tx, schedule, mesh, 0)
        state = jax.eval_shape(steps.make_init_fn(cfg, task.head, tx, mesh, 0))
        cost = train.lower(state, abstract).compile().cost_analysis()
    compiled = (cost[0] if isinstance(cost, list) else cost)["flops"]
    rows = bench_workload.loss_rows(model, batch, seq)
    formula = bench_workload.model_flops(model, batch, seq, rows, rows)
    assert formula == pytest.approx(compiled, rel=0.1)


def test_the_gpt_formula_is_the_textbook_count():
    """GPT-2 124M: 6 x (its 85M non-embedding matmul parameters + the 38.6M of the tied LM
    head) + 12 x layers x hidden x seq, per token."""
    per_token = bench_workload.model_flops("gpt2-small", 1, 1024, 1024, 1024) / 1024
    matmul_params = 12 * (4 * 768**2 + 2 * 768 * 3072) + 768 * 50257
    assert per_token == 6 * matmul_params + 12 * 12 * 768 * 1024


def test_the_modernbert_formula_counts_local_layers_at_their_window():
    """ModernBERT-base at 8,192 tokens: a local layer's attention costs 129 keys a query, a
    global one's 8,192; the GeGLU MLP three hidden x intermediate matmuls."""
    full = bench_workload.model_flops("modernbert-base", 1, 8192, 8192, 8192) / 8192
    layers = 22 * 6 * (4 * 768**2 + 3 * 768 * 1152)
    attention = 12 * 768 * (8 * 8192 + 14 * 129)  # layers 0, 3, ..., 21 global
    assert full == layers + attention + 6 * (768**2 + 768 * 50368)


def test_presets_pick_shapes_by_the_models_family():
    assert bench._parse(["--preset", "gpu"]).model == "bert-base"
    assert bench._parse(["--preset", "gpu", "--model", "gpt2-small"]).shapes == [(16, 1024)]
    assert bench._parse(["--model", "gpt-mini"]).shapes == [(16, 128)]
    assert bench._parse(["--model", "gpt-mini", "--batch", "2", "--seq", "8"]).shapes == [(2, 8)]
    modern = bench._parse(["--preset", "gpu", "--model", "modernbert-base"])
    assert modern.shapes == [(64, 1024), (8, 8192)] and modern.attention_dropout == 0.0
    assert bench._parse(["--model", "bert-mini"]).attention_dropout == 0.1


def run_bench(tmp_path, *args) -> tuple[dict, str]:
    """The bench's JSON and stdout from a command-line run with the data stack unimportable."""
    out = tmp_path / "bench.json"
    cmd = [sys.executable, "-c", WITHOUT_DATA_STACK, *args, "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text()), done.stdout


@pytest.mark.slow
def test_bench_runs_without_the_data_stack_and_writes_its_json(tmp_path):
    args = ["--preset", "cpu", "--model", "bert-tiny", "--batch", "8", "--seq", "32"]
    result, stdout = run_bench(tmp_path, *args, "--warmup", "1", "--steps", "2")
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
    assert '"ratios"' in stdout and "FLOPs per step" in stdout


@pytest.mark.slow
def test_a_gpt_bench_runs_causal_lm_against_gpt2lmheadmodel(tmp_path):
    args = ["--preset", "cpu", "--model", "gpt-tiny", "--batch", "8", "--seq", "16"]
    result, stdout = run_bench(tmp_path, *args, "--warmup", "1", "--steps", "1")
    assert [r["system"] for r in result["runs"]] == ["ptft_jax", "hf_eager"]
    ours, peer = result["runs"]
    for r in result["runs"]:
        assert r["model"] == "gpt-tiny" and r["batch"] == 8 and r["seq"] == 16
        assert r["tokens_per_s"] > 0
        # Both compute every position: one FLOPs count, and the common basis is the same.
        assert r["head_rows"] == r["last_layer_rows"] == 8 * 16
        assert r["model_flops_per_step"] == bench_workload.model_flops("gpt-tiny", 8, 16, 128, 128)
        assert 0 < r["mfu_common"] == r["mfu"] < 1
        assert r["loss"] == pytest.approx(9.0, abs=0.5)  # ln(8192): an untrained model
    assert result["ratios"] == {
        "hf_eager": pytest.approx(ours["tokens_per_s"] / peer["tokens_per_s"])
    }
    assert result["flops_formula"] == bench_workload.FLOPS_FORMULAS["gpt2"]
    assert ours["attention"] == "xla" and "transformers" in peer["versions"]


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


@pytest.mark.slow
def test_a_modernbert_bench_runs_mlm_against_modernbertformaskedlm(tmp_path):
    args = ["--preset", "cpu", "--model", "modernbert-mini", "--batch", "8", "--seq", "32"]
    result, _ = run_bench(tmp_path, *args, "--warmup", "1", "--steps", "1")
    assert [r["system"] for r in result["runs"]] == ["ptft_jax", "hf_eager"]
    ours, peer = result["runs"]
    masked = 8 * bench_workload.masked_per_row(32)
    assert ours["head_rows"] == ours["last_layer_rows"] == masked
    assert peer["head_rows"] == masked and peer["last_layer_rows"] == 8 * 32  # sparse head
    for r in result["runs"]:
        assert r["tokens_per_s"] > 0 and r["attention_dropout"] == 0.0
        assert r["loss"] == pytest.approx(9.0, abs=0.6)  # ln(8192): an untrained model
    assert result["flops_formula"] == bench_workload.FLOPS_FORMULAS["modernbert"]
