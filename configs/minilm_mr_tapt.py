"""Task-adaptive pretraining by hand (Gururangan et al., 2020): continue the built-in MiniLM-L6's
pretraining with MLM on builtin:mr's own training sentences (its validation sentences evaluate
the MLM; the test split is never read), then fine-tune from there as configs/minilm_mr.py does.
The MLM head starts fresh, tied to the word embeddings (the checkpoint has none). A few minutes
on a 2-core CPU; ``python -m ptft_jax.suite --tapt_steps N`` does the same for every task of a
suite, beside the model fine-tuned directly.

python -m ptft_jax.train --config configs/minilm_mr_tapt.py --workdir runs/minilm_mr_tapt
python -m ptft_jax.train --config configs/minilm_mr.py --workdir runs/minilm_mr_from_tapt \\
    --config.init_from=runs/minilm_mr_tapt
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()
    c.task = "mlm"
    c.init_from = "builtin:minilm_l6"
    c.data.source = "builtin:mr"
    c.data.max_seq_length = 64  # the fine-tuning's length
    c.train.steps = 200
    c.train.batch_size = 32
    c.train.learning_rate = 1e-4
    c.train.warmup_ratio = 0.06
    c.train.log_every = 50
    c.train.eval_every = 200
    c.train.eval_batches = 8
    c.train.checkpoint_every = 200
    return c
