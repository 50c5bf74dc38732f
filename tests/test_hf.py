"""Hugging Face checkpoints in and out through ``ptft_jax.hf``.

Tiny HF models get every tensor randomised (LayerNorm and biases included) so that no misplaced
tensor can go unnoticed, are saved with ``save_pretrained`` and read back by the product code;
our model then has to compute what HF computes. The real MiniLM weights are checked on real
sentences, ``hf.export`` has to write back HF's own file bit for bit, and the error paths have to
stop with a ``DataError`` saying what to do.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import huggingface_hub
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from safetensors.numpy import load_file

from ptft_jax import hf
from ptft_jax.data.builtin import DataError
from ptft_jax.data.sources import load_records
from ptft_jax.models.bert import BertConfig as ModelConfig
from ptft_jax.models.bert import build_model

ATOL = 1e-5
ATOL_REAL = 1e-4
NUM_LABELS = 3
TINY = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=64,
    type_vocab_size=2,
)
ARCHS = {
    "mlm": (transformers.BertForMaskedLM, transformers.AutoModelForMaskedLM),
    "classification": (
        transformers.BertForSequenceClassification,
        transformers.AutoModelForSequenceClassification,
    ),
}
VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "a", "film", "is", "good", "bad"]


def _hf_config(**overrides) -> transformers.BertConfig:
    return transformers.BertConfig(**TINY, attn_implementation="eager", **overrides)


def _randomise(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Every parameter ~ normal(0, 0.5); float32, eval mode."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, 0.5)
    return module.float().eval()


def _hf_model(task: str, seed: int) -> transformers.PreTrainedModel:
    cls = ARCHS[task][0]
    cfg = _hf_config(num_labels=NUM_LABELS) if task == "classification" else _hf_config()
    return _randomise(cls(cfg), seed)


def _abstract(cfg: ModelConfig, task: str) -> nnx.Module:
    return nnx.eval_shape(lambda: build_model(cfg, task, 0))


def _fresh(cfg: ModelConfig, task: str) -> dict:
    """Our parameter tree with ShapeDtypeStruct leaves (no initialisation cost)."""
    return nnx.to_pure_dict(nnx.state(_abstract(cfg, task)))


def _build(cfg: ModelConfig, task: str, params: dict) -> nnx.Module:
    """Our model holding ``params``; leaves still abstract (fresh heads) become zeros."""

    def fill(x):
        if isinstance(x, jax.ShapeDtypeStruct):
            return jnp.zeros(x.shape, x.dtype)
        return jnp.asarray(x)

    graphdef, state = nnx.split(_abstract(cfg, task))
    nnx.replace_by_pure_dict(state, jax.tree.map(fill, params))
    return nnx.merge(graphdef, state)


def _load(folder, task: str, **overrides) -> tuple[ModelConfig, dict, list[str]]:
    """What the product does: config.json -> ModelConfig, tensors -> our parameter tree."""
    cfg = ModelConfig(**hf.read_config(folder), **overrides)
    params, fresh_paths = hf.load_params(hf.read_tensors(folder), _fresh(cfg, task))
    return cfg, params, fresh_paths


@nnx.jit(static_argnames=("return_all_hidden",))
def _bert_forward(bert, ids, mask, types, return_all_hidden=False, positions=None):
    return bert(ids, mask, types, return_all_hidden=return_all_hidden, positions_BxQ=positions)


@nnx.jit
def _task_forward(model, ids, mask, types):
    """MLM logits at every position, or classification logits."""
    return model(ids, mask, types)


@nnx.jit
def _mlm_gather(model, ids, mask, types, positions):
    return model(ids, mask, types, masked_positions_BxK=positions)


def _arrays(batch) -> tuple[jax.Array, ...]:
    return tuple(jnp.asarray(batch[k]) for k in ("input_ids", "attention_mask", "token_type_ids"))


def _torch_inputs(batch) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.asarray(v)).long() for k, v in batch.items()}


def _max_diff(ours, theirs, mask=None) -> float:
    """Largest |ours - theirs|, over positions where ``mask`` is 1 when given."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    assert ours.shape == theirs.shape
    if mask is not None:
        ours, theirs = ours[mask.astype(bool)], theirs[mask.astype(bool)]
    return float(np.max(np.abs(ours - theirs)))


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


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, tuple[transformers.PreTrainedModel, object]]:
    """``{task: (randomised HF model, the folder it was saved to)}``."""
    out = {}
    for seed, task in enumerate(ARCHS):
        model = _hf_model(task, seed)
        folder = tmp_path_factory.mktemp(f"hf_{task}")
        model.save_pretrained(folder)
        out[task] = (model, folder)
    return out


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory) -> transformers.BertTokenizerFast:
    vocab = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    return transformers.BertTokenizerFast(vocab_file=str(vocab))


