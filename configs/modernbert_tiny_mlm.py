"""A tiny ModernBERT (pre-LN, RoPE, GeGLU, global and 64-token local attention, no biases, no
dropout) pretrained with MLM on a slice of builtin:wiki_en, masking 30% of the tokens as the
ModernBERT recipe does: the CI-sized run (50 steps, CPU, about a minute).

python -m ptft_jax.train --config configs/modernbert_tiny_mlm.py --workdir runs/modernbert_tiny
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()
    c.model.update(
        family="modernbert",
        vocab_size=8192,
        hidden_size=128,
        num_hidden_layers=4,  # global, local, local, global (every third layer global)
        num_attention_heads=2,
        intermediate_size=256,  # each half of the GeGLU
        max_position_embeddings=512,
        local_attention=64,  # 32 tokens each side
        layer_norm_eps=1e-5,
    )
    c.data.source = "builtin:wiki_en"
    c.data.max_documents = 1500
    c.data.max_seq_length = 128
    c.data.eval_fraction = 0.05
    c.data.mlm_probability = 0.3
    c.data.max_predictions_per_seq = 40
    c.train.steps = 50
    c.train.batch_size = 32
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 5
    c.train.weight_decay = 1e-5
    c.train.adam_b2 = 0.98
    c.train.log_every = 10
    c.train.eval_every = 25
    c.train.eval_batches = 4
    c.train.checkpoint_every = 25
    return c
