"""BERT-mini MLM on Chinese text (builtin:zh_news: People's Daily, January 1998) with Chinese
whole-word masking: jieba finds the words, 15% of them are chosen and every character of a
chosen word is predicted (hfl's Chinese-BERT-wwm). A WordPiece of 8,192 is trained on the text
(every CJK character a token of its own, as bert-base-chinese has them). About 10 minutes on a
2-core CPU.

pip install -e ".[zh]"
python -m ptft_jax.train --config configs/zh_bert_mini_mlm.py --workdir runs/zh_mlm
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()
    c.model.update(
        vocab_size=8192,
        hidden_size=256,
        num_hidden_layers=4,
        num_attention_heads=4,
        intermediate_size=1024,
        max_position_embeddings=512,
        hidden_dropout_prob=0.0,  # one pass over the text: nothing to regularise yet
        attention_probs_dropout_prob=0.0,
    )
    c.data.source = "builtin:zh_news"
    c.data.max_seq_length = 128
    c.data.whole_word_masking = True
    c.data.word_segmenter = "jieba"
    c.train.steps = 900
    c.train.batch_size = 32
    c.train.learning_rate = 1e-3
    c.train.warmup_steps = 90
    c.train.log_every = 25
    c.train.eval_every = 150
    c.train.eval_batches = 8
    c.train.checkpoint_every = 300
    return c
