"""RoBERTa-base MLM pretraining as the RoBERTa paper's base recipe sets it: sequence 512, full
sentences across documents, no next-sentence loss, dynamic masking, global batch 8,192,
peak learning rate 6e-4 after 24,000 warmup steps, Adam beta2 0.98; bfloat16 matmuls
(GPU/TPU).

    python -m ptft_jax.train --config configs/roberta_base_mlm.py --workdir runs/roberta_base \
        --config.data.source=<your corpus> --config.data.tokenizer=roberta-base

On a pod slice, shard parameters over hosts with e.g. --config.mesh.fsdp=-1 --config.mesh.data=1.
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()
    c.model.update(
        family="roberta",
        vocab_size=50265,
        max_position_embeddings=514,
        type_vocab_size=1,
        layer_norm_eps=1e-5,
        dtype="bfloat16",
    )
    c.data.source = "builtin:wiki_en"
    c.data.max_seq_length = 512
    c.data.max_predictions_per_seq = 80  # 15% of 512, rounded up
    c.train.steps = 500_000
    c.train.batch_size = 8192
    c.train.learning_rate = 6e-4
    c.train.warmup_steps = 24_000
    c.train.adam_b2 = 0.98
    c.train.log_every = 100
    c.train.eval_every = 5_000
    c.train.eval_batches = 50
    c.train.checkpoint_every = 5_000
    c.data.num_threads = 8
    return c
