"""A tiny RoBERTa (one token type, positions from the pad id) pretrained with MLM on a slice of
builtin:wiki_en: the CI-sized run (50 steps, CPU, under a minute).

python -m ptft_jax.train --config configs/roberta_tiny_mlm.py --workdir runs/roberta_tiny
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()
    c.model.update(
        family="roberta",
        vocab_size=8192,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=512,
        max_position_embeddings=514,  # 512 tokens after the pad id's positions
        type_vocab_size=1,
        layer_norm_eps=1e-5,
    )
    c.data.source = "builtin:wiki_en"
    c.data.max_documents = 1500
    c.data.max_seq_length = 128
    c.data.eval_fraction = 0.05
    c.train.steps = 50
    c.train.batch_size = 32
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 5
    c.train.adam_b2 = 0.98
    c.train.log_every = 10
    c.train.eval_every = 25
    c.train.eval_batches = 4
    c.train.checkpoint_every = 25
    return c
