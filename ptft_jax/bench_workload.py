"""What the benchmark runs, the same for every system: the model sizes, the optimizer
settings, the random batch with its labelled positions, the FLOPs formula (see bench.py's
module doc) and the memory reading. Standard library only at import: each system's worker
imports it before its own framework."""

from __future__ import annotations

# layers, hidden, heads, intermediate
MODELS = {
    "bert-tiny": (2, 128, 2, 512),
    "bert-mini": (4, 256, 4, 1024),
    "bert-small": (4, 512, 8, 2048),
    "bert-base": (12, 768, 12, 3072),
    "bert-large": (24, 1024, 16, 4096),
}
VOCAB = 30522
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


def masked_per_row(seq: int) -> int:
    return max(1, round(MASK_RATE * seq))


def model_fields(model: str, seq: int, attention_dropout: float) -> dict:
    """The model's shape in the field names both ModelConfig and HF's BertConfig use."""
    layers, hidden, heads, inter = MODELS[model]
    return {
        "vocab_size": VOCAB,
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "intermediate_size": inter,
        "max_position_embeddings": max(512, seq),
        "attention_probs_dropout_prob": attention_dropout,
    }


def model_flops(model: str, batch: int, seq: int, head_rows: int, last_rows: int) -> float:
    """Training FLOPs of one step (see the module doc): ``head_rows`` rows of the MLM head,
    ``last_rows`` rows of the last layer's queries, attention output and MLP."""
    layers, hidden, _, inter = MODELS[model]
    layer = 4 * hidden * hidden + 2 * hidden * inter
    tokens = batch * seq
    lower = tokens * (layers - 1) * (6 * layer + 12 * hidden * seq)
    keys_values = tokens * 6 * 2 * hidden * hidden
    queries = last_rows * (6 * (layer - 2 * hidden * hidden) + 12 * hidden * seq)
    return lower + keys_values + queries + 6 * (hidden * hidden + hidden * VOCAB) * head_rows


def random_batch(batch: int, seq: int, seed: int = 0) -> dict:
    """Token ids, and ``masked_per_row(seq)`` distinct labelled positions per row (numpy)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    k = masked_per_row(seq)
    ids = rng.integers(5, VOCAB, (batch, seq), dtype=np.int32)
    positions = np.sort(np.argsort(rng.random((batch, seq - 2)), axis=1)[:, :k] + 1, axis=1)
    return {
        "input_ids": ids,
        "masked_positions": positions.astype(np.int32),
        "masked_ids": rng.integers(5, VOCAB, (batch, k), dtype=np.int32),
    }


def peak_rss() -> int:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
