"""A small ModernBERT (4 layers, hidden 128: pre-LN, RoPE, GeGLU, no biases, no dropout)
pretrained with MLM on builtin:wiki_en with the recipe that suits one small device
("Cramming": loss only at the masked positions, a high peak learning rate, many small steps,
a small byte-level BPE): about 10 minutes on a 2-core CPU.

python -m ptft_jax.train --config configs/quickstart.py --workdir runs/quickstart
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()
    c.model.update(
        family="modernbert",
        vocab_size=4096,
        hidden_size=128,
        num_hidden_layers=4,  # global, local, local, global
        num_attention_heads=2,
        intermediate_size=256,  # each half of the GeGLU
        max_position_embeddings=512,
        layer_norm_eps=1e-5,
    )
    c.data.source = "builtin:wiki_en"
    c.data.max_seq_length = 128
    c.train.steps = 1500
    c.train.batch_size = 32
    c.train.learning_rate = 3e-3
    c.train.warmup_steps = 50
    c.train.weight_decay = 0.01
    c.train.adam_b2 = 0.98
    c.train.log_every = 50
    c.train.eval_every = 150
    c.train.eval_batches = 8
    c.train.checkpoint_every = 500
    return c
