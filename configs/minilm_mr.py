"""Fine-tune the built-in MiniLM-L6 on builtin:mr (binary movie-review sentiment), CPU-sized.

python -m ptft_jax.train --config configs/minilm_mr.py --workdir runs/minilm_mr
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()
    c.task = "classification"
    c.init_from = "builtin:minilm_l6"
    c.model.num_labels = 2
    c.data.source = "builtin:mr"
    c.data.max_seq_length = 64
    c.train.epochs = 3
    c.train.batch_size = 32
    c.train.learning_rate = 5e-5
    c.train.warmup_ratio = 0.1
    c.train.weight_decay = 0.01
    c.train.log_every = 20
    c.train.eval_every = 100_000  # evaluate at each epoch end
    c.train.checkpoint_every = 200
    c.train.metric_for_best = "accuracy"
    return c
