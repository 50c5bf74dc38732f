"""ModernBERT (``models/modernbert.py``) against PyTorch ``transformers``, both ways.

Tiny HF models get every tensor randomised (norms and biases included) so that no misplaced
tensor can go unnoticed; they are saved with ``save_pretrained`` and read by the product code
(``hf.read_config``, ``read_tensors``, ``load_params``), and ours has to compute what HF
computes on right-padded rows longer than the local window (2 tokens each side here), with the
last layer local or global. Two shapes: ModernBERT-base's choices (no biases, first-token
pooling) and every bias on, mean pooling, other RoPE bases and activations. Our randomised
models go the other way through ``hf.export``; packed rows have to compute what one example a
row computes.
"""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from helpers import (
    built_model,
    fresh_tree,
    max_diff,
    packed_rows,
    random_like,
    special_rows,
    torch_outputs,
    word_level_tokenizer,
)
from safetensors.numpy import load_file

from ptft_jax import hf, models, ops
from ptft_jax.errors import ConfigError, DataError
from ptft_jax.models import modernbert
from ptft_jax.models.modernbert_config import GLOBAL, LOCAL, ModernBertConfig

ATOL = 1e-5  # relative to the values' scale past 1 (_max_diff)
NUM_LABELS = 3
PAD, CLS, SEP = 0, 1, 2
SHAPE = dict(vocab_size=97, hidden_size=32, num_attention_heads=4, intermediate_size=37)
SHAPE |= dict(max_position_embeddings=64, local_attention=4)
SPECIALS = dict(pad_token_id=PAD, bos_token_id=CLS, cls_token_id=CLS, eos_token_id=SEP)
SPECIALS |= dict(sep_token_id=SEP)
VARIANTS = {  # our fields -> (HF's config.json fields)
    # ModernBERT-base's choices; three layers: global, local, local (the last one local).
    "base": dict(num_hidden_layers=3),
    # Every bias, mean pooling, other activations and RoPE bases; the last layer global.
    "biased": dict(
        num_hidden_layers=2,
        layer_types=(LOCAL, GLOBAL),
        norm_bias=True,
        attention_bias=True,
        mlp_bias=True,
        classifier_bias=True,
        decoder_bias=False,
        classifier_pooling="mean",
        hidden_activation="gelu_new",
        classifier_activation="silu",
        global_rope_theta=5000.0,
        local_rope_theta=300.0,
    ),
}
ARCHS = {
    "mlm": transformers.ModernBertForMaskedLM,
    "classification": transformers.ModernBertForSequenceClassification,
}


def _ours(variant: str) -> ModernBertConfig:
    return ModernBertConfig(**SHAPE, **VARIANTS[variant], num_labels=NUM_LABELS)


def _hf_config(variant: str) -> transformers.ModernBertConfig:
    fields = {**SHAPE, **VARIANTS[variant], **SPECIALS, "num_labels": NUM_LABELS}
    fields["norm_eps"] = 1e-5
    if "layer_types" in fields:
        fields["layer_types"] = list(fields["layer_types"])
    rope = {kind: fields.pop(key, None) for key, kind in (("global_rope_theta", GLOBAL),)}
    rope |= {LOCAL: fields.pop("local_rope_theta", None)}
    fields["rope_parameters"] = {
        kind: {"rope_type": "default", "rope_theta": theta}
        for kind, theta in rope.items()
        if theta is not None
    } or None
    return transformers.ModernBertConfig(**fields, attn_implementation="eager")


def _hf_model(cls, variant: str, seed: int) -> transformers.PreTrainedModel:
    """A HF model with every parameter ~ normal(0, 0.5); float32, eval mode."""
    torch.manual_seed(seed)
    model = cls(_hf_config(variant))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model.float().eval()


class _Bare(nnx.Module):
    """Our ModernBertModel under its checkpoint name (HF's bare ModernBertModel)."""

    def __init__(self, cfg: ModernBertConfig):
        self.model = modernbert.ModernBertModel(cfg, nnx.Rngs(params=0))


def _abstract(cfg: ModernBertConfig, head: str) -> nnx.Module:
    if head == "bare":
        return nnx.eval_shape(lambda: _Bare(cfg))
    return nnx.eval_shape(lambda: modernbert.build_model(cfg, head, 0))


def _build(cfg: ModernBertConfig, head: str, params: dict) -> nnx.Module:
    return built_model(_abstract(cfg, head), params)


def _random_params(cfg: ModernBertConfig, head: str, seed: int) -> dict:
    return random_like(fresh_tree(_abstract(cfg, head)), seed)


