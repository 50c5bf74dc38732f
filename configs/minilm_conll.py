"""Fine-tune the built-in MiniLM-L6 on builtin:conll2003 (CoNLL-2003 English named entities:
person, place, organisation, other; its official splits), CPU-sized:

python -m ptft_jax.train --config configs/minilm_conll.py --workdir runs/minilm_conll
python -m ptft_jax.predict --workdir runs/minilm_conll --text "Merkel met Johnson in Berlin."
python -m ptft_jax.export --workdir runs/minilm_conll --out runs/minilm_conll/hf

max_train_examples takes a seeded 4,000 of the 14,041 training sentences (0: all).
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()
    c.task = "token_classification"
    c.init_from = "builtin:minilm_l6"
    c.data.source = "builtin:conll2003"
    c.data.max_seq_length = 128
    c.data.max_train_examples = 4000
    c.train.epochs = 3
    c.train.batch_size = 32
    c.train.learning_rate = 1e-4
    c.train.warmup_ratio = 0.1
    c.train.weight_decay = 0.01
    c.train.log_every = 25
    c.train.eval_every = 100_000  # evaluate at each epoch end
    c.train.checkpoint_every = 250
    c.train.metric_for_best = "f1"
    return c
