"""Text generation (``ptft_jax/generate.py``) and the GPT-2 key/value cache under it.

One tiny GPT-2 workdir serves every test: a step-0 checkpoint of a random model whose wide
init (``initializer_range=0.2``) makes attention and next-token choices sharp, so a position
or cache slip changes what is generated. Its greedy continuations must equal transformers'
``generate`` on the export, and every cached decoding step the uncached forward's logits.
"""

import dataclasses
import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from test_causal_lm import tiny_gpt
from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

from ptft_jax import generate, steps, workdir
from ptft_jax.data.tokenize import end_of_text_id
from ptft_jax.errors import ConfigError, DataError
from ptft_jax.export import export
from ptft_jax.models import gpt2, layers
from ptft_jax.train import run as train

ROOT = pathlib.Path(__file__).resolve().parents[1]
PROMPTS = ["The history of the city began in the", "A"]  # 13 tokens and 1, batched together
CONTEXT = 64  # tiny_gpt's max_position_embeddings


@pytest.fixture(scope="module")
def w(tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("gen") / "w"
    c = tiny_gpt(steps=0, eval_batches=1)  # the step-0 report needs no full evaluation
    c.model.initializer_range = 0.2
    train(c, path)
    return path


@pytest.fixture(scope="module")
def gpt(w) -> workdir.Run:
    return workdir.load(w)


def _ids(run, text: str) -> list[int]:
    return run.tokenizer(text, add_special_tokens=False)["input_ids"]


def test_greedy_equals_transformers_generate_on_the_export(gpt, w, tmp_path):
    assert [len(_ids(gpt, p)) for p in PROMPTS] == [13, 1]
    ours = generate.generate_ids(gpt, PROMPTS, max_new_tokens=20, temperature=0)
    export(str(w), str(tmp_path / "hf"))
    model = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    eos = end_of_text_id(gpt.tokenizer)
    for prompt, got in zip(PROMPTS, ours, strict=True):
        ids = torch.tensor([_ids(gpt, prompt)])
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=20,
                pad_token_id=eos,
            )
        theirs = out[0, ids.shape[1] :].tolist()
        theirs = theirs[: theirs.index(eos)] if eos in theirs else theirs
        assert got == theirs, prompt
    assert len(set(ours[0])) > 3, "a sharp model: not one token repeated"
    rows = generate.generate(gpt, PROMPTS, max_new_tokens=20, temperature=0)
    assert [r["prompt"] for r in rows] == PROMPTS
    assert [r["tokens"] for r in rows] == [len(t) for t in ours]
    assert rows[0]["text"] == gpt.tokenizer.decode(ours[0])


LENGTHS = np.array([9, 4], np.int32)  # two prompts, each row continuing after its own


def _sequences(cfg, new_tokens: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, cfg.vocab_size, (2, LENGTHS.max() + new_tokens)).astype(np.int32)


def _cached_error(params, graphdef, cfg, full_BxSxV, new_tokens: int) -> float:
    """The largest difference between the logits of a prefill of ``LENGTHS`` tokens and of
    ``new_tokens`` cached steps, and the full forward's (``full_BxSxV``)."""
    seq_BxS = _sequences(cfg, new_tokens)
    # Padding of random ids: no position may see it.
    prompt_BxM = np.random.default_rng(1).integers(0, cfg.vocab_size, (2, CONTEXT), np.int32)
    for b, n in enumerate(LENGTHS):
        prompt_BxM[b, :n] = seq_BxS[b, :n]
    cached = jax.jit(lambda p, *a: nnx.merge(graphdef, p).cached(*a))
    cache = gpt2.empty_cache(cfg, 2)
    logits, cache = cached(params, prompt_BxM, np.zeros(2, np.int32), cache, LENGTHS[:, None] - 1)
    rows = np.arange(2)
    worst = np.abs(np.asarray(logits)[:, 0] - full_BxSxV[rows, LENGTHS - 1]).max()
    for t in range(new_tokens):
        at_B = LENGTHS + t
        logits, cache = cached(params, seq_BxS[rows, at_B][:, None], at_B, cache)
        worst = max(worst, np.abs(np.asarray(logits)[:, 0] - full_BxSxV[rows, at_B]).max())
    return float(worst)


def test_cached_decoding_gives_the_full_forwards_logits(gpt, monkeypatch):
    cfg, new_tokens = gpt.model_cfg, 6
    graphdef, _ = steps.abstract_model(cfg, "causal_lm")
    seq_BxS = _sequences(cfg, new_tokens)
    mask_BxS = (np.arange(seq_BxS.shape[1]) < (LENGTHS + new_tokens)[:, None]).astype(np.int32)
    full = jax.jit(lambda p, ids, m: nnx.merge(graphdef, p)(ids, m))(gpt.params, seq_BxS, mask_BxS)
    full_BxSxV = np.asarray(full)
    assert _cached_error(gpt.params, graphdef, cfg, full_BxSxV, new_tokens) < 1e-5

    # The comparison has teeth: keys and values written one position late break it.
    write_rows = layers.write_rows
    monkeypatch.setattr(layers, "write_rows", lambda c, n, s: write_rows(c, n, s + 1))
    assert _cached_error(gpt.params, graphdef, cfg, full_BxSxV, new_tokens) > 1e-3


