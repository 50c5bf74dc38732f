"""What the benchmark runs, the same for every system: the model sizes, the optimizer
settings, the random batch with its labelled positions, the FLOPs formula (see bench.py's
module doc) and the memory reading. Standard library only at import: each system's worker
imports it before its own framework."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class BenchModel:
    """A benchmark model's family (``model.family``: ``"bert"`` and ``"modernbert"`` train
    MLM, ``"gpt2"`` causal LM) and shape."""

    family: str
    layers: int
    hidden: int
    heads: int
    intermediate: int
    vocab: int
    positions: int  # at least; a longer --seq gets as many as it needs


BERT_VOCAB = 30522
MODELS = {
    "bert-tiny": BenchModel("bert", 2, 128, 2, 512, BERT_VOCAB, 512),
    "bert-mini": BenchModel("bert", 4, 256, 4, 1024, BERT_VOCAB, 512),
    "bert-small": BenchModel("bert", 4, 512, 8, 2048, BERT_VOCAB, 512),
    "bert-base": BenchModel("bert", 12, 768, 12, 3072, BERT_VOCAB, 512),
    "bert-large": BenchModel("bert", 24, 1024, 16, 4096, BERT_VOCAB, 512),
    # A GPT-2 shape at BERT-tiny and BERT-mini size, with a vocabulary a small byte-level BPE
    # would have, so that the 50k-way head does not swamp a CPU run.
    "gpt-tiny": BenchModel("gpt2", 2, 128, 2, 512, 8192, 512),
    "gpt-mini": BenchModel("gpt2", 4, 256, 4, 1024, 8192, 512),
    "gpt2-small": BenchModel("gpt2", 12, 768, 12, 3072, 50257, 1024),  # GPT-2 124M
    # ModernBERT-base's shape (GeGLU halves of 1,152; 128-token local windows, every third
    # layer global), and one at BERT-mini size with a small BPE's vocabulary for CPUs.
    "modernbert-mini": BenchModel("modernbert", 4, 256, 4, 384, 8192, 8192),
    "modernbert-base": BenchModel("modernbert", 22, 768, 12, 1152, 50368, 8192),
}
LOCAL_WINDOW = 128  # ModernBERT's local_attention: 64 tokens each side
MASK_RATE = 0.15
# Both systems' AdamW: BERT's settings, global-norm clipping at 1.
TRAIN = {
    "learning_rate": 1e-4,
    "warmup_steps": 10,
    "weight_decay": 0.01,
    "max_grad_norm": 1.0,
    "adam_b1": 0.9,
    "adam_b2": 0.999,
    "adam_eps": 1e-6,
}
FLOPS_FORMULAS = {
    "bert": (
        "tokens x (6 x lower layers' matmul params + 12 x (layers-1) x hidden x seq) "
        "+ tokens x 12 hidden^2 (last layer's keys, values) "
        "+ R x (12 hidden^2 + 12 hidden x intermediate + 12 x hidden x seq) "
        "+ P x 6 x (hidden^2 + hidden x vocab); R, P: rows of the last layer's queries and "
        "of the MLM head (ptft_jax: masked positions; transformers: all positions; "
        "mfu_common: masked positions for both)"
    ),
    "gpt2": (
        "tokens x (6 x (layers x (4 hidden^2 + 2 hidden x intermediate) + hidden x vocab) "
        "+ 12 x layers x hidden x seq); both systems compute every position "
        "(mfu_common = mfu)"
    ),
    "modernbert": (
        "BERT's, with a layer's matmul params 4 hidden^2 + 3 hidden x intermediate (GeGLU) "
        "and its attention width seq in global layers, min(seq, 129) in local ones; "
        "transformers' sparse_prediction runs its MLM head at the masked positions too "
        "(P: masked positions for both; R: ptft_jax masked positions, transformers all)"
    ),
}


def masked_per_row(seq: int) -> int:
    return max(1, round(MASK_RATE * seq))


def loss_rows(model: str, batch: int, seq: int) -> int:
    """The positions the loss needs: the labelled ones for MLM, every one for causal LM."""
    return batch * (seq if MODELS[model].family == "gpt2" else masked_per_row(seq))


def model_fields(model: str, seq: int, attention_dropout: float) -> dict:
    """The model's shape and dropout in its ptft_jax config's field names (BertConfig's: HF's
    BertConfig reads them too; ModernBERT's: its recipe's, no dropout but the attention's)."""
    m = MODELS[model]
    shape = {
        "vocab_size": m.vocab,
        "hidden_size": m.hidden,
        "num_hidden_layers": m.layers,
        "num_attention_heads": m.heads,
        "intermediate_size": m.intermediate,
        "max_position_embeddings": max(m.positions, seq),
    }
    if m.family == "modernbert":
        return {**shape, "attention_dropout": attention_dropout, "layer_norm_eps": 1e-5}
    return {**shape, "hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": attention_dropout}


def model_flops(model: str, batch: int, seq: int, head_rows: int, last_rows: int) -> float:
    """Training FLOPs of one step (see bench.py's module doc): ``head_rows`` rows of the LM
    head, ``last_rows`` rows of the last layer's queries, attention output and MLP. With
    ``head_rows = last_rows = batch x seq`` this is the textbook 6 x matmul parameters +
    12 x layers x hidden x seq per token."""
    m = MODELS[model]
    hidden = m.hidden
    mlp = (3 if m.family == "modernbert" else 2) * hidden * m.intermediate  # GeGLU: 3
    layer = 4 * hidden * hidden + mlp
    # The MLM heads transform their rows (a hidden^2 dense) before the tied decoder; GPT-2's
    # goes straight to the tied decoder.
    head = hidden * m.vocab + (0 if m.family == "gpt2" else hidden * hidden)
    tokens = batch * seq
    widths = [seq] * m.layers  # the keys each query attends to, layer by layer
    if m.family == "modernbert":  # every third layer global, from the first
        widths = [seq if i % 3 == 0 else min(seq, LOCAL_WINDOW + 1) for i in range(m.layers)]
    lower = tokens * sum(6 * layer + 12 * hidden * w for w in widths[:-1])
    keys_values = tokens * 6 * 2 * hidden * hidden
    queries = last_rows * (6 * (layer - 2 * hidden * hidden) + 12 * hidden * widths[-1])
    return lower + keys_values + queries + 6 * head * head_rows


def random_batch(model: str, batch: int, seq: int, seed: int = 0) -> dict:
    """The same random rows for every system (numpy). MLM: token ids, and
    ``masked_per_row(seq)`` distinct labelled positions per row with their labels. Causal LM:
    ``input_ids`` and ``labels``, the ids shifted by one (each position's next token)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    vocab = MODELS[model].vocab
    if MODELS[model].family == "gpt2":
        ids = rng.integers(0, vocab, (batch, seq + 1), dtype=np.int32)
        return {"input_ids": ids[:, :-1], "labels": ids[:, 1:]}
    k = masked_per_row(seq)
    ids = rng.integers(5, vocab, (batch, seq), dtype=np.int32)
    positions = np.sort(np.argsort(rng.random((batch, seq - 2)), axis=1)[:, :k] + 1, axis=1)
    return {
        "input_ids": ids,
        "masked_positions": positions.astype(np.int32),
        "masked_ids": rng.integers(5, vocab, (batch, k), dtype=np.int32),
    }


def peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
