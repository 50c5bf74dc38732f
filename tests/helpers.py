"""Shared test builders: a fixed tiny MLM batch, sharded state on any mesh, the parameter
trees of abstract NNX models (for the families' parity tests), and golden values."""

import json
import os
import pathlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from ptft_jax import optim, sharding, steps
from ptft_jax.config import base_config
from ptft_jax.tasks.mlm import MLM

GOLDEN = pathlib.Path(__file__).parent / "golden"
UPDATE_GOLDEN = "PTFT_UPDATE_GOLDEN"
# XLA:CPU compiles for the host's instruction set (vector width, FMA contraction), so a float32
# loss, gradient norm or schedule value can round differently on another CPU: keys named in
# ``approx`` compare within this. (Capped at AVX2 or SSE4.2 with --xla_cpu_max_isa, an AVX-512
# machine moved the golden losses by up to 6e-6 relative and no count.) Everything else (counts,
# fractions of counts, specs) is exact: runs are bit-identical for the same config and seed.
FLOAT_TOLERANCE = {"rel": 1e-4, "abs": 1e-6}


def _differences(got, want, approx: frozenset, loose: bool = False, at: str = "") -> list[str]:
    if isinstance(want, dict) and isinstance(got, dict) and got.keys() == want.keys():
        return [
            d for k in want for d in _differences(got[k], want[k], approx, k in approx, f"{at}/{k}")
        ]
    if isinstance(want, list) and isinstance(got, list) and len(got) == len(want):
        return [
            d
            for i, (g, w) in enumerate(zip(got, want, strict=True))
            for d in _differences(g, w, approx, loose, f"{at}[{i}]")
        ]
    if loose and isinstance(want, float) and isinstance(got, float):
        same = got == pytest.approx(want, **FLOAT_TOLERANCE)
    else:
        same = type(got) is type(want) and got == want
    return [] if same else [f"{at or '/'}: {got!r}, golden {want!r}"]


def assert_golden(name: str, got, approx=()) -> None:
    """``got`` (JSON-able) against ``tests/golden/<name>``: values under the keys in ``approx``
    within FLOAT_TOLERANCE, all else exactly. With PTFT_UPDATE_GOLDEN=1 it writes ``got`` there
    instead and fails, naming what changed from the file it replaced: a value just written is
    never compared with itself, and the next run without the variable is the check."""
    path = GOLDEN / name
    got = json.loads(json.dumps(got))  # tuples as lists, as the file has them
    if os.environ.get(UPDATE_GOLDEN):
        before = json.loads(path.read_text()) if path.exists() else None
        path.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        changes = ["a new file"] if before is None else _differences(got, before, frozenset(approx))
        pytest.fail(
            f"{UPDATE_GOLDEN} is set, so tests/golden/{name} was written, not checked (changes "
            f"beyond the tolerance: {'; '.join(changes[:20]) or 'none'}); run again without "
            f"{UPDATE_GOLDEN} to check it",
            pytrace=False,
        )
    differences = _differences(got, json.loads(path.read_text()), frozenset(approx))
    assert not differences, (
        f"tests/golden/{name} differs (if the change is meant, regenerate it with "
        f"{UPDATE_GOLDEN}=1): " + "; ".join(differences[:20])
    )


def scores(result: dict) -> dict:
    """The loss, accuracy and confusion matrix of a classifier's test result (its other scores
    follow from these), from a run's summary or a learning-curve row."""
    return {k: result.get("test", result)[k] for k in ("loss", "accuracy", "confusion_matrix")}


def train_cfg(**kw) -> ml_collections.ConfigDict:
    t = base_config().train
    t.update({"learning_rate": 1e-3, "warmup_steps": 2, "steps": 10, **kw})
    return t


