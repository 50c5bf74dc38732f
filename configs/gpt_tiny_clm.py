"""A tiny GPT-2 on a slice of builtin:wiki_en, causal LM: the CI-sized run (CPU, about a
minute); a byte-level BPE is trained on the data.

python -m ptft_jax.train --config configs/gpt_tiny_clm.py --workdir runs/gpt_tiny
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()
    c.task = "causal_lm"
    c.model.update(
        family="gpt2",
        vocab_size=4096,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=512,
        max_position_embeddings=256,
        layer_norm_eps=1e-5,
    )
    c.data.source = "builtin:wiki_en"
    c.data.max_documents = 1500
    c.data.max_seq_length = 128
    c.data.eval_fraction = 0.05
    c.train.steps = 50
    c.train.batch_size = 16
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 5
    c.train.weight_decay = 0.1
    c.train.adam_b2 = 0.95
    c.train.log_every = 10
    c.train.eval_every = 25
    c.train.eval_batches = 4
    c.train.checkpoint_every = 25
    return c
