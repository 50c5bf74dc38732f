"""The English CPU pretraining recipe, pre-LN: a ModernBERT of BERT-mini's size (4 layers,
hidden 256: pre-LN, RoPE, GeGLU, no biases, no dropout) MLM on builtin:wiki_en, loss only at
the masked positions, a one-cycle schedule peaking at 3e-3 (the quickstart's), sequences of
128, a byte-level BPE of 8,192 trained on the text. About 20 minutes on a 2-core CPU. It learns
MLM far faster than configs/en_bert_mini_mlm.py (validation accuracy 0.325 at step 1,500, where
post-LN BERT-mini sits at 0.14) and fine-tunes worse than random init: offline-en 50.2 against
53.8 (README, "Pretraining that pays off?"). Kept as that measurement's command.

python -m ptft_jax.train --config configs/en_modernbert_mini_mlm.py --workdir runs/en_mlm_pre_ln
"""

from ptft_jax.config import base_config


def get_config():
    c = base_config()
    c.model.update(
        family="modernbert",
        vocab_size=8192,
        hidden_size=256,
        num_hidden_layers=4,  # global, local, local, global
        num_attention_heads=4,
        intermediate_size=512,  # each half of the GeGLU
        max_position_embeddings=512,
        layer_norm_eps=1e-5,
    )
    c.data.source = "builtin:wiki_en"
    c.data.max_seq_length = 128
    c.train.steps = 1500
    c.train.batch_size = 32
    c.train.learning_rate = 3e-3
    c.train.warmup_steps = 150
    c.train.weight_decay = 0.01
    c.train.adam_b2 = 0.98
    c.train.log_every = 50
    c.train.eval_every = 500
    c.train.eval_batches = 8
    c.train.checkpoint_every = 500
    c.train.keep_checkpoints = 3  # every 500 steps: the learning curve (--init_from W@all)
    return c