def _load(folder, head: str) -> tuple[ModernBertConfig, dict, list[str]]:
    """What the product does: config.json -> our config, tensors -> our parameter tree."""
    cfg = ModernBertConfig(**hf.read_config(folder), num_labels=NUM_LABELS)
    fresh = fresh_tree(_abstract(cfg, head))
    params, missing = hf.load_params(hf.read_tensors(folder), fresh, "modernbert")
    return cfg, params, missing


def _max_diff(ours, theirs, mask=None) -> float:
    """The largest difference, relative to the largest value once values pass 1."""
    return max_diff(ours, theirs, mask, relative=True)


def _rows(lengths, width, seed=0) -> dict[str, np.ndarray]:
    """``[CLS] ... [SEP]`` rows of ``lengths``, right-padded to ``width``."""
    return special_rows(lengths, width, CLS, SEP, PAD, SHAPE["vocab_size"], seed)


@pytest.fixture(scope="module")
def batch() -> dict[str, np.ndarray]:
    """Lengths 11, 6 and 3 (the window spans 5), padded on the right."""
    return _rows([11, 6, 3], 12)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    """``{(variant, head): (randomised HF model, the folder it was saved to)}``."""
    classes = {**ARCHS, "bare": transformers.ModernBertModel}
    out = {}
    for variant in VARIANTS:
        for seed, (head, cls) in enumerate(classes.items()):
            model = _hf_model(cls, variant, seed)
            folder = tmp_path_factory.mktemp(f"modernbert_{variant}_{head}")
            model.save_pretrained(folder)
            out[variant, head] = (model, folder)
    return out


@pytest.fixture(scope="module")
def tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A word-level tokenizer over the tiny vocabulary with BERT-style specials."""
    specials = ["[PAD]", "[CLS]", "[SEP]", "[UNK]", "[MASK]"]
    return word_level_tokenizer(specials, ("pad", "cls", "sep", "unk", "mask"))


@nnx.jit
def _forward(model, ids, mask):
    return model(ids, mask)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("head", list(ARCHS))
def test_hf_checkpoint_loads_with_equal_logits(saved, batch, variant, head):
    hf_model, folder = saved[variant, head]
    cfg, params, fresh = _load(folder, head)
    assert fresh == []
    assert cfg == _ours(variant)
    ours = _forward(_build(cfg, head, params), batch["input_ids"], batch["attention_mask"])
    assert ours.dtype == jnp.float32
    mask = batch["attention_mask"] if head == "mlm" else None
    diff = _max_diff(ours, torch_outputs(hf_model, batch).logits.numpy(), mask)
    assert diff < ATOL, f"{variant} {head} logits: max abs diff {diff}"


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_mlm_logits_at_masked_positions_are_hf_rows(saved, batch, variant):
    """The MLM task's path: the last layer (local or global) computes only the masked
    positions, so its window is a band around each of them."""
    hf_model, folder = saved[variant, "mlm"]
    cfg, params, _ = _load(folder, "mlm")
    model = _build(cfg, "mlm", params)
    positions = np.array([[0, 4, 10, 9], [5, 1, 1, 0], [2, 0, 1, 0]], np.int32)
    logits, nsp = model.pretraining(batch["input_ids"], batch["attention_mask"], None, positions)
    assert nsp is None
    theirs = np.take_along_axis(
        torch_outputs(hf_model, batch).logits.numpy(), positions[..., None], 1
    )
    diff = _max_diff(logits, theirs)
    assert diff < ATOL, f"gathered MLM logits: max abs diff {diff}"


def test_bare_model_hidden_states_and_embedding(saved, batch):
    """A bare ModernBertModel checkpoint (no ``model.`` prefix): every layer's hidden state
    equals HF's, and the last state is after the final norm; the embedding head mean-pools it."""
    hf_model, folder = saved["base", "bare"]
    assert not any(k.startswith("model.") for k in load_file(str(folder / "model.safetensors")))
    cfg, params, fresh = _load(folder, "bare")
    assert fresh == []
    backbone = _build(cfg, "bare", params).model
    out = nnx.jit(lambda m, i, a: m(i, a, return_all_hidden=True))(
        backbone, batch["input_ids"], batch["attention_mask"]
    )
    expected = torch_outputs(hf_model, batch, output_hidden_states=True)
    mask = batch["attention_mask"]
    assert len(out["hidden_states"]) == len(expected.hidden_states) == 4
    for i, (o, t) in enumerate(zip(out["hidden_states"], expected.hidden_states, strict=True)):
        diff = _max_diff(o, t.numpy(), mask)
        assert diff < ATOL, f"hidden state {i}: max abs diff {diff}"
    last = expected.last_hidden_state.numpy()
    assert _max_diff(out["last_hidden_state"], last, mask) < ATOL
    _, params, fresh = _load(folder, "embedding")
    assert fresh == []
    ours = _forward(_build(cfg, "embedding", params), batch["input_ids"], mask)
    weights = mask[..., None]
    diff = _max_diff(ours, (last * weights).sum(1) / weights.sum(1))
    assert diff < ATOL, f"sentence embedding: max abs diff {diff}"


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("head", list(ARCHS))
def test_hf_checkpoint_exports_back_unchanged(saved, tokenizer, tmp_path, variant, head):
    """HF -> ours -> ``hf.export``: the same tensor names and values as HF's own file."""
    _, folder = saved[variant, head]
    cfg, params, _ = _load(folder, head)
    fields = dataclasses.asdict(cfg)
    hf.export(params, fields, tokenizer, tmp_path, ARCHS[head].__name__, None, "modernbert")
    original = load_file(str(folder / "model.safetensors"))
    exported = load_file(str(tmp_path / "model.safetensors"))
    assert sorted(exported) == sorted(original)
    for name, value in original.items():
        np.testing.assert_array_equal(exported[name], value, err_msg=name)


