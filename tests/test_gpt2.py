"""GPT-2 (``models/gpt2.py``) against PyTorch ``transformers``, both ways.

Tiny HF models get every tensor randomised (LayerNorms and biases included) so that no misplaced
tensor can go unnoticed; they are saved with ``save_pretrained`` and read by the product code
(``hf.read_config``, ``read_tensors``, ``load_params``), and ours has to compute what HF
computes. Our randomised models go the other way through ``hf.export``.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
import torch
import transformers
from flax import nnx
from helpers import built_model, fresh_tree, random_like
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
from safetensors.numpy import load_file, save_file

from ptft_jax import hf, sharding
from ptft_jax.errors import DataError
from ptft_jax.models import gpt2
from ptft_jax.models.gpt2 import GPT2Config

ATOL = 1e-5
NUM_LABELS = 3
PAD = 0
# HF names; n_inner stays null: 4 * n_embd.
TINY_HF = dict(vocab_size=97, n_embd=32, n_layer=2, n_head=4, n_positions=24)
TINY = GPT2Config(
    vocab_size=97,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=128,
    max_position_embeddings=24,
)
ARCHS = {
    "causal_lm": transformers.GPT2LMHeadModel,
    "classification": transformers.GPT2ForSequenceClassification,
}


def _hf_model(head: str, seed: int) -> transformers.PreTrainedModel:
    """A HF model with every parameter ~ normal(0, 0.5); float32, eval mode."""
    config = transformers.GPT2Config(
        **TINY_HF, num_labels=NUM_LABELS, pad_token_id=PAD, attn_implementation="eager"
    )
    torch.manual_seed(seed)
    model = ARCHS[head](config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model.float().eval()


def _abstract(cfg: GPT2Config, head: str) -> nnx.Module:
    return nnx.eval_shape(lambda: gpt2.build_model(cfg, head, 0))


def _fresh(cfg: GPT2Config, head: str) -> dict:
    return fresh_tree(_abstract(cfg, head))


def _build(cfg: GPT2Config, head: str, params: dict) -> nnx.Module:
    return built_model(_abstract(cfg, head), params)


def _random_params(cfg: GPT2Config, head: str, seed: int) -> dict:
    """Our parameter tree with every leaf ~ normal(0, 0.5), as host arrays."""
    return random_like(_fresh(cfg, head), seed)


def _load(folder, head: str) -> tuple[GPT2Config, dict, list[str]]:
    """What the product does: config.json -> our config, tensors -> our parameter tree."""
    cfg = GPT2Config(**hf.read_config(folder), num_labels=NUM_LABELS)
    params, fresh = hf.load_params(hf.read_tensors(folder), _fresh(cfg, head), "gpt2")
    return cfg, params, fresh


@nnx.jit
def _forward(model, ids, mask):
    return model(ids, mask)


def _torch(model, batch) -> np.ndarray:
    with torch.no_grad():
        out = model(**{k: torch.from_numpy(v).long() for k, v in batch.items()})
    return out.logits.numpy()


def _max_diff(ours, theirs, mask=None) -> float:
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape
    if mask is not None:
        ours, theirs = ours[mask.astype(bool)], theirs[mask.astype(bool)]
    return float(np.max(np.abs(ours - theirs)))


@pytest.fixture(scope="module")
def batch() -> dict[str, np.ndarray]:
    """Lengths 11, 6 and 2, padded on the right with the pad id (never a real token)."""
    rng = np.random.default_rng(0)
    lengths = np.array([11, 6, 2])
    mask = (np.arange(12)[None] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(1, TINY.vocab_size, mask.shape).astype(np.int32) * mask
    return {"input_ids": ids, "attention_mask": mask}


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    """``{head: (randomised HF model, the folder it was saved to)}``."""
    out = {}
    for seed, head in enumerate(ARCHS):
        model = _hf_model(head, seed)
        folder = tmp_path_factory.mktemp(f"gpt2_{head}")
        model.save_pretrained(folder)
        out[head] = (model, folder)
    return out


@pytest.fixture(scope="module")
def tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A word-level tokenizer over the tiny vocabulary, with pad (id 0) and end-of-text."""
    vocab = {"<pad>": PAD, "<|endoftext|>": 1, **{f"w{i}": i for i in range(2, TINY.vocab_size)}}
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="<|endoftext|>"))
    model.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=model, pad_token="<pad>", eos_token="<|endoftext|>"
    )