# --- a. random tiny checkpoints read by the product code ---------------------------------------


def test_random_weights_are_not_trivial(saved):
    """LayerNorm scales and head biases really are randomised (so a mix-up cannot pass)."""
    for model, _ in saved.values():
        sd = model.state_dict()
        assert not torch.allclose(sd["bert.embeddings.LayerNorm.weight"], torch.ones(32))
    assert saved["mlm"][0].state_dict()["cls.predictions.bias"].abs().max() > 0.1
    assert saved["classification"][0].state_dict()["classifier.bias"].abs().max() > 0.1


@pytest.mark.parametrize("task", list(ARCHS))
def test_loaded_checkpoint_matches_hf(saved, batch, task):
    hf_model, folder = saved[task]
    cfg, params, fresh_paths = _load(folder, task, num_labels=NUM_LABELS)
    assert fresh_paths == []
    assert cfg == ModelConfig(
        **TINY,
        hidden_dropout_prob=0.1,
        attention_probs_dropout_prob=0.1,
        layer_norm_eps=1e-12,
        num_labels=NUM_LABELS,
    )
    model = _build(cfg, task, params)
    with torch.no_grad():
        expected = hf_model(**_torch_inputs(batch), output_hidden_states=True)
    mask = batch["attention_mask"]

    logits = _task_forward(model, *_arrays(batch))
    assert logits.dtype == jnp.float32
    if task == "mlm":
        diff = _max_diff(logits, expected.logits.numpy(), mask)
    else:
        assert logits.shape == (3, NUM_LABELS)
        diff = _max_diff(logits, expected.logits.numpy())
    assert diff < ATOL, f"{task} logits: max abs diff {diff}"

    out = _bert_forward(model.bert, *_arrays(batch), return_all_hidden=True)
    ours = out["hidden_states"]
    assert len(ours) == len(expected.hidden_states) == TINY["num_hidden_layers"] + 1
    for i, (o, t) in enumerate(zip(ours, expected.hidden_states, strict=True)):
        diff = _max_diff(o, t.numpy(), mask)
        assert diff < ATOL, f"{task} hidden state {i}: max abs diff {diff}"
    diff = _max_diff(out["last_hidden_state"], expected.hidden_states[-1].numpy(), mask)
    assert diff < ATOL, f"{task} last_hidden_state: max abs diff {diff}"
    if task == "classification":  # the pooler feeds the classifier; check it on its own too
        with torch.no_grad():
            pooled = hf_model.bert(**_torch_inputs(batch)).pooler_output.numpy()
        diff = _max_diff(out["pooler_output"], pooled)
        assert diff < ATOL, f"pooler_output: max abs diff {diff}"
        # The classifier's path computes only position 0 in the last layer: same pooled output.
        zeros = jnp.zeros((len(batch["input_ids"]), 1), jnp.int32)
        first = _bert_forward(model.bert, *_arrays(batch), positions=zeros)
        assert first["last_hidden_state"].shape[1] == 1
        diff = _max_diff(first["pooler_output"], pooled)
        assert diff < ATOL, f"first-token-only pooler_output: max abs diff {diff}"