EXPORTS = {  # head -> Auto class
    "mlm": transformers.AutoModelForMaskedLM,
    "classification": transformers.AutoModelForSequenceClassification,
    "embedding": transformers.AutoModel,
}


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("head", list(EXPORTS))
def test_export_loads_in_transformers_with_equal_outputs(batch, tokenizer, tmp_path, variant, head):
    cfg = _ours(variant)
    params = _random_params(cfg, head, seed=3)
    architecture = modernbert.architecture(head, cfg)
    assert modernbert.head_of(architecture) == ("mlm" if head == "embedding" else head)
    fields = dataclasses.asdict(cfg)
    hf.export(params, fields, tokenizer, tmp_path, architecture, family="modernbert")

    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "modernbert" and config["architectures"] == [architecture]
    assert config["layer_types"] == list(cfg.layer_types)
    ids = [config[f"{k}_token_id"] for k in ("pad", "cls", "sep", "bos", "eos")]
    assert ids == [PAD, CLS, SEP, CLS, SEP]  # ModernBERT-base's: [CLS] begins, [SEP] ends
    read = hf.read_config(tmp_path)
    assert ModernBertConfig(**read, num_labels=NUM_LABELS) == cfg

    theirs, info = EXPORTS[head].from_pretrained(
        tmp_path, output_loading_info=True, attn_implementation="eager"
    )
    assert type(theirs).__name__ == architecture
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    assert not info["mismatched_keys"]
    ours = _forward(_build(cfg, head, params), batch["input_ids"], batch["attention_mask"])
    out = torch_outputs(theirs.eval(), batch)
    mask = batch["attention_mask"]
    if head == "embedding":
        last, weights = out.last_hidden_state.numpy(), mask[..., None]
        diff = _max_diff(ours, (last * weights).sum(1) / weights.sum(1))
    else:
        diff = _max_diff(ours, out.logits.numpy(), mask if head == "mlm" else None)
    assert diff < ATOL, f"{variant} {head} outputs after export: max abs diff {diff}"


@pytest.mark.parametrize(
    "variant, head, num_labels",
    [
        ("base", "classification", 3),
        ("biased", "classification", 3),  # mean pooling
        ("base", "classification", 1),
        ("base", "embedding", 3),
    ],
)  # first-token and mean pooling, regression, and the contrastive task's embedding
def test_packed_rows_compute_what_one_example_a_row_computes(variant, head, num_labels):
    width, lengths = 24, [7, 12, 5, 20, 9]
    one = _rows(lengths, width, seed=2)
    examples = [one["input_ids"][i, :n] for i, n in enumerate(lengths)]
    cfg = dataclasses.replace(_ours(variant), num_labels=num_labels)
    model = _build(cfg, head, _random_params(cfg, head, seed=4))
    want = np.asarray(model(one["input_ids"], one["attention_mask"]))
    inputs, packed, slot = packed_rows(examples, [[0, 1, 2], [3], [4]], width, PAD)
    got = np.asarray(model(*inputs, **packed))
    assert got.shape[:2] == slot.shape
    diff = _max_diff(got[slot >= 0], want[slot[slot >= 0]])
    assert diff < ATOL, f"{head} packed rows: max abs diff {diff}"


