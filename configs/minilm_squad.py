"""Fine-tune the built-in MiniLM-L6 on builtin:squad (SQuAD v1.1; its dev set is the test split),
CPU-sized: contexts in windows of 256 tokens that overlap by 64.

python -m ptft_jax.train --config configs/minilm_squad.py --workdir runs/minilm_squad
python -m ptft_jax.predict --workdir runs/minilm_squad --question "Who wrote Hamlet?" \
    --context "Hamlet is a tragedy written by William Shakespeare around 1600."

max_train_examples takes a seeded 4,000 of the 79,213 training questions (0: all).
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()
    c.task = "question_answering"
    c.init_from = "builtin:minilm_l6"
    c.data.source = "builtin:squad"
    c.data.max_seq_length = 256
    c.data.doc_stride = 64
    c.data.max_train_examples = 4000
    c.train.epochs = 2
    c.train.batch_size = 32
    c.train.learning_rate = 1e-4
    c.train.warmup_ratio = 0.1
    c.train.weight_decay = 0.01
    c.train.log_every = 25
    c.train.eval_every = 100_000  # evaluate at each epoch end
    c.train.checkpoint_every = 250
    c.train.metric_for_best = "f1"
    return c
