"""BERT-mini MLM on builtin:wiki_en (the quickstart before configs/quickstart.py's modern
recipe): about 10 minutes on a 2-core CPU, MLM accuracy rising slowly.

python -m ptft_jax.train --config configs/bert_mini_quickstart.py --workdir runs/bert_mini
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()
    c.model.update(
        vocab_size=16384,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=512,
    )
    c.data.source = "builtin:wiki_en"
    c.data.max_seq_length = 128
    c.train.steps = 360
    c.train.batch_size = 32
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 40
    c.train.log_every = 20
    c.train.eval_every = 120
    c.train.eval_batches = 8
    c.train.checkpoint_every = 120
    return c
