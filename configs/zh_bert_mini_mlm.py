"""BERT-mini MLM on Chinese text (builtin:zh_news: People's Daily, January 1998) with Chinese
whole-word masking: jieba finds the words, 15% of them are chosen and every character of a
chosen word is predicted (hfl's Chinese-BERT-wwm). A WordPiece is trained on the text with every
character of GB 2312 and printable ASCII in it (``data.vocab_characters``: each CJK character a
token of its own, as bert-base-chinese has them), so text beyond People's Daily is not [UNK]:
10,324 tokens. The recipe of configs/en_bert_mini_mlm.py (no dropout, a one-cycle schedule
peaking at 1e-3, loss at the masked positions only), about 30 minutes on a 2-core CPU; its
offline-zh suite score is in README ("Pretraining that pays off").

pip install -e ".[zh]"
python -m ptft_jax.train --config configs/zh_bert_mini_mlm.py --workdir runs/zh_mlm
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()
    c.model.update(
        vocab_size=10368,  # the 10,324 tokens of the trained WordPiece, a multiple of 128
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=512,
        hidden_dropout_prob=0.0,  # a few passes over fresh masks: nothing to regularise yet
        attention_probs_dropout_prob=0.0,
    )
    c.data.source = "builtin:zh_news"
    c.data.max_seq_length = 128
    c.data.whole_word_masking = True
    c.data.word_segmenter = "jieba"
    c.data.vocab_characters = "gb2312"
    c.train.steps = 2000
    c.train.batch_size = 32
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 200
    c.train.log_every = 50
    c.train.eval_every = 500
    c.train.eval_batches = 8
    c.train.checkpoint_every = 500
    c.train.keep_checkpoints = 4  # every 500 steps: the learning curve (--init_from W@all)
    return c
