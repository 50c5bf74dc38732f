"""Unsupervised SimCSE on builtin:wiki_en sentences from the built-in MiniLM-L6, with a linear
probe on builtin:mr before and after (CPU-sized: about 22 minutes on 2 cores).

python -m ptft_jax.train --config configs/simcse_minilm.py --workdir runs/simcse
# supervised SimCSE: a source whose records hold a text and its positive
python -m ptft_jax.train --config configs/simcse_minilm.py --workdir runs/simcse_sup \\
    --config.data.source=pairs.jsonl --config.data.text_pair_field=positive
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()
    c.task = "contrastive"
    c.init_from = "builtin:minilm_l6"
    c.data.source = "builtin:wiki_en"
    c.data.max_seq_length = 64
    c.train.temperature = 0.05  # SimCSE's
    c.train.probe_source = "builtin:mr"
    c.train.steps = 250
    c.train.batch_size = 64  # every row's negatives: the other 63, across all devices
    c.train.learning_rate = 3e-5
    c.train.warmup_steps = 25
    c.train.log_every = 25
    c.train.eval_every = 125
    c.train.eval_batches = 8
    c.train.checkpoint_every = 125
    return c
