"""Everything the loop needs from the data, per task: tokenizer, train dataset, eval batches."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Callable

import numpy as np

from ptft_jax.data import augment, classify, contrastive, nsp, pipeline, sources
from ptft_jax.data.builtin import cache_dir
from ptft_jax.data.tokenize import special_ids


@dataclasses.dataclass
class TaskData:
    """Host-side data of one run."""

    tokenizer: object
    train: object  # Grain MapDataset; element b = this process's part of global batch b
    eval: list  # MLM: batches; classification: (batch, global example ids)
    steps_per_epoch: int = 0  # 0: no epochs (MLM streams packed blocks)
    test: list | None = None
    eval_labels: np.ndarray | None = None
    test_labels: np.ndarray | None = None
    label_names: list[str] | None = None
    lengths: tuple[int, ...] = ()  # classification: the padded lengths (buckets) batches take
    summary: str = ""
    probe: dict | None = None  # contrastive: labelled train/test Rows for the linear probe


def for_task(cfg, kind: str, get_tokenizer: Callable, layout, eval_layout, labels_file):
    """The data of a run whose model does ``kind`` (``config.model_task``)."""
    if kind == "classification":
        return classification(cfg, get_tokenizer, layout, eval_layout, labels_file)
    if kind == "contrastive":
        return contrastive_data(cfg, get_tokenizer, layout, eval_layout)
    return mlm(cfg, get_tokenizer, layout, eval_layout)


def mlm(cfg, get_tokenizer: Callable, layout, eval_layout) -> TaskData:
    """Packed, dynamically masked blocks; a fixed masked evaluation split."""
    records = sources.load_records(cfg.data.source)
    train_texts, eval_texts = pipeline.mlm_texts(cfg.data, records)
    tokenizer = get_tokenizer(train_texts)
    seq_len = cfg.data.max_seq_length
    train_blocks = mlm_blocks(cfg, train_texts, tokenizer, held_out=False)
    eval_blocks = mlm_blocks(cfg, eval_texts, tokenizer, held_out=True)
    spec = pipeline.masking_spec(cfg.data, tokenizer)
    t = cfg.train
    return TaskData(
        tokenizer=tokenizer,
        train=pipeline.train_dataset(train_blocks, spec, layout, t.seed),
        eval=list(pipeline.eval_batches(eval_blocks, spec, eval_layout, t.seed, t.eval_batches)),
        summary=f"{len(train_blocks)} train / {len(eval_blocks)} eval blocks of {seq_len}",
    )


def mlm_blocks(cfg, texts: list[str], tokenizer, held_out: bool):
    """The blocks MLM trains or evaluates on: ``texts`` packed into ``max_seq_length``, or, when
    the run trains NSP, sentence pairs (half with a random B, seeded apart for held-out text)."""
    seq_len = cfg.data.max_seq_length
    if "nsp" in cfg.train.objectives:
        seed = cfg.train.seed + int(held_out)
        return nsp.pair_texts(texts, tokenizer, seq_len, cache_dir(), seed)
    return pipeline.pack_texts(texts, tokenizer, seq_len, cache_dir())


def contrastive_data(cfg, get_tokenizer: Callable, layout, eval_layout) -> TaskData:
    """SimCSE rows: sentences of documents (unsupervised) or text/text_pair positives."""
    d, t = cfg.data, cfg.train
    records = sources.load_records(d.source)
    if not d.text_pair_field:
        train_texts, eval_texts = pipeline.mlm_texts(d, records)
        train_pairs = eval_pairs = None
    else:

        def texts(rows, field):
            return [sources.text_of(r, field) for r in rows[: d.max_documents or None]]

        a, b = texts(records["train"], d.text_field), texts(records["train"], d.text_pair_field)
        if "validation" in records:
            va = records["validation"]
            train_texts, train_pairs = a, b
            eval_texts, eval_pairs = texts(va, d.text_field), texts(va, d.text_pair_field)
        else:
            tr, ev = pipeline.split_documents(len(a), d.eval_fraction)
            train_texts, train_pairs = [a[i] for i in tr], [b[i] for i in tr]
            eval_texts, eval_pairs = [a[i] for i in ev], [b[i] for i in ev]
    tokenizer = get_tokenizer(train_texts)
    train = contrastive.rows(d, train_texts, train_pairs, tokenizer, cache_dir())
    held_out = contrastive.rows(d, eval_texts, eval_pairs, tokenizer, cache_dir())
    dataset, spe = contrastive.train_dataset(train, layout, t.seed)
    probe = None
    if t.probe_source:
        fields = (t.probe_text_field, t.probe_label_field)
        probe = contrastive.probe_sets(
            t.probe_source, fields, d, tokenizer, cache_dir(), t.probe_examples
        )
    kind = "supervised pairs" if train_pairs else "sentences"
    return TaskData(
        tokenizer=tokenizer,
        train=dataset,
        eval=list(contrastive.eval_batches(held_out, eval_layout, t.eval_batches)),
        steps_per_epoch=spe,
        probe=probe,
        summary=f"{len(train)} train / {len(held_out)} eval {kind}",
    )


def classification(cfg, get_tokenizer: Callable, layout, eval_layout, labels_file) -> TaskData:
    """Labelled texts (or pairs) in length buckets; label names kept in ``labels_file``."""
    d, num_labels = cfg.data, cfg.model.num_labels
    fields = (d.text_field, d.text_pair_field)
    split = classify.splits(sources.load_records(d.source), fields, d.label_field)
    train = classify.subsample(split["train"], d.label_field, d.max_train_examples, cfg.train.seed)
    tokenizer = get_tokenizer([sources.text_of(r, d.text_field) for r in train])
    names = _label_names(labels_file, train, d.label_field, num_labels)
    encoded = {
        name: classify.encode(rows, d, tokenizer, num_labels, names, name)
        for name, rows in [
            ("train", train),
            *((k, split[k]) for k in ("validation", "test") if k in split),
        ]
    }
    if cfg.task == "distill" and cfg.train.distill_augment:
        encoded["train"] = _with_transfer_set(cfg, train, encoded["train"], tokenizer, names)
    pad = special_ids(tokenizer)["pad"]
    lengths = np.array([len(x) for x in encoded["train"].ids])
    sizes = classify.buckets(lengths, d.max_seq_length, d.length_buckets)
    dataset, spe = classify.train_dataset(encoded["train"], sizes, layout, cfg.train.seed, pad)

    def batches(name):
        if name not in encoded:
            return None, None
        return list(classify.eval_batches(encoded[name], sizes, eval_layout, pad)), encoded[
            name
        ].labels

    eval_data, eval_labels = batches("validation")
    test_data, test_labels = batches("test")
    counts = ", ".join(f"{k} {len(v)}" for k, v in encoded.items())
    if encoded["train"].label_weights is not None:
        extra = int(np.sum(encoded["train"].label_weights == 0))
        counts += f" (train: {len(encoded['train']) - extra} labelled + {extra} transfer)"
    return TaskData(
        tokenizer=tokenizer,
        train=dataset,
        eval=eval_data,
        steps_per_epoch=spe,
        test=test_data,
        eval_labels=eval_labels,
        test_labels=test_labels,
        label_names=names,
        lengths=sizes,
        summary=f"examples: {counts}; length buckets {sizes}",
    )


def _with_transfer_set(cfg, train, examples, tokenizer, names) -> classify.Examples:
    """``examples`` followed by ``train.distill_augment`` variants of each training text
    (``augment.transfer_set``), which carry no hard label (label weight 0)."""
    d = cfg.data
    texts = [sources.text_of(r, d.text_field) for r in train]
    extra, source = augment.transfer_set(texts, cfg.train.distill_augment, cfg.train.seed)
    records = [{**train[i], d.text_field: t} for t, i in zip(extra, source, strict=True)]
    more = classify.encode(records, d, tokenizer, cfg.model.num_labels, names, "train")
    weights = np.concatenate([np.ones(len(examples)), np.zeros(len(more))]).astype(np.float32)
    return classify.Examples(
        ids=examples.ids + more.ids,
        type_ids=examples.type_ids + more.type_ids,
        labels=np.concatenate([examples.labels, more.labels]),
        label_weights=weights,
    )


def _label_names(labels_file: pathlib.Path, train, field, num_labels):
    """String label names: those saved with the run if any (resume), else from training data."""
    if labels_file.exists():
        return json.loads(labels_file.read_text())["names"]
    return classify.label_names(train, field, num_labels)
