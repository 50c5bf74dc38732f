"""Fine-tune a Chinese BERT-mini on builtin:thucnews (10,000 news headlines in 10 topics, split
80/10/10), CPU-sized: a few minutes on 2 cores. From the MLM run of configs/zh_bert_mini_mlm.py
(its tokenizer: every CJK character a token):

python -m ptft_jax.train --config configs/zh_bert_mini_mlm.py --workdir runs/zh_mlm
python -m ptft_jax.train --config configs/zh_classify.py --workdir runs/zh_classify \
    --config.init_from=runs/zh_mlm

Without init_from the same shape starts from random weights, with a WordPiece trained on the
headlines. From a Chinese BERT in Hugging Face's layout (bert-base-chinese: config.json,
vocab.txt, model.safetensors): --config.init_from=hf:<folder> --config.train.learning_rate=3e-5.
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()
    c.task = "classification"
    c.model.update(
        vocab_size=8192,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=512,
        num_labels=10,
    )
    c.data.source = "builtin:thucnews"
    c.data.max_seq_length = 64  # headlines: 28 characters on average
    c.train.epochs = 4
    c.train.batch_size = 32
    c.train.learning_rate = 5e-4
    c.train.warmup_ratio = 0.1
    c.train.weight_decay = 0.01
    c.train.log_every = 25
    c.train.eval_every = 100_000  # evaluate at each epoch end
    c.train.checkpoint_every = 250
    c.train.metric_for_best = "accuracy"
    return c