def test_mlm_logits_at_masked_positions_are_gathered_rows(saved, batch):
    """``masked_positions_BxK`` gathers rows of the all-position logits, which are HF's."""
    hf_model, folder = saved["mlm"]
    cfg, params, _ = _load(folder, "mlm")
    model = _build(cfg, "mlm", params)
    positions = np.array([[0, 4, 9, 2], [6, 1, 1, 0], [2, 0, 1, 0]], np.int32)
    gathered = np.asarray(_mlm_gather(model, *_arrays(batch), jnp.asarray(positions)))
    assert gathered.shape == (3, positions.shape[1], TINY["vocab_size"])
    full = np.asarray(_task_forward(model, *_arrays(batch)))
    rows = np.take_along_axis(full, positions[..., None], axis=1)
    diff = _max_diff(gathered, rows)
    assert diff < ATOL, f"gathered vs full logits: max abs diff {diff}"
    with torch.no_grad():
        expected = hf_model(**_torch_inputs(batch)).logits.numpy()
    hf_rows = np.take_along_axis(expected, positions[..., None], axis=1)  # all non-padded
    diff = _max_diff(gathered, hf_rows)
    assert diff < ATOL, f"gathered vs HF logits: max abs diff {diff}"


def test_bare_bert_model_leaves_only_the_mlm_head_fresh(tmp_path):
    """A ``BertModel`` checkpoint (with pooler, no head) fills the encoder; ``cls/...`` stay."""
    bare = _randomise(transformers.BertModel(_hf_config(), add_pooling_layer=True), seed=5)
    bare.save_pretrained(tmp_path)
    assert not any(k.startswith("bert.") for k in load_file(str(tmp_path / "model.safetensors")))
    cfg = ModelConfig(**hf.read_config(tmp_path))
    rng = np.random.default_rng(0)  # a concrete fresh head, to see it come back untouched
    fresh = jax.tree.map(lambda x: rng.normal(size=x.shape).astype(x.dtype), _fresh(cfg, "mlm"))
    params, fresh_paths = hf.load_params(hf.read_tensors(tmp_path), fresh)

    cls_paths = [
        "/".join(map(str, p)) for p in nnx.traversals.flatten_mapping(fresh) if p[0] == "cls"
    ]
    assert cls_paths and sorted(fresh_paths) == sorted(cls_paths)
    flat_out = nnx.traversals.flatten_mapping(params)
    for path, value in nnx.traversals.flatten_mapping(fresh).items():
        if path[0] == "cls":
            assert np.array_equal(flat_out[path], value), path
    sd = bare.state_dict()
    np.testing.assert_array_equal(
        params["bert"]["embeddings"]["word_embeddings"]["embedding"],
        sd["embeddings.word_embeddings.weight"].numpy(),
    )
    np.testing.assert_array_equal(
        params["bert"]["encoder"]["layer"][1]["output"]["dense"]["kernel"],
        sd["encoder.layer.1.output.dense.weight"].numpy().T,
    )


# --- b. the real pretrained MiniLM on real sentences --------------------------------------------


