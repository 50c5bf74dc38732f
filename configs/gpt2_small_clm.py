"""GPT-2 small (124M parameters) causal-LM pretraining, sized for a GPU or a TPU slice: GPT-2's
shape and tokenizer length, blocks of 1,024 tokens, about 0.5M tokens a step (batch 512,
accumulated over 4 microbatches), AdamW (0.9, 0.95), weight decay 0.1, bf16 matmuls.

python -m ptft_jax.train --config configs/gpt2_small_clm.py --workdir runs/gpt2_small \
    --config.data.source=/data/my_corpus --config.data.tokenizer=/models/gpt2
JAX_PLATFORMS=cpu python -m ptft_jax.train --config configs/gpt2_small_clm.py \
    --compile_only --topology v5p:2x2x1
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()
    c.task = "causal_lm"
    c.model.update(
        family="gpt2",
        vocab_size=50257,
        hidden_size=768,
        num_hidden_layers=12,
        num_attention_heads=12,
        intermediate_size=3072,
        max_position_embeddings=1024,
        layer_norm_eps=1e-5,
        dtype="bfloat16",
    )
    c.data.source = "builtin:wiki_en"  # replace with your corpus
    c.data.max_seq_length = 1024
    c.data.eval_fraction = 0.005
    c.train.steps = 20_000
    c.train.batch_size = 512
    c.train.grad_accum_steps = 4
    c.train.learning_rate = 6e-4
    c.train.warmup_steps = 700
    c.train.weight_decay = 0.1
    c.train.adam_b2 = 0.95
    c.train.adam_eps = 1e-8
    c.train.log_every = 50
    c.train.eval_every = 1000
    c.train.eval_batches = 20
    c.train.checkpoint_every = 1000
    return c
