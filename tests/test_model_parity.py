"""Numerical parity of ``ptft_jax.model`` with Hugging Face's PyTorch BERT.

A tiny HF model gets every tensor randomised (LayerNorm and biases included), its state dict is
converted by name to our pure-dict layout and loaded into our NNX model; both then run the same
padded batch and must agree at every non-padded position.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx

from ptft_jax.model import BertForMaskedLM, ModelConfig

ATOL = 1e-5
TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    type_vocab_size=2,
)
# HF keys that are tied to another parameter and have no counterpart of their own here.
TIED = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
    "cls.predictions.decoder.bias": "cls.predictions.bias",
}


def _hf_config() -> transformers.BertConfig:
    return transformers.BertConfig(**TINY, attn_implementation="eager")


def _randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter ~ normal(0, 0.5) so that no misplaced tensor can go unnoticed."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.5)
    return module.float().eval()


def _hf_name_to_path(name: str) -> tuple[tuple[str | int, ...], bool]:
    """HF dotted name -> (our path, whether the tensor is a dense kernel to transpose)."""
    parts: list[str | int] = [int(p) if p.isdigit() else p for p in name.split(".")]
    leaf, parent = parts[-1], parts[-2]
    if leaf == "weight":
        if parent == "LayerNorm":
            return (*parts[:-1], "scale"), False
        if isinstance(parent, str) and parent.endswith("embeddings"):
            return (*parts[:-1], "embedding"), False
        return (*parts[:-1], "kernel"), True
    return tuple(parts), False


def hf_to_pure_dict(state_dict: dict[str, torch.Tensor]) -> dict:
    """A torch state dict converted to the nested pure dict of ``nnx.to_pure_dict``."""
    pure: dict = {}
    for name, tensor in state_dict.items():
        if name.endswith(("position_ids", "token_type_ids")):  # buffers, not parameters
            continue
        if name in TIED:
            assert torch.equal(tensor, state_dict[TIED[name]]), f"{name} is not tied"
            continue
        path, transpose = _hf_name_to_path(name)
        value = tensor.detach().cpu().numpy()
        value = value.T if transpose else value
        node = pure
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = jnp.asarray(value, jnp.float32)
    return pure


def load_hf_weights(module: nnx.Module, state_dict: dict[str, torch.Tensor]) -> None:
    """Loads HF weights into ``module``; every parameter must be covered, with its exact shape."""
    pure = hf_to_pure_dict(state_dict)
    state = nnx.state(module)
    ours = {k: v.shape for k, v in nnx.traversals.flatten_mapping(nnx.to_pure_dict(state)).items()}
    theirs = {k: v.shape for k, v in nnx.traversals.flatten_mapping(pure).items()}
    assert ours == theirs
    nnx.replace_by_pure_dict(state, pure)
    nnx.update(module, state)
    assert all(isinstance(x, jax.Array) for x in jax.tree.leaves(nnx.state(module)))


def _ours(cfg_overrides: dict | None = None) -> BertForMaskedLM:
    """Our model, built abstractly (fast): ``load_hf_weights`` then fills in every parameter."""
    cfg = ModelConfig(
        **TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, **(cfg_overrides or {})
    )
    return nnx.eval_shape(lambda: BertForMaskedLM(cfg, rngs=nnx.Rngs(0)))


@nnx.jit(static_argnames="return_all_hidden")
def _bert_forward(bert, ids, mask, types, return_all_hidden=False):
    return bert(ids, mask, types, return_all_hidden=return_all_hidden)


@nnx.jit
def _mlm_forward(model, ids, mask, types, positions=None):
    return model(ids, mask, types, masked_positions_BxK=positions)


def _arrays(batch) -> tuple[jax.Array, jax.Array, jax.Array]:
    return tuple(jnp.asarray(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))


@pytest.fixture(scope="module")
def hf_mlm() -> transformers.BertForMaskedLM:
    return _randomise(transformers.BertForMaskedLM(_hf_config()), seed=0)


@pytest.fixture(scope="module")
def our_mlm(hf_mlm) -> BertForMaskedLM:
    model = _ours()
    load_hf_weights(model, hf_mlm.state_dict())
    return model


@pytest.fixture(scope="module")
def batch() -> dict[str, np.ndarray]:
    """Three sequences of lengths 10, 7 and 3, padded at the end, with mixed token types."""
    rng = np.random.default_rng(0)
    lengths = [10, 7, 3]
    b, length = len(lengths), max(lengths)
    mask = (np.arange(length)[None, :] < np.array(lengths)[:, None]).astype(np.int32)
    ids = rng.integers(1, TINY["vocab_size"], size=(b, length)).astype(np.int32) * mask
    types = np.zeros((b, length), np.int32)
    types[0, 4:10] = 1
    types[1, 3:7] = 1
    types[2, 1:3] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": types}


def _torch_inputs(batch) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(v).long() for k, v in batch.items()}


def _max_diff_valid(ours, theirs, mask) -> float:
    """Largest |ours - theirs| over positions where ``mask`` is 1 (trailing dims included)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape
    valid = mask.astype(bool)
    return float(np.max(np.abs(ours[valid] - theirs[valid])))


