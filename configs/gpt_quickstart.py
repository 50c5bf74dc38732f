"""A GPT-mini (4 layers, hidden 256) learning next tokens on builtin:wiki_en: about 10 minutes
on a 2-core CPU, validation perplexity falling; a byte-level BPE (8,192 tokens) is trained on
the data first.

python -m ptft_jax.train --config configs/gpt_quickstart.py --workdir runs/gpt_quickstart
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()
    c.task = "causal_lm"
    c.model.update(
        family="gpt2",
        vocab_size=8192,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=256,
        layer_norm_eps=1e-5,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    c.data.source = "builtin:wiki_en"
    c.data.max_seq_length = 128
    c.train.steps = 300
    c.train.batch_size = 32
    c.train.learning_rate = 2e-3
    c.train.warmup_steps = 30
    c.train.weight_decay = 0.1
    c.train.adam_b2 = 0.95
    c.train.log_every = 20
    c.train.eval_every = 100
    c.train.eval_batches = 8
    c.train.checkpoint_every = 100
    return c
