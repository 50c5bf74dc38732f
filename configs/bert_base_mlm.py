"""BERT-base MLM pretraining, sequence 128, global batch 256, bfloat16 matmuls (GPU/TPU).

    python -m ptft_jax.train --config configs/bert_base_mlm.py --workdir runs/bert_base \
        --config.data.source=hf:wikipedia:20220301.en --config.data.tokenizer=bert-base-uncased

On a pod slice, shard parameters over hosts with e.g. --config.mesh.fsdp=-1 --config.mesh.data=1.
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()  # BERT-base shapes (HF's bert-base-uncased) are the defaults
    c.model.dtype = "bfloat16"
    c.data.source = "builtin:wiki_en"
    c.data.max_seq_length = 128
    c.data.max_predictions_per_seq = 20
    c.train.steps = 100_000
    c.train.batch_size = 256
    c.train.learning_rate = 1e-4
    c.train.warmup_steps = 10_000
    c.train.log_every = 100
    c.train.eval_every = 5_000
    c.train.eval_batches = 50
    c.train.checkpoint_every = 5_000
    c.data.num_threads = 8
    return c
