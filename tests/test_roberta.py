"""RoBERTa (``models/roberta.py``) against PyTorch ``transformers``, both ways.

Tiny HF models get every tensor randomised (LayerNorms and biases included) so that no misplaced
tensor can go unnoticed; they are saved with ``save_pretrained`` and read by the product code
(``hf.read_config``, ``read_tensors``, ``load_params``), and ours has to compute what HF
computes on right-padded rows, whose position ids count from ``pad_token_id + 1``. Our
randomised models go the other way through ``hf.export``. Packed rows (several examples a row)
have to compute what one example a row computes.
"""

from __future__ import annotations

import dataclasses
import json

import jax.numpy as jnp
import numpy as np
import pytest
import tokenizers
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

from ptft_jax import hf, models
from ptft_jax.errors import ConfigError, DataError
from ptft_jax.models import roberta
from ptft_jax.models.roberta import RobertaConfig

ATOL = 1e-5
NUM_LABELS = 3
PAD, BOS, EOS = 1, 0, 2  # RoBERTa's <pad>, <s>, </s>
TINY_HF = dict(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)
TINY_HF |= dict(intermediate_size=37, max_position_embeddings=40, type_vocab_size=1)
TINY_HF |= dict(layer_norm_eps=1e-5)  # roberta-base's (HF's default: 1e-12)
TINY = RobertaConfig(**TINY_HF, num_labels=NUM_LABELS)
ARCHS = {
    "mlm": transformers.RobertaForMaskedLM,
    "classification": transformers.RobertaForSequenceClassification,
}


