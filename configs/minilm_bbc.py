"""Fine-tune the built-in MiniLM-L6 on builtin:bbc (5-class news topics), CPU-sized.

python -m ptft_jax.train --config configs/minilm_bbc.py --workdir runs/minilm_bbc
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()
    c.task = "classification"
    c.init_from = "builtin:minilm_l6"
    c.model.num_labels = 5
    c.data.source = "builtin:bbc"
    c.data.max_seq_length = 256
    c.train.epochs = 2
    c.train.batch_size = 32
    c.train.learning_rate = 5e-5
    c.train.warmup_ratio = 0.1
    c.train.weight_decay = 0.01
    c.train.log_every = 10
    c.train.eval_every = 100_000  # evaluate at each epoch end
    c.train.checkpoint_every = 100
    c.train.metric_for_best = "accuracy"
    return c
