"""Fine-tuning for classification and regression (``task="classification"``): single texts or
pairs, class names or ids (``model.num_labels=1``: a regression on numeric labels).

Encoders read the first token (``[CLS]``, ``<s>``), a decoder (GPT-2) the last; rows are
padded on the right with the tokenizer's pad id (GPT-2's ``<|endoftext|>``). A pair is what
the tokenizer makes of two texts (``[CLS] A [SEP] B [SEP]``); one that would join them with
nothing between (GPT-2's) is given ``A <|endoftext|> B`` first (``separated_pairs``).

With ``data.packing`` several examples share a row (``data/packing.py``: no padding between
them, attention never crosses them); without, examples are grouped into length buckets (each
padded length compiles its own step). The best checkpoint by ``train.metric_for_best`` is kept
apart and scored on the test split at the end.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib

import jax
import numpy as np

from ptft_jax import losses, scores
from ptft_jax.data import classify, coverage, packing, sources
from ptft_jax.data.tokenize import pad_id
from ptft_jax.errors import DataError
from ptft_jax.tasks.base import (
    EvalContext,
    Task,
    TaskData,
    inputs,
    packed,
    per_example,
    spec_of,
    split_from_data,
)

log = logging.getLogger(__name__)


@dataclasses.dataclass
class LabelledData(TaskData):
    """TaskData with the label count the run trains (the training split's for a new head)."""

    num_labels: int = 0


@dataclasses.dataclass(frozen=True)
class Classification(Task):
    num_labels: int = 2
    seq_len: int = 128
    metric_for_best: str = ""
    packing: bool = False
    # A new classifier (random, or init_from a model without one): the training split's
    # classes decide the label count, num_labels being the config's default (plan.make).
    count_labels: bool = False

    name = "classification"
    head = "classification"
    accuracy = "accuracy"
    weight_field = "weights"
    labelled = True
    sized_by_data = True

    @classmethod
    def from_config(cls, cfg) -> Classification:
        d = cfg.data
        return cls(cfg.model.num_labels, d.max_seq_length, cfg.train.metric_for_best, d.packing)

    def model_options(self) -> dict:
        return {"add_pooling_layer": True, "next_sentence": False}

    def batch_spec(self) -> dict:
        """Rows of any bucket length up to ``seq_len``; float targets for a regression. Packed
        rows add positions and each example's first token, and hold up to ``seq_len`` examples
        (a GPT tokenizer adds no special tokens: one token can be an example): per-example
        fields get that axis."""
        length = (self.seq_len,)
        slot = (self.seq_len,) if self.packing else ()
        fields = {
            "input_ids": (length, "int32"),
            "attention_mask": (length, "int32"),
            "token_type_ids": (length, "int32"),
            "labels": (slot, "float32" if self.num_labels == 1 else "int32"),
            "weights": (slot, "float32"),
            "label_weights": (slot, "float32"),  # 0 for distillation's transfer rows
        }
        if self.packing:
            fields |= {"position_ids": (length, "int32"), "cls_positions": (slot, "int32")}
        return spec_of(fields)

    def best_metric(self) -> str:
        return self.metric_for_best or ("accuracy" if self.num_labels > 1 else "pearson")

    # --- Data.

    def data(self, cfg, get_tokenizer, layout, eval_layout, labels_file, extend=None):
        """Labelled texts (or pairs) in length buckets; label names kept in ``labels_file``.
        ``extend(cfg, train records, train Examples, tokenizer, names)`` may add training
        rows (distillation's transfer set)."""
        d = cfg.data
        fields = (d.text_field, d.text_pair_field)
        skip = d.get("skip_empty_texts", False)  # missing from the configs of older runs
        records = sources.load_records(d.source, fields=fields, skip_empty=skip)
        split = classify.splits(records, fields, d.label_field)
        train = classify.subsample(
            split["train"], d.label_field, d.max_train_examples, cfg.train.seed
        )
        tokenizer = get_tokenizer([sources.text_of(r, d.text_field) for r in train])
        if d.text_pair_field:
            tokenizer = separated_pairs(tokenizer)
        expect = None if self.count_labels else self.num_labels
        names = _label_names(labels_file, train, d.label_field, expect)
        num_labels = self.num_labels
        if self.count_labels:
            num_labels = classify.class_count(train, d.label_field, names)
        records = {"train": train, **{k: split[k] for k in ("validation", "test") if k in split}}
        encoded = {
            name: classify.encode(rows, d, tokenizer, num_labels, names, name)
            for name, rows in records.items()
        }
        counts = {k: coverage.count_unknown(tokenizer, v.ids) for k, v in encoded.items()}
        coverage.report_unknown(tokenizer, counts, d.source)
        pad = pad_id(tokenizer)
        for name, rows in records.items():
            _check_last_tokens(encoded[name], rows, pad, tokenizer)
        if num_labels != self.num_labels:
            log.info(
                "model.num_labels=%d from the training split's %d classes (the config said %d; "
                "the classifier is new)",
                num_labels,
                num_labels,
                self.num_labels,
            )
        if extend is not None:
            encoded["train"] = extend(cfg, train, encoded["train"], tokenizer, names)
        batched = (packed_batches if self.packing else bucketed)(
            cfg, encoded, layout, eval_layout, pad
        )
        counts = ", ".join(f"{k} {len(v)}" for k, v in encoded.items())
        if encoded["train"].label_weights is not None:
            extra = int(np.sum(encoded["train"].label_weights == 0))
            counts += f" (train: {len(encoded['train']) - extra} labelled + {extra} transfer)"
        return LabelledData(
            num_labels=num_labels,
            tokenizer=tokenizer,
            eval_labels=encoded["validation"].labels if "validation" in encoded else None,
            test_labels=encoded["test"].labels if "test" in encoded else None,
            label_names=names,
            summary=f"examples: {counts}; {batched.pop('summary')}",
            **batched,
        )

    def split_data(self, cfg, tokenizer, layout, split: str, labels_file) -> TaskData:
        return split_from_data(self, cfg, tokenizer, layout, split, labels_file)

    # --- Inside the jitted steps.

    def forward(self, model, mb: dict, rngs):
        logits = model(*inputs(mb), rngs=rngs, **packed(mb))
        sums = losses.classification_sums(
            logits, mb["labels"], mb["weights"], mb.get("label_weights")
        )
        return logits, sums

    def teacher_outputs(self, model, mb: dict):
        return model(*inputs(mb), **packed(mb))

    def eval_outputs(self, model, mb: dict):
        """The logits, for exact metrics on the host."""
        return model(*inputs(mb), **packed(mb))

    # --- On the host.

    def evaluate(self, ctx: EvalContext, params, split="validation", with_probe=False) -> dict:
        """Loss and the task's metrics over every example (padding rows never count)."""
        data = ctx.data
        batches, labels = (
            (data.eval, data.eval_labels)
            if split == "validation"
            else (data.test, data.test_labels)
        )
        out, ids = per_example(ctx.eval_step, params, batches, ctx.mesh, ctx.rows)
        y = labels[ids]
        if self.num_labels == 1:
            pred = out[:, 0]
            return {"loss": float(np.mean((pred - y) ** 2)), **scores.regression_metrics(pred, y)}
        shifted = out - out.max(axis=1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
        loss = float(-np.mean(log_probs[np.arange(len(y)), y]))
        return {"loss": loss, **scores.classification_metrics(out.argmax(1), y, self.num_labels)}

    def predict(self, run, texts, pairs, top_k: int, forward) -> list[dict]:
        """Class probabilities (or the regression score) of each text / pair."""
        enc = run.tokenizer(
            texts,
            pairs,
            padding=True,
            truncation=True,
            max_length=run.cfg.data.max_seq_length,
            return_tensors="np",
        )
        batch = {k: enc[k].astype(np.int32) for k in ("input_ids", "attention_mask")}
        # GPT tokenizers return no segment ids (their models have none)
        batch["token_type_ids"] = enc.get("token_type_ids", np.zeros_like(enc["input_ids"]))
        batch["token_type_ids"] = batch["token_type_ids"].astype(np.int32)
        with jax.set_mesh(run.mesh):
            logits = np.asarray(jax.device_get(forward(run.params, batch)))
        names = run.label_names()
        out = []
        for i, text in enumerate(texts):
            row = {"text": text} if pairs is None else {"text": text, "text_pair": pairs[i]}
            if self.num_labels == 1:
                row["score"] = float(logits[i, 0])
            else:
                p = np.exp(logits[i] - logits[i].max())
                p /= p.sum()
                row["label"] = names[int(p.argmax())]
                row["probs"] = {name: float(v) for name, v in zip(names, p, strict=True)}
            out.append(row)
        return out


def separated_pairs(tokenizer):
    """``tokenizer``, made to put its end-of-text token between a pair's texts when it would
    put nothing there: GPT-2's joins them into one text, where the second's first word could
    even merge with the first's last. ``A <|endoftext|> B`` is a document boundary as GPT-2
    saw them in pretraining, and the last token, which the classifier reads, stays B's. The
    template is part of the tokenizer (W/tokenizer, the export's), so predict and transformers
    make the same pairs; a tokenizer that already separates them is returned as it is."""
    single = tokenizer("a")["input_ids"] + tokenizer("b")["input_ids"]
    if tokenizer("a", "b")["input_ids"] != single:
        return tokenizer  # [SEP], </s></s>, or a separator given before
    eos, eos_id = tokenizer.eos_token, tokenizer.eos_token_id
    if eos is None or eos_id is None:
        raise DataError(
            "The tokenizer joins a text and its pair with nothing between them and has no "
            "end-of-text token to put there; give data.tokenizer one with an eos_token, or set "
            "--config.data.text_pair_field=''."
        )
    from tokenizers import processors

    template = processors.TemplateProcessing(
        single="$A", pair=f"$A:0 {eos}:0 $B:1", special_tokens=[(eos, eos_id)]
    )
    backend = tokenizer.backend_tokenizer
    kept = backend.post_processor  # GPT-2's ByteLevel (offsets) stays in front
    if kept is not None and not isinstance(kept, processors.TemplateProcessing):
        template = processors.Sequence([kept, template])
    backend.post_processor = template
    return tokenizer


def _check_last_tokens(ex, records, pad: int, tokenizer) -> None:
    """Stop at the first example whose last token is the pad id: a decoder's classifier reads
    the last token, and transformers' GPT2ForSequenceClassification takes the last one that
    is not padding, so an export would read another one (a GPT-2 text that ends with
    ``<|endoftext|>``, its pad token)."""
    for record, ids in zip(records, ex.ids, strict=True):
        if len(ids) and ids[-1] == pad:
            raise DataError(
                f"{sources.origin(record)} ends (within data.max_seq_length) with the pad token "
                f"{tokenizer.pad_token!r}, which a classifier that reads the last token (GPT-2's, "
                "and transformers') cannot tell from padding; remove it from that record."
            )


def bucketed(cfg, encoded: dict, layout, eval_layout, pad: int, make=classify.make_batch) -> dict:
    """Length-bucketed batches, one example a row: TaskData's train and evaluation fields
    (``make``: rows of examples, ``classify.make_batch``'s signature)."""
    d = cfg.data
    lengths = np.array([len(x) for x in encoded["train"].ids])
    sizes = classify.buckets(lengths, d.max_seq_length, d.length_buckets)
    dataset, spe = classify.train_dataset(
        encoded["train"], sizes, layout, cfg.train.seed, pad, make
    )

    def batches(name):
        if name in encoded:
            return list(classify.eval_batches(encoded[name], sizes, eval_layout, pad, make))

    return {
        "train": dataset,
        "eval": batches("validation"),
        "test": batches("test"),
        "steps_per_epoch": spe,
        "lengths": sizes,
        "summary": f"length buckets {sizes}",
    }


def packed_batches(cfg, encoded: dict, layout, eval_layout, pad: int, make=packing.make_batch):
    """Packed rows (``data/packing.py``) sized for every batch of the run: TaskData's train and
    evaluation fields and the layout its batches take (``make``: rows of examples,
    ``packing.make_batch``'s signature)."""
    train = encoded["train"]
    lengths = np.array([len(x) for x in train.ids])
    spe = -(-len(train) // layout.global_rows)
    plan = packing.TrainRows(lengths, spe, layout.accum, cfg.data.max_seq_length, cfg.train.seed)
    evals = {
        k: packing.split_rows(np.array([len(x) for x in encoded[k].ids]), cfg.data.max_seq_length)
        for k in ("validation", "test")
        if k in encoded
    }
    train_shape = plan.shape(layout.shards)
    slots = max([train_shape.slots] + [max(map(len, rows)) for rows in evals.values()])
    shape = packing.Shape(train_shape.rows, slots)
    layout = layout.with_rows(shape.rows)
    eval_layout = layout.with_rows(shape.rows, accum=1)

    def batches(name):
        if name in evals:
            ex, rows = encoded[name], evals[name]
            row_len = cfg.data.max_seq_length
            found = packing.eval_batches(ex, rows, shape, eval_layout, row_len, pad, make)
            return list(found)

    real = lengths.sum() / (spe * layout.accum * shape.rows * cfg.data.max_seq_length)
    return {
        "train": packing.train_dataset(train, plan, shape, layout, pad, make),
        "eval": batches("validation"),
        "test": batches("test"),
        "steps_per_epoch": spe,
        "layout": layout,
        "summary": (
            f"packed {shape.rows} rows of {cfg.data.max_seq_length} a microbatch, up to "
            f"{shape.slots} examples a row ({real:.0%} of positions real)"
        ),
    }


def _label_names(labels_file: pathlib.Path | None, train, field, num_labels):
    """String label names: those saved with the run (``labels_file``, given on resume and when
    reading a workdir back), else from training data (``num_labels=None``: as many as it has)."""
    if labels_file is not None and labels_file.exists():
        return json.loads(labels_file.read_text())["names"]
    return classify.label_names(train, field, num_labels)
