"""Pods on paper: the real train step compiled by the TPU compiler (libtpu) for TPU slices that
this CPU machine does not have."""

import dataclasses
import pathlib
import re
import subprocess
import sys

import pytest

from ptft_jax import aot, bench_workload, config

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_bert_base_compiles_for_a_v5p_slice():
    cmd = [sys.executable, "-m", "ptft_jax.train", "--config", "configs/bert_base_mlm.py"]
    cmd += ["--compile_only", "--topology", "v5p:2x2x1"]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "for v5p:2x2x1 (4 chips; mesh data=4, fsdp=1, tensor=1)" in out, out
    total, hbm = map(float, re.search(r"= ([\d.]+) GiB of (\d+) GiB HBM", out).groups())
    assert 0 < total < hbm == 95
    # Parameters and AdamW moments (3 x 110M float32) are replicated on every chip: 1.2 GiB.
    arguments = float(re.search(r"arguments ([\d.]+) GiB", out)[1])
    assert 1.1 < arguments < 1.4, out
    flops = float(re.search(r"FLOPs per step: ([\d.e+]+)", out)[1])
    assert flops == pytest.approx(
        bench_workload.model_flops("bert-base", 256, 128, 256 * 20, 256 * 20), rel=0.1
    ), out


def _tiny(**model):
    c = config.base_config()
    c.model.update(vocab_size=1024, hidden_size=128, num_hidden_layers=2, num_attention_heads=2)
    c.model.update(intermediate_size=512, max_position_embeddings=128, **model)
    c.data.max_seq_length = 128
    c.train.batch_size = 64
    return c


def test_a_step_that_does_not_fit_names_the_knobs():
    """The compiler's numbers of a step too big for a v5e chip (16 GiB) stop the command."""
    fits = aot.Report("v5e:2x2", 4, {"data": 4}, 2 * aot.GiB, 13 * aot.GiB, 0, 2**20, 16 * aot.GiB,
                      1e12, 197e12, 1.0)  # fmt: skip
    aot.check_fits(fits)
    too_big = dataclasses.replace(fits, temporaries=14 * aot.GiB)
    with pytest.raises(
        config.ConfigError, match=r"One v5e chip would need 16.0 GiB .* has 16"
    ) as e:
        aot.check_fits(too_big)
    for knob in ("train.batch_size", "--config.mesh.fsdp", "--config.model.remat=True"):
        assert knob in str(e.value)


def test_unknown_topology_is_one_sentence():
    with pytest.raises(config.ConfigError, match="use <chip>:<shape>"):
        aot.compile_report(_tiny(), "v9z:2x2")


def test_the_compilers_own_out_of_memory_stop_is_one_sentence():
    """The TPU compiler may refuse a step itself (ModernBERT-base at 8,192 tokens with every
    layer global did): its message becomes one sentence with the sizes and the knobs."""
    message = (
        "RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
        "temporaries (99.09G) exceeds available HBM (95.74G)."
    )
    sentence = aot.out_of_memory(message, "v5p")
    assert "would need 99.09 GiB of temporaries for this train step, more than its 95.74 GiB" in (
        sentence
    )
    assert "--config.model.remat=True" in sentence and sentence.count(". ") == 0