def test_local_window_with_attention_dropout_keeps_the_band():
    """The explicit path (attention dropout) masks the same band as the fused one: at a rate
    that drops nothing, both give the same outputs, and a token outside every query's window
    changes nothing."""
    rng = np.random.default_rng(0)
    q, k, v = (jnp.asarray(rng.normal(size=(2, 10, 2, 4)), jnp.float32) for _ in range(3))
    mask = jnp.asarray(np.arange(10)[None] < np.array([[10], [7]]))
    kw = dict(implementation="xla", local_window=2)
    fused = ops.attention(q, k, v, mask, dropout_rate=0.0, rngs=None, **kw)
    explicit = ops.attention(q, k, v, mask, dropout_rate=1e-12, rngs=nnx.Rngs(dropout=0), **kw)
    real = np.asarray(mask)  # a padding query with no real key in its band: any average
    np.testing.assert_allclose(np.asarray(explicit)[real], np.asarray(fused)[real], atol=1e-6)
    moved = ops.attention(q, k.at[:, 9].set(9.0), v, mask, dropout_rate=0.0, rngs=None, **kw)
    np.testing.assert_array_equal(np.asarray(moved)[:, :7], np.asarray(fused)[:, :7])


@pytest.mark.parametrize("length, window", [(50, 4), (37, 8), (13, 4)])
def test_banded_attention_is_the_local_window_without_the_square(length, window):
    """Blocks of w queries over the 3w keys around them compute what the fused kernel's local
    window computes, at every real query, for rows whose length is no multiple of w."""
    rng = np.random.default_rng(length)
    q, k, v = (jnp.asarray(rng.normal(size=(3, length, 2, 8)), jnp.float32) for _ in range(3))
    mask = jnp.asarray(np.arange(length)[None] < np.array([[length], [length // 2], [3]]))
    dense = jax.nn.dot_product_attention(
        q, k, v, mask=mask[:, None, None, :], local_window_size=(window, window)
    )
    banded = ops.banded_attention(q, k, v, mask, window)
    real = np.asarray(mask)
    np.testing.assert_allclose(np.asarray(banded)[real], np.asarray(dense)[real], atol=1e-6)
    if length > 3 * window:  # what a local layer runs on XLA
        chosen = ops.attention(
            q, k, v, mask, implementation="xla", dropout_rate=0.0, rngs=None, local_window=window
        )
        np.testing.assert_array_equal(np.asarray(chosen), np.asarray(banded))


def test_config_json(saved, tmp_path):
    """model_type picks the family; transformers' older keys are read; what ModernBERT cannot
    compute is refused in one sentence naming the file."""
    _, folder = saved["base", "mlm"]
    config = json.loads((folder / "config.json").read_text())
    assert models.of_hf_config(config, folder) is modernbert
    old = {k: v for k, v in config.items() if k not in ("layer_types", "rope_parameters")}
    old |= {"global_attn_every_n_layers": 2, "global_rope_theta": 1e4, "local_rope_theta": 99.0}
    (tmp_path / "config.json").write_text(json.dumps(old))
    fields = hf.read_config(tmp_path)
    assert fields["layer_types"] == [GLOBAL, LOCAL, GLOBAL]
    assert (fields["global_rope_theta"], fields["local_rope_theta"]) == (1e4, 99.0)
    bad = {
        "layer_types": ({**config, "layer_types": [GLOBAL, LOCAL]}, "has 2 entries"),
        "rope": (
            {**config, "rope_parameters": {GLOBAL: {"rope_type": "linear", "factor": 2.0}}},
            "rope_type 'default' only",
        ),
        "bias": ({**config, "mlp_bias": "yes"}, "not true or false"),
        "every": ({**old, "global_attn_every_n_layers": "3"}, "not an integer"),
        "theta": (
            {**config, "rope_parameters": {LOCAL: {"rope_theta": "big"}}},
            "rope_theta='big', not a number",
        ),
        "model_type": ({**config, "model_type": "modernbert2"}, "holds a 'modernbert2' model"),
    }
    for data, message in bad.values():
        (tmp_path / "config.json").write_text(json.dumps(data))
        with pytest.raises(DataError, match=message):
            hf.read_config(tmp_path)


def test_user_errors_and_every_parameter_has_logical_names():
    with pytest.raises(ConfigError, match="no next-sentence head"):
        modernbert.build_model(dataclasses.replace(_ours("base"), next_sentence=True), "mlm", 0)
    with pytest.raises(ConfigError, match="has 2 entries .* for model.num_hidden_layers=3"):
        ModernBertConfig(**SHAPE, num_hidden_layers=3, layer_types=(GLOBAL, LOCAL))
    with pytest.raises(ConfigError, match="classifier_pooling='max' is unknown"):
        ModernBertConfig(classifier_pooling="max")
    for variant in VARIANTS:
        for head in modernbert.HEADS:
            state = nnx.state(_abstract(_ours(variant), head))
            with nnx.logical_axis_rules(()):
                names = nnx.to_pure_dict(nnx.get_partition_spec(state))
            shapes = nnx.traversals.flatten_mapping(nnx.to_pure_dict(state))
            for path, spec in nnx.traversals.flatten_mapping(names).items():
                assert len(tuple(spec)) == len(shapes[path].shape), (head, path, spec)