@pytest.fixture(scope="module")
def hf_mlm_outputs(hf_mlm, batch):
    with torch.no_grad():
        out = hf_mlm(**_torch_inputs(batch), output_hidden_states=True)
    return {
        "hidden_states": [h.numpy() for h in out.hidden_states],
        "logits": out.logits.numpy(),
    }


def test_random_weights_are_not_trivial(hf_mlm):
    """The LayerNorm scales and MLM bias really are randomised (so a mix-up cannot pass)."""
    sd = hf_mlm.state_dict()
    assert not torch.allclose(sd["bert.embeddings.LayerNorm.weight"], torch.ones(32))
    assert sd["cls.predictions.bias"].abs().max() > 0.1


def test_hidden_states_match(our_mlm, hf_mlm_outputs, batch):
    out = _bert_forward(our_mlm.bert, *_arrays(batch), return_all_hidden=True)
    ours, theirs = out["hidden_states"], hf_mlm_outputs["hidden_states"]
    assert len(ours) == len(theirs) == TINY["num_hidden_layers"] + 1
    for i, (o, t) in enumerate(zip(ours, theirs, strict=True)):
        diff = _max_diff_valid(o, t, batch["attention_mask"])
        assert diff < ATOL, f"hidden state {i}: max abs diff {diff}"
    diff = _max_diff_valid(out["last_hidden_state"], theirs[-1], batch["attention_mask"])
    assert diff < ATOL, f"last_hidden_state: max abs diff {diff}"


def _all_position_logits(model, batch) -> jax.Array:
    return _mlm_forward(model, *_arrays(batch), None)


def test_mlm_logits_match_at_all_positions(our_mlm, hf_mlm_outputs, batch):
    logits = _all_position_logits(our_mlm, batch)
    assert logits.dtype == jnp.float32
    assert logits.shape == hf_mlm_outputs["logits"].shape
    diff = _max_diff_valid(logits, hf_mlm_outputs["logits"], batch["attention_mask"])
    assert diff < ATOL, f"MLM logits: max abs diff {diff}"


def test_mlm_logits_at_masked_positions_are_gathered_rows(our_mlm, hf_mlm_outputs, batch):
    positions = np.array([[0, 4, 9, 2], [6, 1, 1, 0], [2, 0, 1, 0]], np.int32)
    gathered = _mlm_forward(our_mlm, *_arrays(batch), jnp.asarray(positions))
    assert gathered.shape == (3, positions.shape[1], TINY["vocab_size"])
    full = np.asarray(_all_position_logits(our_mlm, batch))
    rows = np.take_along_axis(full, positions[..., None], axis=1)
    diff = float(np.max(np.abs(np.asarray(gathered) - rows)))
    assert diff < ATOL, f"gathered vs full logits: max abs diff {diff}"
    # And directly against HF at those (all non-padded) positions.
    hf_rows = np.take_along_axis(hf_mlm_outputs["logits"], positions[..., None], axis=1)
    diff = float(np.max(np.abs(np.asarray(gathered) - hf_rows)))
    assert diff < ATOL, f"gathered vs HF logits: max abs diff {diff}"


def test_pooler_output_matches(batch):
    hf = _randomise(transformers.BertModel(_hf_config(), add_pooling_layer=True), seed=1)
    model = _ours({"add_pooling_layer": True})
    load_hf_weights(model.bert, hf.state_dict())
    with torch.no_grad():
        expected = hf(**_torch_inputs(batch)).pooler_output.numpy()
    out = _bert_forward(model.bert, *_arrays(batch))
    assert out["pooler_output"].shape == expected.shape
    diff = float(np.max(np.abs(np.asarray(out["pooler_output"]) - expected)))
    assert diff < ATOL, f"pooler_output: max abs diff {diff}"
