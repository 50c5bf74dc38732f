"""BERT-large MLM pretraining, sequence 128, global batch 1024, bfloat16 matmuls (TPU/GPU pods).

    python -m ptft_jax.train --config configs/bert_large_mlm.py --workdir runs/bert_large \
        --config.data.source=hf:wikipedia:20220301.en --config.data.tokenizer=bert-large-uncased

Parameters and optimizer state are sharded over the fsdp axis (all devices by default).
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()
    c.model.update(
        hidden_size=1024,
        num_hidden_layers=24,
        num_attention_heads=16,
        intermediate_size=4096,
        dtype="bfloat16",
    )
    c.data.source = "builtin:wiki_en"
    c.data.max_seq_length = 128
    c.train.steps = 1_000_000
    c.train.batch_size = 1024
    c.train.learning_rate = 1e-4
    c.train.warmup_steps = 10_000
    c.train.log_every = 100
    c.train.eval_every = 10_000
    c.train.eval_batches = 50
    c.train.checkpoint_every = 5_000
    c.data.num_threads = 8
    c.mesh.update(data=1, fsdp=-1, tensor=1)
    return c
