"""Every config key and its default: ``base_config()``, which every file in configs/ starts
from (``from ptft_jax.config import base_config``); ``config.py`` checks a config."""

from __future__ import annotations

import dataclasses

import ml_collections

from ptft_jax import models


def base_config() -> ml_collections.ConfigDict:
    """All keys and their defaults (a BERT-base MLM run on one host's devices)."""
    c = ml_collections.ConfigDict()
    c.task = "mlm"
    c.init_from = ""  # "" | "hf:<folder or hub id>" | "builtin:minilm_l6"
    c.allow_pytorch_bin = False  # read pytorch_model.bin (a pickle) when no safetensors exist

    c.model = _model_keys()
    c.data = _data_keys()
    c.train = _train_keys()
    c.mesh = ml_collections.ConfigDict({"data": -1, "fsdp": 1, "tensor": 1})
    return c


def _model_keys() -> ml_collections.ConfigDict:
    """``model.*``: every family's keys."""
    x = ml_collections.ConfigDict()
    # Every family's keys (models/): BERT's first ("family": "bert"), so a key two families
    # share has BERT's default; a family's own keys have its defaults. The task decides the
    # pooler and the NSP head.
    for family in models.FAMILIES.values():
        for f in dataclasses.fields(family.CONFIG):
            if f.name not in x and f.name not in ("add_pooling_layer", "next_sentence"):
                x[f.name] = f.default
    # RoBERTa-style families number positions from the pad id: -1 takes the tokenizer's.
    x.pad_token_id = -1
    return x


def _data_keys() -> ml_collections.ConfigDict:
    """``data.*``: the source, tokenizer, sequences, masking and readers."""
    x = ml_collections.ConfigDict()
    x.source = "builtin:wiki_en"
    x.text_field = "text"
    x.text_pair_field = ""
    x.label_field = "label"
    x.tokens_field = "tokens"  # token classification: each record's list of words
    x.tags_field = "tags"  # ... and of their tags (BIO); a hub dataset's may be ner_tags
    x.label_all_subwords = False  # True: every piece of a word is trained on, not the first
    # question answering: SQuAD's fields, windows overlapping by doc_stride tokens, answers of
    # at most max_answer_length tokens from the n_best starts and ends; True: SQuAD v2's
    # questions without an answer
    x.question_field = "question"
    x.context_field = "context"
    x.answers_field = "answers"
    x.doc_stride = 128
    x.max_answer_length = 30
    x.n_best = 20
    x.version_2_with_negative = False
    x.max_seq_length = 128
    x.tokenizer = ""  # folder or hub id; '' trains WordPiece on the data into W/tokenizer
    x.tokenizer_sample_documents = 200_000  # prepare: a seeded sample trains the tokenizer
    x.lowercase = True  # a trained tokenizer: uncased, accents stripped; False keeps both
    x.keep_accents = False  # True: lowercase but keep accents (pinyin tones, kana marks)
    x.vocab_characters = ""  # 'gb2312': a trained WordPiece holds all its characters (Chinese)
    x.eval_fraction = 0.02  # documents held out when the source has no validation split
    x.max_documents = 0  # 0 = all; a cap for quick runs
    x.max_train_examples = 0  # classification: > 0 takes a seeded, stratified subsample
    # A record whose text (or text pair) is empty stops the run naming it; True leaves such
    # records out instead, with one line that counts them.
    x.skip_empty_texts = False
    x.length_buckets = 5  # classification: padded lengths (each compiles its own step)
    x.packing = True  # classification, contrastive: several examples a row (False: one a row)
    x.max_predictions_per_seq = 20
    x.mlm_probability = 0.15
    x.whole_word_masking = False  # mask every piece of a chosen word; rate in words
    x.word_segmenter = ""  # 'jieba': whole-word masking finds Chinese words (extra zh)
    x.num_threads = 2  # Grain reader threads
    x.prefetch = 8  # batches prefetched by those threads
    return x


def _train_keys() -> ml_collections.ConfigDict:
    """``train.*``: the schedule, optimizer, evaluation, checkpoints and each task's keys."""
    x = ml_collections.ConfigDict()
    x.objectives = ("mlm",)  # task mlm: ("mlm",) or ("mlm", "nsp") (BERT's two losses)
    x.steps = 1000  # the schedule's length
    x.epochs = 0  # > 0 wins over steps (classification)
    x.stop_at_step = 0  # > 0: checkpoint and stop there (time-boxed jobs); resume later
    # A step whose loss or gradient is NaN/Inf never updates the state; then "stop" (save the
    # last good state, exit non-zero) or "skip" (count it and go on).
    x.on_nonfinite = "stop"
    x.batch_size = 256  # global, across all devices and hosts
    x.grad_accum_steps = 1
    x.learning_rate = 1e-4
    x.warmup_steps = 100
    x.warmup_ratio = 0.0  # > 0 wins over warmup_steps
    x.weight_decay = 0.01
    x.max_grad_norm = 1.0
    x.adam_b1 = 0.9
    x.adam_b2 = 0.999
    x.adam_eps = 1e-6
    x.log_every = 50
    x.eval_every = 500
    x.eval_batches = 0  # 0 = the whole evaluation split
    x.checkpoint_every = 500
    x.keep_checkpoints = 2
    x.seed = 0
    # True: start over from step 0 in a workdir whose checkpoints were all set aside in
    # W/damaged/ (without it such a run stops rather than start over unasked).
    x.restart_from_scratch = False
    x.metric_for_best = ""  # classification: keep the best checkpoint by this metric
    x.patience = 0  # > 0: stop after this many evaluations without improvement
    x.trainable = ()  # regexes of trainable parameter paths; empty = all
    x.freeze_embeddings = False
    x.freeze_layers = 0  # freeze the lowest k encoder layers
    # task=distill: the teacher (a workdir, hf:<folder or hub id>, builtin:...), the student's
    # task ('' = the teacher's), its start (teacher layer indices; () = init_from or random),
    # loss = alpha * T^2 * KL(teacher || student at temperature T) + (1 - alpha) * hard loss.
    x.teacher = ""
    x.distill_task = ""
    x.student_layers_from_teacher = ()
    x.distill_alpha = 0.5
    x.distill_temperature = 2.0
    # classification: this many word-level variants of each training text (spans, word
    # dropout; data/augment.py) join the training set with the teacher's soft labels only.
    x.distill_augment = 0
    # task=contrastive (SimCSE): supervised when data.text_pair_field names the positives.
    x.temperature = 0.05
    x.probe_source = "builtin:mr"  # linear-probe accuracy on this labelled set ('' = off)
    x.probe_examples = 0  # 0 = all; a cap on each probe split for quick runs
    x.probe_text_field = "text"  # the probe set's fields (a built-in's: text, label)
    x.probe_label_field = "label"
    return x