def test_builtin_minilm_matches_hf_on_real_sentences():
    folder = hf.resolve("builtin:minilm_l6")
    records = load_records("builtin:mr")["test"]
    by_length = sorted(records[:360], key=lambda r: len(r["text"]))
    texts = [r["text"] for r in by_length[::10]]  # 36 sentences, shortest to longest
    tok = transformers.BertTokenizerFast.from_pretrained(folder)
    enc = tok(texts, padding=True, truncation=True, max_length=128, return_tensors="np")
    lengths = enc["attention_mask"].sum(1)
    assert len(texts) == 36 and lengths.min() < lengths.max() / 3

    cfg, params, fresh_paths = _load(folder, "mlm", add_pooling_layer=True)
    assert fresh_paths and all(p.startswith("cls/") for p in fresh_paths)
    model = _build(cfg, "mlm", params)
    batch = {k: enc[k].astype(np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}
    out = _bert_forward(model.bert, *_arrays(batch))

    theirs = transformers.BertModel.from_pretrained(folder, attn_implementation="eager").eval()
    with torch.no_grad():
        expected = theirs(**_torch_inputs(batch))
    diff = _max_diff(
        out["last_hidden_state"], expected.last_hidden_state.numpy(), batch["attention_mask"]
    )
    assert diff < ATOL_REAL, f"last_hidden_state: max abs diff {diff}"
    diff = _max_diff(out["pooler_output"], expected.pooler_output.numpy())
    assert diff < ATOL_REAL, f"pooler_output: max abs diff {diff}"


# --- c. round trip: HF -> ours -> hf.export -> HF -----------------------------------------------


@pytest.mark.parametrize("task", list(ARCHS))
def test_export_round_trip(saved, batch, tokenizer, tmp_path, task):
    hf_model, folder = saved[task]
    cfg, params, _ = _load(folder, task, num_labels=NUM_LABELS)
    model = _build(cfg, task, params)
    ours = nnx.to_pure_dict(nnx.state(model))  # what training would hand to export
    architecture = ARCHS[task][0].__name__
    id2label = {0: "a", 1: "b", 2: "c"} if task == "classification" else None
    out_dir = tmp_path / "export"
    hf.export(ours, dataclasses.asdict(cfg), tokenizer, out_dir, architecture, id2label=id2label)

    original = load_file(str(folder / "model.safetensors"))
    exported = load_file(str(out_dir / "model.safetensors"))
    assert sorted(exported) == sorted(original)
    for name, value in original.items():
        assert exported[name].dtype == value.dtype, name
        assert np.array_equal(exported[name], value), name

    config = json.loads((out_dir / "config.json").read_text())
    assert config["architectures"] == [architecture]
    if task == "classification":
        assert config["id2label"] == {"0": "a", "1": "b", "2": "c"}
        assert config["label2id"] == {"a": 0, "b": 1, "c": 2}

    auto = ARCHS[task][1]
    loaded, info = auto.from_pretrained(
        out_dir, output_loading_info=True, attn_implementation="eager"
    )
    assert type(loaded) is ARCHS[task][0]
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):
        assert not info.get(kind), f"{kind}: {info.get(kind)}"
    if task == "classification":
        assert loaded.config.id2label == id2label
    loaded.eval()
    with torch.no_grad():
        want = hf_model(**_torch_inputs(batch)).logits.numpy()
        got = loaded(**_torch_inputs(batch)).logits.numpy()
    diff = _max_diff(got, want)
    assert diff <= 1e-6, f"{task} logits after export: max abs diff {diff}"

    reloaded_tok = transformers.AutoTokenizer.from_pretrained(out_dir)
    assert reloaded_tok.get_vocab() == tokenizer.get_vocab()
    assert config["pad_token_id"] == tokenizer.pad_token_id == 0


# --- d. errors -----------------------------------------------------------------------------------


def test_pytorch_bin_needs_opt_in(saved, tmp_path):
    hf_model, _ = saved["mlm"]
    state = hf_model.state_dict()
    torch.save(state, tmp_path / "pytorch_model.bin")
    with pytest.raises(DataError, match="safetensors"):
        hf.read_tensors(tmp_path)
    tensors = hf.read_tensors(tmp_path, allow_pytorch_bin=True)
    assert sorted(tensors) == sorted(state)
    for name, value in state.items():
        assert tensors[name].dtype == np.float32, name
        assert np.array_equal(tensors[name], value.numpy()), name


def test_resolve_missing_folder():
    with pytest.raises(DataError, match="does not exist"):
        hf.resolve("hf:/no/such/dir")


def test_resolve_hub_id_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads the variable once, at import; make it take effect here too.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DataError, match="init_from=hf:/path"):
        hf.resolve("hf:some-org/some-model")