def _hf_model(cls, seed: int, **overrides) -> transformers.PreTrainedModel:
    """A HF model with every parameter ~ normal(0, 0.5); float32, eval mode."""
    fields = {**TINY_HF, "pad_token_id": PAD, "num_labels": NUM_LABELS, **overrides}
    config = transformers.RobertaConfig(**fields, attn_implementation="eager")
    torch.manual_seed(seed)
    model = cls(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model.float().eval()


class _Bare(nnx.Module):
    """Our RobertaModel under its checkpoint name, pooler included (HF's bare RobertaModel)."""

    def __init__(self, cfg: RobertaConfig):
        self.roberta = roberta.RobertaModel(cfg, nnx.Rngs(params=0))


def _abstract(cfg: RobertaConfig, head: str) -> nnx.Module:
    if head == "bare":
        return nnx.eval_shape(lambda: _Bare(dataclasses.replace(cfg, add_pooling_layer=True)))
    return nnx.eval_shape(lambda: roberta.build_model(cfg, head, 0))


def _fresh(cfg: RobertaConfig, head: str) -> dict:
    return fresh_tree(_abstract(cfg, head))


def _build(cfg: RobertaConfig, head: str, params: dict) -> nnx.Module:
    return built_model(_abstract(cfg, head), params)


def _random_params(cfg: RobertaConfig, head: str, seed: int) -> dict:
    """Our parameter tree with every leaf ~ normal(0, 0.5), as host arrays."""
    return random_like(_fresh(cfg, head), seed)


def _load(folder, head: str) -> tuple[RobertaConfig, dict, list[str]]:
    """What the product does: config.json -> our config, tensors -> our parameter tree."""
    cfg = RobertaConfig(**hf.read_config(folder), num_labels=NUM_LABELS)
    params, fresh = hf.load_params(hf.read_tensors(folder), _fresh(cfg, head), "roberta")
    return cfg, params, fresh


_max_diff = max_diff


def _rows(lengths, width, vocab, pad=PAD, seed=0) -> dict[str, np.ndarray]:
    """``<s> ... </s>`` rows of ``lengths``, right-padded with ``pad`` to ``width``; the
    tokens between are random ids above the specials (never the pad id)."""
    return special_rows(lengths, width, BOS, EOS, pad, vocab, seed)


@pytest.fixture(scope="module")
def batch() -> dict[str, np.ndarray]:
    """Lengths 11, 6 and 3, padded on the right with the pad id."""
    return _rows([11, 6, 3], 12, TINY.vocab_size)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict:
    """``{head: (randomised HF model, the folder it was saved to)}``; ``bare``: RobertaModel
    with its pooler."""
    classes = {**ARCHS, "bare": transformers.RobertaModel}
    out = {}
    for seed, (head, cls) in enumerate(classes.items()):
        model = _hf_model(cls, seed)
        folder = tmp_path_factory.mktemp(f"roberta_{head}")
        model.save_pretrained(folder)
        out[head] = (model, folder)
    return out


@pytest.fixture(scope="module")
def tokenizer() -> transformers.PreTrainedTokenizerFast:
    """A word-level tokenizer over the tiny vocabulary with RoBERTa's special ids."""
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    return word_level_tokenizer(specials, ("bos", "pad", "eos", "unk", "mask"))


@nnx.jit
def _forward(model, ids, mask):
    return model(ids, mask)


@nnx.jit
def _hidden(backbone, ids, mask):
    return backbone(ids, mask, return_all_hidden=True)


@pytest.mark.parametrize("head", list(ARCHS))
def test_hf_checkpoint_loads_with_equal_logits(saved, batch, head):
    hf_model, folder = saved[head]
    cfg, params, fresh = _load(folder, head)
    assert fresh == []
    assert cfg == TINY
    model = _build(cfg, head, params)
    ours = _forward(model, batch["input_ids"], batch["attention_mask"])
    assert ours.dtype == jnp.float32
    mask = batch["attention_mask"] if head == "mlm" else None
    diff = _max_diff(ours, torch_outputs(hf_model, batch).logits.numpy(), mask)
    assert diff < ATOL, f"{head} logits: max abs diff {diff}"


def test_mlm_logits_at_masked_positions_are_hf_rows(saved, batch):
    """The MLM task's path: the last layer computes only the masked positions."""
    hf_model, folder = saved["mlm"]
    cfg, params, _ = _load(folder, "mlm")
    model = _build(cfg, "mlm", params)
    positions = np.array([[0, 4, 10, 2], [5, 1, 1, 0], [2, 0, 1, 0]], np.int32)
    logits, nsp = model.pretraining(batch["input_ids"], batch["attention_mask"], None, positions)
    assert nsp is None
    theirs = np.take_along_axis(
        torch_outputs(hf_model, batch).logits.numpy(), positions[..., None], 1
    )
    diff = _max_diff(logits, theirs)
    assert diff < ATOL, f"gathered MLM logits: max abs diff {diff}"


def test_bare_model_hidden_states_pooler_and_embedding(saved, batch):
    """A bare RobertaModel checkpoint (no ``roberta.`` prefix, with pooler): every layer's
    hidden states and the pooler equal HF's; the embedding head mean-pools HF's last states
    and ignores the pooler."""
    hf_model, folder = saved["bare"]
    assert not any(k.startswith("roberta.") for k in load_file(str(folder / "model.safetensors")))
    cfg, params, fresh = _load(folder, "bare")
    assert fresh == []
    backbone = _build(cfg, "bare", params).roberta
    out = _hidden(backbone, batch["input_ids"], batch["attention_mask"])
    expected = torch_outputs(hf_model, batch, output_hidden_states=True)
    mask = batch["attention_mask"]
    assert len(out["hidden_states"]) == len(expected.hidden_states) == 3
    for i, (o, t) in enumerate(zip(out["hidden_states"], expected.hidden_states, strict=True)):
        diff = _max_diff(o, t.numpy(), mask)
        assert diff < ATOL, f"hidden state {i}: max abs diff {diff}"
    diff = _max_diff(out["pooler_output"], expected.pooler_output.numpy())
    assert diff < ATOL, f"pooler_output: max abs diff {diff}"

    _, params, fresh = _load(folder, "embedding")
    assert fresh == []  # the pooler is left out, not an error
    ours = _forward(_build(cfg, "embedding", params), batch["input_ids"], mask)
    last, weights = expected.last_hidden_state.numpy(), mask[..., None]
    diff = _max_diff(ours, (last * weights).sum(1) / weights.sum(1))
    assert diff < ATOL, f"sentence embedding: max abs diff {diff}"


def test_another_pad_id_and_token_types(tmp_path):
    """Positions count from whatever pad_token_id is, and segment embeddings are used."""
    hf_model = _hf_model(transformers.RobertaModel, seed=7, pad_token_id=0, type_vocab_size=2)
    hf_model.save_pretrained(tmp_path)
    cfg, params, _ = _load(tmp_path, "bare")
    assert (cfg.pad_token_id, cfg.type_vocab_size) == (0, 2)
    batch = _rows([12, 7, 4], 12, TINY.vocab_size, pad=0, seed=1)
    batch["token_type_ids"] = (np.arange(12)[None] >= np.array([[6], [3], [2]])).astype(np.int32)
    out = _build(cfg, "bare", params).roberta(*batch.values())
    expected = torch_outputs(hf_model, batch).last_hidden_state.numpy()
    diff = _max_diff(out["last_hidden_state"], expected, batch["attention_mask"])
    assert diff < ATOL, f"last_hidden_state: max abs diff {diff}"


@pytest.mark.parametrize("head", list(ARCHS))
def test_hf_checkpoint_exports_back_unchanged(saved, tokenizer, tmp_path, head):
    """HF -> ours -> ``hf.export``: the same tensor names and values as HF's own file."""
    _, folder = saved[head]
    cfg, params, _ = _load(folder, head)
    hf.export(
        params, dataclasses.asdict(cfg), tokenizer, tmp_path, ARCHS[head].__name__, None, "roberta"
    )
    original = load_file(str(folder / "model.safetensors"))
    exported = load_file(str(tmp_path / "model.safetensors"))
    assert sorted(exported) == sorted(original)
    for name, value in original.items():
        np.testing.assert_array_equal(exported[name], value, err_msg=name)


EXPORTS = {  # head -> (Auto class, what HF's class has that ours lacks)
    "mlm": (transformers.AutoModelForMaskedLM, set()),
    "classification": (transformers.AutoModelForSequenceClassification, set()),
    # HF's bare RobertaModel has a pooler, which no head of ours trains (as for BERT).
    "embedding": (transformers.AutoModel, {"pooler.dense.weight", "pooler.dense.bias"}),
}


@pytest.mark.parametrize("head", list(EXPORTS))
def test_export_loads_in_transformers_with_equal_outputs(batch, tokenizer, tmp_path, head):
    params = _random_params(TINY, head, seed=3)
    architecture = roberta.architecture(head, TINY)
    assert roberta.head_of(architecture) == ("mlm" if head == "embedding" else head)
    fields = dataclasses.asdict(TINY)
    hf.export(params, fields, tokenizer, tmp_path, architecture, family="roberta")

    names = set(load_file(str(tmp_path / "model.safetensors")))
    assert not any(n.startswith("lm_head.decoder") for n in names)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == "roberta" and config["architectures"] == [architecture]
    assert (config["pad_token_id"], config["bos_token_id"], config["eos_token_id"]) == (1, 0, 2)
    assert hf.read_config(tmp_path) == {
        "family": "roberta",
        **{k: fields[k] for k in roberta.HF_FIELDS},
    }

    auto, lacking = EXPORTS[head]
    theirs, info = auto.from_pretrained(
        tmp_path, output_loading_info=True, attn_implementation="eager"
    )
    assert type(theirs).__name__ == architecture
    assert set(info["missing_keys"]) == lacking
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    ours = _forward(_build(TINY, head, params), batch["input_ids"], batch["attention_mask"])
    out = torch_outputs(theirs.eval(), batch)
    mask = batch["attention_mask"]
    if head == "embedding":
        last, weights = out.last_hidden_state.numpy(), mask[..., None]
        diff = _max_diff(ours, (last * weights).sum(1) / weights.sum(1))
    else:
        diff = _max_diff(ours, out.logits.numpy(), mask if head == "mlm" else None)
    assert diff < ATOL, f"{head} outputs after export: max abs diff {diff}"


def test_export_keeps_the_models_pad_id_over_the_tokenizers(tmp_path):
    """A tokenizer padding with another id (a trained WordPiece's [PAD] = 0) does not change
    the pad_token_id the export's positions count from: HF computes what we computed."""
    vocab = {"[PAD]": 0, "[UNK]": 1, **{f"w{i}": i for i in range(2, TINY.vocab_size)}}
    model = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok = transformers.PreTrainedTokenizerFast(
        tokenizer_object=model, pad_token="[PAD]", unk_token="[UNK]"
    )
    params = _random_params(TINY, "mlm", seed=6)
    hf.export(
        params, dataclasses.asdict(TINY), tok, tmp_path, "RobertaForMaskedLM", None, "roberta"
    )
    assert json.loads((tmp_path / "config.json").read_text())["pad_token_id"] == PAD
    batch = _rows([11, 6, 3], 12, TINY.vocab_size, pad=tok.pad_token_id, seed=3)
    theirs = transformers.AutoModelForMaskedLM.from_pretrained(tmp_path).eval()
    ours = _forward(_build(TINY, "mlm", params), batch["input_ids"], batch["attention_mask"])
    diff = _max_diff(ours, torch_outputs(theirs, batch).logits.numpy(), batch["attention_mask"])
    assert diff < ATOL, f"MLM logits after export: max abs diff {diff}"


@pytest.mark.parametrize(
    "head, num_labels", [("classification", 3), ("classification", 1), ("embedding", 3)]
)  # classification, regression, and the contrastive task's mean-pooled embedding
def test_packed_rows_compute_what_one_example_a_row_computes(head, num_labels):
    width, lengths = 24, [7, 12, 5, 20, 9]
    one = _rows(lengths, width, TINY.vocab_size, seed=2)
    examples = [one["input_ids"][i, :n] for i, n in enumerate(lengths)]
    cfg = dataclasses.replace(TINY, num_labels=num_labels)
    model = _build(cfg, head, _random_params(cfg, head, seed=4))
    want = np.asarray(model(one["input_ids"], one["attention_mask"]))
    inputs, packed, slot = packed_rows(examples, [[0, 1, 2], [3], [4]], width, PAD)
    got = np.asarray(model(*inputs, **packed))
    assert got.shape[:2] == slot.shape
    diff = _max_diff(got[slot >= 0], want[slot[slot >= 0]])
    assert diff < ATOL, f"{head} packed rows: max abs diff {diff}"


def test_checkpoint_into_another_head_starts_only_that_head_fresh(saved):
    """An MLM checkpoint's lm_head is left out of a classifier, which starts fresh; a bare
    RobertaModel's pooler is left out of an MLM model, whose head starts fresh."""
    fresh = _load(saved["mlm"][1], "classification")[2]
    assert sorted(fresh) == [
        f"classifier/{m}/{p}" for m in ("dense", "out_proj") for p in ("bias", "kernel")
    ]
    fresh = _load(saved["bare"][1], "mlm")[2]
    head = ["bias", "dense/bias", "dense/kernel", "layer_norm/bias", "layer_norm/scale"]
    assert sorted(fresh) == [f"lm_head/{p}" for p in head]


def test_config_json(saved, tmp_path):
    """model_type picks the family; a decoder is refused; transformers' defaults fill gaps."""
    _, folder = saved["mlm"]
    config = json.loads((folder / "config.json").read_text())
    assert models.of_hf_config(config, folder) is roberta
    (tmp_path / "config.json").write_text(json.dumps({**config, "is_decoder": True}))
    with pytest.raises(DataError, match="with is_decoder=False only"):
        hf.read_config(tmp_path)
    sparse = {k: v for k, v in config.items() if k not in ("type_vocab_size", "pad_token_id")}
    (tmp_path / "config.json").write_text(json.dumps(sparse))
    fields = hf.read_config(tmp_path)
    assert (fields["type_vocab_size"], fields["pad_token_id"]) == (2, 1)


def test_user_errors_and_every_parameter_has_logical_names(batch):
    with pytest.raises(ConfigError, match="no next-sentence head"):
        roberta.build_model(dataclasses.replace(TINY, next_sentence=True), "mlm", 0)
    # Rows of 12 tokens need positions up to 12 + PAD: a shorter table would read NaNs.
    short = dataclasses.replace(TINY, max_position_embeddings=13)
    model = _build(short, "mlm", _random_params(short, "mlm", seed=0))
    with pytest.raises(ConfigError, match="need max_position_embeddings >= 14 \\(it is 13\\)"):
        model(batch["input_ids"], batch["attention_mask"])
    for head in roberta.HEADS:
        state = nnx.state(_abstract(TINY, head))
        with nnx.logical_axis_rules(()):
            names = nnx.to_pure_dict(nnx.get_partition_spec(state))
        shapes = nnx.to_pure_dict(state)
        for path, spec in nnx.traversals.flatten_mapping(names).items():
            shape = nnx.traversals.flatten_mapping(shapes)[path].shape
            assert len(tuple(spec)) == len(shape), (head, path, spec)


def test_classifier_dropout_follows_rngs(batch):
    cfg = dataclasses.replace(
        TINY, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.3
    )
    model = _build(cfg, "classification", _random_params(cfg, "classification", seed=5))
    args = (batch["input_ids"], batch["attention_mask"])
    plain = np.asarray(model(*args))
    dropped = np.asarray(model(*args, rngs=nnx.Rngs(dropout=0)))
    assert np.abs(dropped - plain).max() > 1e-3
    np.testing.assert_array_equal(np.asarray(model(*args, rngs=nnx.Rngs(dropout=0))), dropped)
