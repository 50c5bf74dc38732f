"""Per-token heads (``models/token_heads.py``) against transformers, both ways, for BERT,
RoBERTa and ModernBERT: a HF ``*ForTokenClassification`` / ``*ForQuestionAnswering`` with every
tensor randomised, read by the product code, computes HF's logits; and our randomised model,
exported, loads in transformers as that class with no missing or unexpected tensor and the same
logits."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import transformers
from flax import nnx
from helpers import (
    built_model,
    fresh_tree,
    max_diff,
    random_like,
    special_rows,
    torch_outputs,
    word_level_tokenizer,
)

from ptft_jax import hf, models

ATOL = 3e-5  # relative to the values' scale past 1 (float32 round-off over every position)
LABELS = 5
SHAPE = dict(vocab_size=97, hidden_size=32, num_attention_heads=4, intermediate_size=37)
BERT_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BERT_ROLES = ("pad", "unk", "cls", "sep", "mask")
FAMILIES = {  # family -> (HF config, specials and their roles, [CLS]-like and [SEP]-like ids)
    "bert": (
        lambda n: transformers.BertConfig(
            **SHAPE, num_hidden_layers=2, max_position_embeddings=64, num_labels=n
        ),
        (BERT_SPECIALS, BERT_ROLES),
        (2, 3, 0),
    ),
    "roberta": (
        lambda n: transformers.RobertaConfig(
            **SHAPE, num_hidden_layers=2, max_position_embeddings=66, num_labels=n,
            pad_token_id=1, bos_token_id=0, eos_token_id=2,
        ),
        (["<s>", "<pad>", "</s>", "<unk>", "<mask>"], ("bos", "pad", "eos", "unk", "mask")),
        (0, 2, 1),
    ),
    "modernbert": (
        lambda n: transformers.ModernBertConfig(
            **SHAPE, num_hidden_layers=3, max_position_embeddings=64, local_attention=4,
            num_labels=n, pad_token_id=0, cls_token_id=2, sep_token_id=3, bos_token_id=2,
            eos_token_id=3, norm_eps=1e-5,
        ),
        (BERT_SPECIALS, BERT_ROLES),
        (2, 3, 0),
    ),
}  # fmt: skip
HEADS = {  # head -> (transformers Auto class, outputs)
    "token_classification": (transformers.AutoModelForTokenClassification, LABELS),
    "question_answering": (transformers.AutoModelForQuestionAnswering, 2),
}


def _hf_model(family: str, head: str) -> transformers.PreTrainedModel:
    """A HF model with every parameter ~ normal(0, 0.5); float32, eval mode."""
    auto, n = HEADS[head]
    config = FAMILIES[family][0](n)
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    model = auto.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    return model.float().eval()


def _ours(cfg, head: str, params: dict) -> np.ndarray:
    abstract = nnx.eval_shape(lambda: models.get(cfg.family).build_model(cfg, head, 0))
    return built_model(abstract, params)


def _rows(family: str) -> dict[str, np.ndarray]:
    first, last, pad = FAMILIES[family][2]
    return special_rows([9, 16, 5, 12], 16, first, last, pad, SHAPE["vocab_size"], seed=1)


def _logits(out, head: str) -> np.ndarray:
    """HF's outputs as ours: ``[B, L, C]``, or start and end stacked ``[B, L, 2]``."""
    if head == "token_classification":
        return out.logits.numpy()
    return np.stack([out.start_logits.numpy(), out.end_logits.numpy()], -1)


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_hf_checkpoint_loads_with_equal_logits(tmp_path, family, head):
    theirs = _hf_model(family, head)
    theirs.save_pretrained(tmp_path)
    fields = hf.read_config(tmp_path)
    cfg = models.get(family).CONFIG(**fields, num_labels=HEADS[head][1])
    assert models.get(family).head_of(type(theirs).__name__) == head
    abstract = nnx.eval_shape(lambda: models.get(family).build_model(cfg, head, 0))
    params, missing = hf.load_params(hf.read_tensors(tmp_path), fresh_tree(abstract), family)
    assert not missing
    batch = _rows(family)
    ours = _ours(cfg, head, params)(batch["input_ids"], batch["attention_mask"])
    want = _logits(torch_outputs(theirs, batch), head)
    diff = max_diff(ours, want, batch["attention_mask"], relative=True)
    assert diff < ATOL, f"{family} {head}: max diff {diff}"


@pytest.mark.parametrize("head", list(HEADS))
@pytest.mark.parametrize("family", list(FAMILIES))
def test_export_loads_in_transformers_with_equal_logits(tmp_path, family, head):
    fields = hf.read_config(_saved_config(tmp_path / "config", family, head))
    family_module = models.get(family)
    cfg = family_module.CONFIG(**fields, num_labels=HEADS[head][1])
    abstract = nnx.eval_shape(lambda: family_module.build_model(cfg, head, 0))
    params = random_like(fresh_tree(abstract), seed=3)
    specials, roles = FAMILIES[family][1]
    tokenizer = word_level_tokenizer(specials, roles)
    architecture = family_module.architecture(head, cfg)
    id2label = {i: f"T{i}" for i in range(LABELS)} if head == "token_classification" else None
    out = tmp_path / "export"
    hf.export(params, dataclasses.asdict(cfg), tokenizer, out, architecture, id2label, family)
    theirs, info = HEADS[head][0].from_pretrained(
        out, output_loading_info=True, attn_implementation="eager"
    )
    assert type(theirs).__name__ == architecture
    assert not any(info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys")), info
    if id2label is not None:
        assert theirs.config.id2label == id2label
    batch = _rows(family)
    ours = _ours(cfg, head, params)(batch["input_ids"], batch["attention_mask"])
    want = _logits(torch_outputs(theirs.eval(), batch), head)
    diff = max_diff(ours, want, batch["attention_mask"], relative=True)
    assert diff < ATOL, f"{family} {head} after export: max diff {diff}"


def _saved_config(folder, family: str, head: str):
    """A folder holding only a HF config.json of the family's tiny shape."""
    FAMILIES[family][0](HEADS[head][1]).save_pretrained(folder)
    return folder
