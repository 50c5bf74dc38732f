"""ModernBERT-base MLM pretraining with the ModernBERT recipe's first phase: sequence 1,024,
30% of the tokens masked, no dropout, peak learning rate 8e-4, weight decay 1e-5, Adam beta2
0.98; alternating global and 128-token local attention (every third layer global), RoPE,
GeGLU; bfloat16 matmuls (GPU/TPU). Raise data.max_seq_length (up to 8,192) for the
long-context phase.

    python -m ptft_jax.train --config configs/modernbert_base_mlm.py \
        --workdir runs/modernbert_base --config.data.source=<your corpus> \
        --config.data.tokenizer=answerdotai/ModernBERT-base

On a pod slice, shard parameters over hosts with e.g. --config.mesh.fsdp=-1 --config.mesh.data=1.
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()
    c.model.update(
        family="modernbert",
        vocab_size=50368,
        hidden_size=768,
        num_hidden_layers=22,
        num_attention_heads=12,
        intermediate_size=1152,
        max_position_embeddings=8192,
        layer_norm_eps=1e-5,
        dtype="bfloat16",
    )
    c.data.source = "builtin:wiki_en"
    c.data.max_seq_length = 1024
    c.data.mlm_probability = 0.3
    c.data.max_predictions_per_seq = 308  # 30% of 1,024, rounded up
    c.train.steps = 200_000
    c.train.batch_size = 4608
    c.train.learning_rate = 8e-4
    c.train.warmup_steps = 3_000
    c.train.weight_decay = 1e-5
    c.train.adam_b2 = 0.98
    c.train.log_every = 100
    c.train.eval_every = 5_000
    c.train.eval_batches = 50
    c.train.checkpoint_every = 5_000
    c.data.num_threads = 8
    return c