@pytest.mark.parametrize("head", list(ARCHS))
def test_hf_checkpoint_loads_with_equal_logits(saved, batch, head):
    hf_model, folder = saved[head]
    cfg, params, fresh = _load(folder, head)
    assert fresh == []
    assert cfg == dataclasses.replace(TINY, num_labels=NUM_LABELS)
    model = _build(cfg, head, params)
    ours = _forward(model, batch["input_ids"], batch["attention_mask"])
    assert ours.dtype == jnp.float32
    mask = batch["attention_mask"] if head == "causal_lm" else None
    diff = _max_diff(ours, _torch(hf_model, batch), mask)
    assert diff < ATOL, f"{head} logits: max abs diff {diff}"


@pytest.mark.parametrize("head", list(ARCHS))
def test_export_loads_in_transformers_with_equal_logits(batch, tokenizer, tmp_path, head):
    cfg = dataclasses.replace(TINY, num_labels=NUM_LABELS)
    params = _random_params(cfg, head, seed=3)
    architecture = gpt2.architecture(head, cfg)
    assert architecture == ARCHS[head].__name__
    assert gpt2.head_of(architecture) == head
    hf.export(params, dataclasses.asdict(cfg), tokenizer, tmp_path, architecture, family="gpt2")

    names = set(load_file(str(tmp_path / "model.safetensors")))
    assert "lm_head.weight" not in names and "transformer.wte.weight" in names
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "gpt2" and config["n_embd"] == 32 and config["n_inner"] == 128
    assert (config["pad_token_id"], config["eos_token_id"], config["bos_token_id"]) == (0, 1, None)
    fields = {k: getattr(cfg, k) for k in gpt2.HF_FIELDS}
    assert hf.read_config(tmp_path) == {"family": "gpt2", **fields}

    auto = {"causal_lm": transformers.AutoModelForCausalLM}.get(
        head, transformers.AutoModelForSequenceClassification
    )
    theirs, info = auto.from_pretrained(
        tmp_path, output_loading_info=True, attn_implementation="eager"
    )
    assert type(theirs) is ARCHS[head]
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        assert not info.get(kind), f"{kind}: {info.get(kind)}"
    ours = _forward(_build(cfg, head, params), batch["input_ids"], batch["attention_mask"])
    mask = batch["attention_mask"] if head == "causal_lm" else None
    diff = _max_diff(ours, _torch(theirs.eval(), batch), mask)
    assert diff < ATOL, f"{head} logits after export: max abs diff {diff}"
    # And back: the export reads in as the same parameters.
    again, fresh = hf.load_params(hf.read_tensors(tmp_path), _fresh(cfg, head), "gpt2")
    assert fresh == []
    jax.tree.map(np.testing.assert_array_equal, again, params)


def test_old_checkpoints_causal_mask_buffers_are_skipped(saved, batch, tmp_path):
    """Older GPT-2 files carry ``attn.bias`` (the causal mask) and ``attn.masked_bias``."""
    hf_model, folder = saved["causal_lm"]
    tensors = load_file(str(folder / "model.safetensors"))
    n = TINY.max_position_embeddings
    for i in range(TINY.num_hidden_layers):
        tensors[f"transformer.h.{i}.attn.bias"] = np.tril(np.ones((n, n), np.uint8))[None, None]
        tensors[f"transformer.h.{i}.attn.masked_bias"] = np.array(-1e4, np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text((folder / "config.json").read_text())
    cfg, params, fresh = _load(tmp_path, "causal_lm")
    assert fresh == []
    ours = _forward(_build(cfg, "causal_lm", params), batch["input_ids"], batch["attention_mask"])
    diff = _max_diff(ours, _torch(hf_model, batch), batch["attention_mask"])
    assert diff < ATOL, f"logits: max abs diff {diff}"


def test_lm_checkpoint_into_classifier_starts_only_the_score_fresh(saved):
    _, folder = saved["causal_lm"]
    _, _, fresh = _load(folder, "classification")
    assert fresh == ["score/kernel"]


def test_config_json_mistakes_are_one_sentence(saved, tmp_path):
    _, folder = saved["causal_lm"]
    config = json.loads((folder / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "n_embd": "32"}))
    with pytest.raises(DataError, match=r"config.json has n_embd='32', not an integer; fix"):
        hf.read_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "activation_function": "relu"}))
    with pytest.raises(DataError, match="with activation_function='gelu_new' only"):
        hf.read_config(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({**config, "n_inner": 40}))
    assert hf.read_config(tmp_path)["intermediate_size"] == 40


