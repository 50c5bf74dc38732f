"""Token classification (``task="token_classification"``): a tag for every word, such as named
entities in BIO (``B-PER``, ``I-PER``, ``O``), on BERT, RoBERTa and ModernBERT.

Data: CoNLL column files (``.conll``, or ``.txt`` here: word first, tag last, a blank line between
sentences), JSON/JSONL/CSV/Parquet records or ``hf:`` datasets with a list of words
(``data.tokens_field``) and one of tags (``data.tags_field``; a hub dataset's class ids are read
as its class names), and built-ins (``builtin:peoples_daily_ner``, ``builtin:conll2003``). The
tag set is read from the training split (``data/tagging.py``), kept in ``W/labels.json`` and
exported as ``id2label``; a checkpoint that has this head already brings its own.

Words are aligned to subword pieces inside: the first piece of a word is trained and scored
(``data.label_all_subwords``: every piece). Scores are seqeval's entity-level precision, recall
and F1 (micro, and F1 per entity type) and the accuracy over words, on every word of the split
(words cut off by ``data.max_seq_length`` count as ``O``). Rows are packed (``data.packing``) as
classification's are, or bucketed by length.
"""

from __future__ import annotations

import dataclasses
import json
import logging

import jax
import numpy as np

from ptft_jax import losses, sharding
from ptft_jax.data import coverage, sources, tagging
from ptft_jax.data.tokenize import pad_id
from ptft_jax.errors import ConfigError, DataError
from ptft_jax.tasks.base import (
    EvalContext,
    Task,
    TaskData,
    check_best_metric,
    inputs,
    spec_of,
    split_from_data,
)
from ptft_jax.tasks.classification import bucketed, packed_batches

log = logging.getLogger(__name__)
METRICS = ("f1", "precision", "recall", "accuracy")


@dataclasses.dataclass
class TaggedData(TaskData):
    """TaskData with the tagged examples its evaluation splits score, and the label count."""

    num_labels: int = 0
    eval_examples: tagging.TaggedExamples | None = None
    test_examples: tagging.TaggedExamples | None = None