def test_mlm_checkpoint_into_classifier_starts_pooler_and_head_fresh(saved):
    """MLM checkpoints have no pooler: fine-tuning from one starts pooler and classifier fresh."""
    _, folder = saved["mlm"]
    _, _, fresh_paths = _load(folder, "classification", num_labels=NUM_LABELS)
    assert sorted(fresh_paths) == [
        "bert/pooler/dense/bias",
        "bert/pooler/dense/kernel",
        "classifier/bias",
        "classifier/kernel",
    ]


def test_classifier_with_another_label_count_starts_fresh(saved):
    _, folder = saved["classification"]
    _, _, fresh_paths = _load(folder, "classification", num_labels=NUM_LABELS + 2)
    assert sorted(fresh_paths) == ["classifier/bias", "classifier/kernel"]


@nnx.jit
def _pretraining(model, ids, mask, types, positions=None):
    return model.pretraining(ids, mask, types, positions)


def test_next_sentence_prediction_matches_bert_for_pretraining(batch, tmp_path):
    """HF's BertForPreTraining (random weights) read by the product code gives the same MLM and
    next-sentence logits; our export of it is again a BertForPreTraining with the same logits."""
    hf_model = _randomise(transformers.BertForPreTraining(_hf_config()), 7)
    hf_model.save_pretrained(tmp_path / "in")
    cfg = ModelConfig(**hf.read_config(tmp_path / "in"), next_sentence=True, add_pooling_layer=True)
    params, fresh = hf.load_params(hf.read_tensors(tmp_path / "in"), _fresh(cfg, "mlm"))
    assert fresh == []
    assert {"predictions", "seq_relationship"} <= set(params["cls"])
    model = _build(cfg, "mlm", params)
    mlm, nsp = _pretraining(model, *_arrays(batch))
    with torch.no_grad():
        expected = hf_model(**_torch_inputs(batch))
    assert nsp.shape == (3, 2) and nsp.dtype == jnp.float32
    diff = _max_diff(nsp, expected.seq_relationship_logits.numpy())
    assert diff < ATOL, f"next-sentence logits: max abs diff {diff}"
    diff = _max_diff(mlm, expected.prediction_logits.numpy(), batch["attention_mask"])
    assert diff < ATOL, f"MLM logits: max abs diff {diff}"
    # At masked positions the last layer computes position 0 (for the pooler) and those rows.
    positions = np.array([[4, 9, 2], [6, 1, 1], [2, 0, 1]], np.int32)
    mlm_at, nsp_at = _pretraining(model, *_arrays(batch), jnp.asarray(positions))
    rows = np.take_along_axis(expected.prediction_logits.numpy(), positions[..., None], axis=1)
    assert mlm_at.shape == rows.shape
    diff = _max_diff(mlm_at, rows)
    assert diff < ATOL, f"MLM logits at masked positions: max abs diff {diff}"
    diff = _max_diff(nsp_at, expected.seq_relationship_logits.numpy())
    assert diff < ATOL, f"next-sentence logits with masked positions: max abs diff {diff}"

    host = jax.tree.map(np.asarray, params)
    hf.export(
        host, dataclasses.asdict(cfg), _VocabTokenizer(), tmp_path / "out", "BertForPreTraining"
    )
    again = transformers.AutoModelForPreTraining.from_pretrained(tmp_path / "out").eval()
    assert type(again).__name__ == "BertForPreTraining"
    with torch.no_grad():
        out = again(**_torch_inputs(batch))
    diff = _max_diff(out.seq_relationship_logits.numpy(), expected.seq_relationship_logits.numpy())
    assert diff < ATOL, f"exported next-sentence logits: max abs diff {diff}"


class _VocabTokenizer:
    """Just what ``hf.export`` asks of a tokenizer."""

    pad_token_id = 0

    def save_pretrained(self, folder):
        pathlib.Path(folder, "vocab.txt").write_text("\n".join(VOCAB) + "\n")