def test_sampling_is_reproducible_and_filters_as_transformers(gpt):
    def texts(**kw):
        return [r["text"] for r in generate.generate(gpt, PROMPTS, max_new_tokens=12, **kw)]

    greedy = texts(temperature=0)
    hot = texts(temperature=2.0, seed=1)
    assert texts(temperature=2.0, seed=1) == hot
    assert texts(temperature=2.0, seed=2) != hot
    assert hot != greedy
    assert texts(temperature=2.0, seed=1, top_k=1) == greedy
    assert texts(temperature=2.0, seed=1, top_p=1e-6) == greedy
    rows = generate.generate(gpt, ["A"], max_new_tokens=12, temperature=2.0, num_samples=2)
    assert [r["prompt"] for r in rows] == ["A"] * 2 and rows[0]["text"] != rows[1]["text"]

    # The filters keep exactly what transformers' top-k, then top-p warpers keep.
    logits = np.random.default_rng(0).normal(0, 2, (4, 97)).astype(np.float32)
    for k, p in [(0, 0.9), (5, 1.0), (20, 0.5), (0, 1.0)]:
        theirs = torch.tensor(logits)
        theirs = TopKLogitsWarper(k)(None, theirs) if k else theirs
        theirs = TopPLogitsWarper(p)(None, theirs) if p < 1 else theirs
        ours = generate._keep_top(jnp.asarray(logits), k, p)
        np.testing.assert_array_equal(np.isfinite(ours), np.isfinite(theirs.numpy()), (k, p))


def test_a_row_stops_at_end_of_text_and_the_others_go_on(gpt, monkeypatch):
    full = generate.generate_ids(gpt, PROMPTS, max_new_tokens=12, temperature=0)
    # As if a token prompt 1 goes on to (but prompt 2 never) were the end of the text.
    stop = next(t for t in full[0][2:] if t not in full[1])
    monkeypatch.setattr(generate, "end_of_text_id", lambda tokenizer: stop)
    cut = generate.generate_ids(gpt, PROMPTS, max_new_tokens=12, temperature=0)
    assert cut == [full[0][: full[0].index(stop)], full[1]]


def test_one_compile_serves_every_prompt_and_setting(gpt):
    program = generate._program(gpt.model_cfg, gpt.mesh)
    generate.generate_ids(gpt, ["A", "B"], max_new_tokens=3, temperature=0)
    before = program._cache_size()
    assert before >= 1
    long = " ".join([PROMPTS[0]] * 3)
    assert len(_ids(gpt, long)) > 30
    generate.generate_ids(gpt, [long, "To be"], max_new_tokens=20, temperature=0.7, top_k=5)
    generate.generate_ids(gpt, ["", "x"], max_new_tokens=50, top_p=0.8, seed=9)
    assert program._cache_size() == before


@pytest.mark.parametrize(
    "kw,message",
    [
        ({"prompts": []}, "no --prompt was given; pass one"),
        ({"max_new_tokens": 0}, "--max_new_tokens=0 generates nothing; pass 1 or more."),
        ({"temperature": -1.0}, "--temperature=-1.0 is not a temperature; pass 0 (greedy)"),
        ({"temperature": float("nan")}, "--temperature=nan is not a temperature"),
        ({"top_k": -2}, "--top_k=-2 is negative; pass 0 (no limit)"),
        ({"top_p": 0.0}, "--top_p=0.0 is outside (0, 1]; pass a probability"),
        ({"top_p": 1.5}, "--top_p=1.5 is outside (0, 1]"),
        ({"seed": -1}, "--seed=-1 is outside 0..4294967295"),
        ({"num_samples": 0}, "--num_samples=0 asks for nothing; pass 1 or more."),
    ],
)
def test_bad_numbers_stop_with_one_sentence(gpt, kw, message):
    args = {"prompts": ["A"], **kw}
    with pytest.raises(ConfigError) as e:
        generate.generate(gpt, **args)
    assert message in str(e.value) and str(e.value).count(". ") == 0


def test_prompts_that_do_not_fit_and_runs_that_are_no_causal_lm(gpt):
    with pytest.raises(DataError, match=r"prompt 2 has 5 tokens, which with --max_new_tokens=60 "):
        generate.generate(gpt, ["A", "A A A A A"], max_new_tokens=60)
    with pytest.raises(DataError, match="exceeds the model's context of 64 tokens by 1; lower "):
        generate.generate(gpt, ["A A A A A"], max_new_tokens=60)
    with pytest.raises(DataError, match="by 57; shorten the prompt to at most 14 tokens"):
        generate.generate(gpt, "A " * 70)  # 71 tokens
    cfg = ml_collections.ConfigDict(gpt.cfg.to_dict())
    cfg.task = "classification"
    with pytest.raises(ConfigError, match=r"task=classification run; generate needs a causal_lm"):
        generate.generate(dataclasses.replace(gpt, cfg=cfg), ["A"])


def _cli(*args) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ptft_jax.generate", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=os.environ,
    )


def test_the_command_prints_json_lines_and_one_sentence_errors(gpt, w):
    proc = _cli("--workdir", w, "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--temperature=0")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert rows == generate.generate(gpt, PROMPTS, temperature=0)

    proc = _cli("--workdir", w, "--prompt", "A A A", "--max_new_tokens", "70")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-3000:]
    message = "exceeds the model's context of 64 tokens by 9; lower --max_new_tokens to 61 or"
    assert lines[0].startswith("error: prompt 1 has 3 tokens") and message in lines[0], lines[0]