@dataclasses.dataclass(frozen=True)
class TokenClassification(Task):
    num_labels: int = 2
    seq_len: int = 128
    metric_for_best: str = ""
    packing: bool = False
    count_labels: bool = False  # a new head: the training split's tags decide the count
    label_names: tuple[str, ...] = ()  # the tags a checkpoint's head was trained with

    name = "token_classification"
    head = "token_classification"
    accuracy = "accuracy"
    weight_field = "weights"
    labelled = True
    sized_by_data = True

    @classmethod
    def from_config(cls, cfg) -> TokenClassification:
        d = cfg.data
        return cls(cfg.model.num_labels, d.max_seq_length, cfg.train.metric_for_best, d.packing)

    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        check_best_metric(cfg, METRICS, "token classification")
        if cfg.model.num_labels < 2:
            raise ConfigError(
                "model.num_labels must be at least 2 for token classification (O and one tag); "
                "drop --config.model.num_labels to take the training split's tag count."
            )

    def batch_spec(self) -> dict:
        """Rows of any bucket length up to ``seq_len`` with a label at every position; packed
        rows add positions."""
        length = (self.seq_len,)
        fields = {
            "input_ids": (length, "int32"),
            "attention_mask": (length, "int32"),
            "token_type_ids": (length, "int32"),
            "labels": (length, "int32"),
            "weights": (length, "float32"),
        }
        if self.packing:
            fields["position_ids"] = (length, "int32")
        return spec_of(fields)

    def best_metric(self) -> str:
        return self.metric_for_best or "f1"

    # --- Data.

    def data(self, cfg, get_tokenizer, layout, eval_layout, labels_file, extend=None):
        """Tagged sentences tokenized and aligned, in packed rows or length buckets."""
        d = cfg.data
        records = _splits(sources.load_records(d.source, conll=True), d.tokens_field)
        records["train"] = _subsample(records["train"], d.max_train_examples, cfg.train.seed)
        tagged = {}
        for split, rows in records.items():
            tagged[split] = tagging.sentences(rows, d.tokens_field, d.tags_field, split)
            tagging.check_bio(rows, tagged[split], split)
        names = self._names(labels_file, tagged["train"])
        for split, rows in records.items():
            tagging.check_known(rows, tagged[split], names, split)
        tokenizer = get_tokenizer([" ".join(words) for words, _ in tagged["train"]])
        encoded = {
            split: tagging.encode(rows, tokenizer, names, d.max_seq_length, d.label_all_subwords)
            for split, rows in tagged.items()
        }
        counts = {k: coverage.count_unknown(tokenizer, v.ids) for k, v in encoded.items()}
        coverage.report_unknown(tokenizer, counts, d.source)
        for split, ex in encoded.items():
            if ex.cut_words:
                total = sum(len(t) for t in ex.tags)
                log.warning(
                    "%d of %d words of the %s split are past data.max_seq_length=%d: they are "
                    "not trained on and score as predicted O; raise data.max_seq_length to keep "
                    "them",
                    ex.cut_words,
                    total,
                    split,
                    d.max_seq_length,
                )
        pad = pad_id(tokenizer)
        if self.packing:
            batched = packed_batches(
                cfg, encoded, layout, eval_layout, pad, make=tagging.make_packed
            )
        else:
            batched = bucketed(cfg, encoded, layout, eval_layout, pad, make=tagging.make_batch)
        counts = ", ".join(f"{k} {len(v)}" for k, v in encoded.items())
        return TaggedData(
            num_labels=len(names),
            tokenizer=tokenizer,
            label_names=names,
            eval_examples=encoded.get("validation"),
            test_examples=encoded.get("test"),
            summary=f"sentences: {counts}; tags {', '.join(names)}; {batched.pop('summary')}",
            **batched,
        )

    def _names(self, labels_file, train_tagged) -> list[str]:
        """The tag set: the checkpoint's (a head trained before, or a resumed run's), else the
        training split's; one sentence when a head of another size was asked for."""
        if labels_file is not None and labels_file.exists():
            return json.loads(labels_file.read_text())["names"]
        if self.label_names:
            return list(self.label_names)
        names = tagging.label_names(train_tagged)
        if not self.count_labels and len(names) != self.num_labels:
            raise DataError(
                f"The training split has {len(names)} tags ({', '.join(names[:8])}) but "
                f"model.num_labels is {self.num_labels}; set --config.model.num_labels="
                f"{len(names)}."
            )
        return names

    def split_data(self, cfg, tokenizer, layout, split: str, labels_file) -> TaskData:
        return split_from_data(self, cfg, tokenizer, layout, split, labels_file)

    # --- Inside the jitted steps.

    def forward(self, model, mb: dict, rngs):
        logits = model(*inputs(mb), rngs=rngs, **_positions(mb))
        return logits, losses.classification_sums(logits, mb["labels"], mb["weights"])

    def eval_outputs(self, model, mb: dict):
        """The logits ``[rows, L, C]``, for exact metrics on the host."""
        return model(*inputs(mb), **_positions(mb))

    def teacher_outputs(self, model, mb: dict):
        raise ConfigError("task=token_classification cannot be distilled yet; fine-tune it.")

    # --- On the host.

    def evaluate(self, ctx: EvalContext, params, split="validation", with_probe=False) -> dict:
        """Loss over the trained positions; seqeval's entity scores and word accuracy over
        every word of the split."""
        from seqeval import metrics as seqeval

        data = ctx.data
        batches = data.eval if split == "validation" else data.test
        ex = data.eval_examples if split == "validation" else data.test_examples
        names = np.asarray(data.label_names)
        predicted: list = [None] * len(ex)
        nll, count = 0.0, 0.0
        for batch, ids in batches:
            logits = jax.device_get(
                ctx.eval_step(params, sharding.to_global(batch, ctx.mesh, ctx.rows))
            )
            logits = np.asarray(logits).reshape(-1, *np.shape(logits)[-2:])
            for row, members in zip(logits, ids.reshape(len(logits), -1), strict=True):
                at = 0
                for e in members[members >= 0]:
                    z = row[at : at + len(ex.ids[e])]
                    at += len(ex.ids[e])
                    log_p = z - _logsumexp(z)
                    w = ex.weights[e]
                    nll -= float(np.sum(w * log_p[np.arange(len(z)), ex.labels[e]]))
                    count += float(w.sum())
                    tags = list(names[z[ex.firsts[e]].argmax(-1)])
                    predicted[e] = tags + [tagging.OUTSIDE] * (len(ex.tags[e]) - len(tags))
        gold = ex.tags
        out = {
            "loss": nll / max(count, 1.0),
            "f1": seqeval.f1_score(gold, predicted, zero_division=0),
            "precision": seqeval.precision_score(gold, predicted, zero_division=0),
            "recall": seqeval.recall_score(gold, predicted, zero_division=0),
            "accuracy": seqeval.accuracy_score(gold, predicted),
        }
        report = seqeval.classification_report(gold, predicted, output_dict=True, zero_division=0)
        for kind, row in sorted(report.items()):
            if not kind.endswith(" avg"):
                out[f"f1_{kind}"] = float(row["f1-score"])
        return {k: float(v) for k, v in out.items()}

    def predict(self, run, texts, pairs, top_k: int, forward) -> list[dict]:
        """The entities of each text: type, text, character span and score (the mean
        probability of its words' tags). Words are split as BERT's basic tokenizer splits
        them (``tagging.split_words``: letter and digit runs, CJK characters, punctuation)."""
        from seqeval.metrics.sequence_labeling import get_entities

        if pairs is not None:
            raise ConfigError("A token classification run tags single texts; drop --text_pair.")
        names = run.label_names()
        spans = [tagging.split_words(t) for t in texts]
        tagged = [([w for w, _, _ in s], [tagging.OUTSIDE] * len(s)) for s in spans]
        ex = tagging.encode(tagged, run.tokenizer, names, run.cfg.data.max_seq_length, False)
        width = max(len(x) for x in ex.ids)
        batch = tagging.make_batch(ex, np.arange(len(ex)), width, pad_id(run.tokenizer))
        batch = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        with jax.set_mesh(run.mesh):
            logits = np.asarray(jax.device_get(forward(run.params, batch)))
        out = []
        for i, text in enumerate(texts):
            z = logits[i, ex.firsts[i]]
            p = np.exp(z - _logsumexp(z))
            tags = [names[k] for k in p.argmax(-1)] + [tagging.OUTSIDE] * (len(spans[i]) - len(z))
            best = np.concatenate([p.max(-1), np.zeros(len(spans[i]) - len(z))])
            entities = []
            for kind, first, last in get_entities(tags):
                start, end = spans[i][first][1], spans[i][last][2]
                score = float(best[first : last + 1].mean())
                entities.append(
                    {"entity": kind, "text": text[start:end], "start": start, "end": end,
                     "score": score}
                )  # fmt: skip
            out.append({"text": text, "entities": entities})
        return out