def mlm_batch(model_cfg, accum=1, rows=16, length=24, k=4, seed=0) -> dict:
    """A fixed random MLM batch ``[accum, rows, ...]`` with some padding."""
    rng = np.random.default_rng(seed)
    shape = (accum, rows, length)
    lengths = rng.integers(length // 2, length + 1, (accum, rows))
    mask = (np.arange(length) < lengths[..., None]).astype(np.int32)
    pos = np.sort(rng.integers(1, length // 2, (accum, rows, k)), axis=-1).astype(np.int32)
    return {
        "input_ids": rng.integers(5, model_cfg.vocab_size, shape).astype(np.int32) * mask,
        "attention_mask": mask,
        "token_type_ids": np.zeros(shape, np.int32),
        "masked_positions": pos,
        "masked_ids": rng.integers(5, model_cfg.vocab_size, (accum, rows, k)).astype(np.int32),
        "masked_weights": (rng.random((accum, rows, k)) < 0.8).astype(np.float32),
    }


def mlm_task(batch) -> MLM:
    """The MLM task whose batch spec ``batch`` (``[A, B, ...]``) fits."""
    length, k = batch["input_ids"].shape[-1], batch["masked_ids"].shape[-1]
    return MLM(seq_len=length, max_predictions=k, nsp="next_sentence_label" in batch)


def run_steps(model_cfg, mesh_cfg, batch, n=2, devices=None, seed=0, tcfg=None):
    """``n`` jitted train steps on a mesh; returns (host params, list of host metrics)."""
    mesh = sharding.make_mesh(mesh_cfg, devices)
    tx, schedule = optim.make_optimizer(tcfg or train_cfg(), 10)
    with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.LOGICAL_RULES):
        state = steps.make_init_fn(model_cfg, "mlm", tx, mesh, seed)()
        train, _, _ = steps.jit_steps(model_cfg, mlm_task(batch), tx, schedule, mesh, seed)
        gb = sharding.to_global(batch, mesh, batch["input_ids"].shape[1])
        history = []
        for _ in range(n):
            state, m = train(state, gb)
            history.append(jax.device_get(m))
        return jax.device_get(state["params"]), history


def fresh_tree(abstract: nnx.Module) -> dict:
    """The parameter tree of an abstract model (``nnx.eval_shape``), as shapes."""
    return nnx.to_pure_dict(nnx.state(abstract))


def built_model(abstract: nnx.Module, params: dict) -> nnx.Module:
    """The model ``abstract`` describes, holding ``params``."""
    graphdef, state = nnx.split(abstract)
    nnx.replace_by_pure_dict(state, jax.tree.map(jnp.asarray, params))
    return nnx.merge(graphdef, state)


def random_like(tree: dict, seed: int) -> dict:
    """``tree`` with every leaf ~ normal(0, 0.5), as host arrays."""
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda x: rng.normal(0.0, 0.5, x.shape).astype(np.float32), tree)


def torch_outputs(model, batch: dict, **kwargs):
    """A transformers model's outputs on numpy ``batch`` arrays (as int64 tensors), no grad."""
    import torch

    with torch.no_grad():
        return model(**{k: torch.from_numpy(v).long() for k, v in batch.items()}, **kwargs)


def packed_rows(examples, rows, width: int, pad: int):
    """``rows``: example indices per row. The packed arrays (ids padded with ``pad``, segment
    numbers as the mask, positions restarting at 0, each example's first position) and, per
    slot, its example (-1: none)."""
    k = max(map(len, rows))
    ids = np.full((len(rows), width), pad, np.int32)
    seg, pos = (np.zeros((len(rows), width), np.int32) for _ in range(2))
    first = np.zeros((len(rows), k), np.int32)
    slot = np.full((len(rows), k), -1)
    for r, members in enumerate(rows):
        at = 0
        for j, e in enumerate(members):
            n = len(examples[e])
            span = slice(at, at + n)
            ids[r, span], seg[r, span], pos[r, span] = examples[e], j + 1, np.arange(n)
            first[r, j], slot[r, j] = at, e
            at += n
    packed = {"position_ids_BxL": pos, "cls_positions_BxK": first}
    return (ids, seg, np.zeros_like(ids)), packed, slot


def both_logits(loaded, head: str, hf_model, enc) -> tuple[np.ndarray, np.ndarray]:
    """``(ours, theirs)``: the logits of a loaded workdir (``workdir.load``; its ``head``) and
    of its export loaded in transformers (``hf_model``) on padded tokenizer output ``enc``."""
    import torch

    with torch.no_grad():
        theirs = hf_model.eval()(
            input_ids=torch.tensor(enc["input_ids"]),
            attention_mask=torch.tensor(enc["attention_mask"]),
        ).logits.numpy()
    forward = steps.jit_forward(loaded.model_cfg, head, loaded.mesh)
    batch = {k: enc[k].astype(np.int32) for k in ("input_ids", "attention_mask")}
    with jax.set_mesh(loaded.mesh):
        ours = np.asarray(jax.device_get(forward(loaded.params, batch)))
    return ours, theirs


def max_diff(ours, theirs, mask=None, relative=False) -> float:
    """Largest |ours - theirs|, over positions where ``mask`` is 1 when given; ``relative``:
    divided by the largest value once values pass 1 (float32 round-off grows with scale, and a
    pre-LN residual stream of random weights reaches about 40)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape
    if mask is not None:
        ours, theirs = ours[mask.astype(bool)], theirs[mask.astype(bool)]
    scale = max(1.0, np.max(np.abs(theirs))) if relative else 1.0
    return float(np.max(np.abs(ours - theirs)) / scale)


def special_rows(lengths, width, first, last, pad, vocab, seed=0) -> dict[str, np.ndarray]:
    """``first ... last`` rows of ``lengths``, right-padded with ``pad`` to ``width``; the tokens
    between are random ids in ``[5, vocab)``, above the five specials."""
    rng = np.random.default_rng(seed)
    ids = np.full((len(lengths), width), pad, np.int32)
    for r, n in enumerate(lengths):
        ids[r, :n] = [first, *rng.integers(5, vocab, n - 2), last]
    mask = (np.arange(width)[None] < np.array(lengths)[:, None]).astype(np.int32)
    return {"input_ids": ids, "attention_mask": mask}


def word_level_tokenizer(specials: list[str], roles: tuple[str, ...], size: int = 97):
    """A whitespace word-level tokenizer: ``specials`` at ids 0-4 in their ``roles`` (``pad``,
    ``cls``, ...), then ``w5`` ... up to ``size`` ids."""
    import tokenizers
    import transformers

    vocab = {**{t: i for i, t in enumerate(specials)}, **{f"w{i}": i for i in range(5, size)}}
    unk = specials[roles.index("unk")]
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token=unk))
    model.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tokens = {f"{role}_token": t for role, t in zip(roles, specials, strict=True)}
    return transformers.PreTrainedTokenizerFast(tokenizer_object=model, **tokens)
