"""Distil a MiniLM fine-tuned on builtin:mr into a 2-layer student made of its layers 0 and 5.

python -m ptft_jax.train --config configs/minilm_mr.py --workdir runs/minilm_mr   # the teacher
python -m ptft_jax.train --config configs/minilm_mr_distill.py --workdir runs/mr_student
# the same student without a teacher (hard labels only, its own training sentences), to compare:
python -m ptft_jax.train --config configs/minilm_mr_distill.py --workdir runs/mr_student_alone \\
    --config.train.distill_alpha=0 --config.train.distill_augment=0 --config.train.epochs=3
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()
    c.task = "distill"
    c.train.teacher = "runs/minilm_mr"
    c.train.student_layers_from_teacher = (0, 5)  # model shape and tokenizer: the teacher's
    c.train.distill_alpha = 0.5
    c.train.distill_temperature = 2.0
    c.train.distill_augment = 2  # a transfer set: 2 variants of each sentence, teacher-labelled
    c.data.source = "builtin:mr"
    c.data.max_seq_length = 64
    c.train.epochs = 2  # of 3 x 8,452 rows: 1,588 steps
    c.train.batch_size = 32
    c.train.learning_rate = 1e-4
    c.train.warmup_ratio = 0.1
    c.train.log_every = 20
    c.train.eval_every = 100_000  # evaluate at each epoch end
    c.train.checkpoint_every = 200
    c.train.metric_for_best = "accuracy"
    return c