def _positions(mb: dict) -> dict:
    """The model's keyword inputs of packed rows (nothing for one example a row)."""
    return {"position_ids_BxL": mb["position_ids"]} if "position_ids" in mb else {}


def _logsumexp(z: np.ndarray) -> np.ndarray:
    top = z.max(-1, keepdims=True)
    return top + np.log(np.exp(z - top).sum(-1, keepdims=True))


def _splits(records: dict, tokens_field: str) -> dict:
    """train/validation/test: a source with only a train split is cut by the project's rule
    (repeated sentences left out, with a line that counts them)."""
    if set(records) == {"train"}:
        rows = records["train"]
        cut = sources.split_labeled(rows, key=lambda r: tuple(r.get(tokens_field) or ()))
        kept = sum(map(len, cut.values()))
        if kept < len(rows):
            log.info(
                "%d of %d sentences repeat an earlier sentence and are left out (the 80/10/10 "
                "split keeps the first of each)",
                len(rows) - kept,
                len(rows),
            )
        if not all(cut.values()):
            raise DataError(
                f"The data has {kept} distinct sentences, too few to cut 80/10/10; add sentences "
                "or give train, validation and test files."
            )
        return cut
    if "validation" not in records:
        raise DataError(
            "The data has a train split but no validation split; add a validation file or give "
            "a single file to be split 80/10/10."
        )
    return dict(records)


def _subsample(records: list, n: int, seed: int) -> list:
    """A seeded subsample of ``n`` sentences in their order (all when ``n`` is 0)."""
    if n <= 0 or n >= len(records):
        return records
    chosen = np.sort(np.random.default_rng([seed, n]).permutation(len(records))[:n])
    log.info("training on %d of %d sentences (data.max_train_examples)", n, len(records))
    return [records[i] for i in chosen]