def test_dropout_needs_rngs_and_follows_them(batch):
    cfg = dataclasses.replace(TINY, hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.2)
    model = _build(cfg, "causal_lm", _random_params(cfg, "causal_lm", seed=4))
    args = (batch["input_ids"], batch["attention_mask"])
    plain = np.asarray(model(*args))
    np.testing.assert_array_equal(np.asarray(model(*args)), plain)
    dropped = np.asarray(model(*args, rngs=nnx.Rngs(dropout=0)))
    assert np.abs(dropped - plain).max() > 1e-3
    np.testing.assert_array_equal(np.asarray(model(*args, rngs=nnx.Rngs(dropout=0))), dropped)
    assert np.abs(np.asarray(model(*args, rngs=nnx.Rngs(dropout=1))) - dropped).max() > 1e-3


def test_packed_rows_equal_one_example_a_row(batch):
    """Two examples in one row (segment numbers, restarting positions) give each example's
    logits alone: attention crosses neither examples nor the causal order."""
    cfg = dataclasses.replace(TINY, num_labels=NUM_LABELS)
    ids, mask = batch["input_ids"][1:], batch["attention_mask"][1:]  # lengths 6 and 2
    packed_ids = np.zeros((1, 12), np.int32)
    packed_ids[0, :8] = np.concatenate([ids[0, :6], ids[1, :2]])
    segments = np.array([[1] * 6 + [2] * 2 + [0] * 4], np.int32)
    positions = np.array([[*range(6), 0, 1, *[0] * 4]], np.int32)
    for head in ARCHS:
        model = _build(cfg, head, _random_params(cfg, head, seed=5))
        alone = np.asarray(model(ids, mask))
        together = np.asarray(
            model(
                packed_ids,
                segments,
                position_ids_BxL=positions,
                **({"cls_positions_BxK": np.array([[0, 6]])} if head == "classification" else {}),
            )
        )
        if head == "causal_lm":
            together, alone = together[0, :8], np.concatenate([alone[0, :6], alone[1, :2]])
        else:
            together = together[0]
        diff = _max_diff(together, alone)
        assert diff < ATOL, f"{head} packed logits: max abs diff {diff}"


def test_sharded_forward_equals_one_device(batch):
    """On a (data, fsdp, tensor) = (2, 2, 2) mesh, parameters split by their logical axes
    (the fused q/k/v output whole), the logits are those of one device."""
    head, cfg = "causal_lm", dataclasses.replace(TINY, vocab_size=98)  # vocab split in two
    params = _random_params(cfg, head, seed=6)
    ids, mask = batch["input_ids"], batch["attention_mask"]
    want = np.asarray(_forward(_build(cfg, head, params), ids, mask))
    mesh = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    graphdef, abstract = nnx.split(_abstract(cfg, head))
    specs = sharding.param_specs(abstract, mesh)
    block = specs["transformer"]["h"][0]
    assert block["attn"]["c_attn"]["kernel"] == P("fsdp")  # q|k|v whole
    assert block["mlp"]["c_fc"]["kernel"] == P("fsdp", "tensor")
    assert specs["transformer"]["wte"]["embedding"] == P("tensor", "fsdp")
    rows = jax.device_put(
        {k: np.tile(v, (2, 1))[:4] for k, v in batch.items()},
        NamedSharding(mesh, P(("data", "fsdp"))),
    )
    with jax.set_mesh(mesh), nnx.logical_axis_rules(sharding.LOGICAL_RULES):
        nnx.replace_by_pure_dict(abstract, jax.device_put(params, sharding.named(mesh, specs)))

        @jax.jit
        def forward(state, ids, mask):
            return nnx.merge(graphdef, state)(ids, mask)

        got = np.asarray(forward(abstract, rows["input_ids"], rows["attention_mask"]))
    diff = _max_diff(got[:3], want, mask)
    assert diff < ATOL, f"sharded logits: max abs diff {diff}"
