"""Fine-tune bert-base-uncased on a GLUE task (needs the Hugging Face hub, i.e. internet).

    python -m ptft_jax.train --config configs/bert_base_glue.py:sst2 --workdir runs/glue_sst2

The argument after ':' is the task: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli.
GLUE's test labels are hidden (-1), so such a test split is skipped; the validation split
(mnli: validation_matched) picks the best checkpoint.
"""

from ptft_jax.config import base_config

# task -> (text field, pair field, labels, metric for the best checkpoint)
TASKS = {
    "cola": ("sentence", "", 2, "mcc"),
    "sst2": ("sentence", "", 2, "accuracy"),
    "mrpc": ("sentence1", "sentence2", 2, "f1"),
    "qqp": ("question1", "question2", 2, "f1"),
    "stsb": ("sentence1", "sentence2", 1, "pearson"),
    "mnli": ("premise", "hypothesis", 3, "accuracy"),
    "qnli": ("question", "sentence", 2, "accuracy"),
    "rte": ("sentence1", "sentence2", 2, "accuracy"),
    "wnli": ("sentence1", "sentence2", 2, "accuracy"),
}


def get_config(task: str = "sst2"):
    if task not in TASKS:
        raise ValueError(f"Unknown GLUE task {task!r}; use one of {', '.join(TASKS)}.")
    text, pair, labels, metric = TASKS[task]
    c = base_config()
    c.task = "classification"
    c.init_from = "hf:bert-base-uncased"
    c.model.num_labels = labels
    c.model.dtype = "bfloat16"
    c.data.source = f"hf:glue:{task}"
    c.data.text_field = text
    c.data.text_pair_field = pair
    c.data.label_field = "label"
    c.data.max_seq_length = 128
    c.train.epochs = 3
    c.train.batch_size = 32
    c.train.learning_rate = 2e-5
    c.train.warmup_ratio = 0.1
    c.train.weight_decay = 0.01
    c.train.log_every = 50
    c.train.eval_every = 1000
    c.train.checkpoint_every = 1000
    c.train.metric_for_best = metric
    return c
