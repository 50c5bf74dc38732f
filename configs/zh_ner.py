"""Chinese named entities on builtin:peoples_daily_ner (People's Daily 1998, person, place and
organisation tagged by character, split 80/10/10), a BERT-mini from the MLM run of
configs/zh_bert_mini_mlm.py (its tokenizer: every CJK character a token), CPU-sized:

python -m ptft_jax.train --config configs/zh_bert_mini_mlm.py --workdir runs/zh_mlm
python -m ptft_jax.train --config configs/zh_ner.py --workdir runs/zh_ner \
    --config.init_from=runs/zh_mlm
python -m ptft_jax.predict --workdir runs/zh_ner --text "江泽民在北京会见了新华社记者。"

Without init_from the same shape starts from random weights, with a WordPiece trained on the
sentences that holds every GB 2312 character. The set has 45,080 sentences;
max_train_examples takes a seeded 8,000 of the training split (0: all 36,064).
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()
    c.task = "token_classification"
    c.model.update(
        vocab_size=10368,  # zh_bert_mini_mlm.py's: every GB 2312 character a token
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=512,
    )
    c.data.source = "builtin:peoples_daily_ner"
    c.data.max_seq_length = 128  # sentences: 41 characters on average
    c.data.max_train_examples = 8000
    c.data.vocab_characters = "gb2312"  # random init: the same kind of tokenizer
    c.train.epochs = 3
    c.train.batch_size = 32
    c.train.learning_rate = 1e-3
    c.train.warmup_ratio = 0.1
    c.train.weight_decay = 0.01
    c.train.log_every = 25
    c.train.eval_every = 100_000  # evaluate at each epoch end
    c.train.checkpoint_every = 250
    c.train.metric_for_best = "f1"
    return c
