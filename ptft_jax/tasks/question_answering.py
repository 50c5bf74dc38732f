"""Extractive question answering (``task="question_answering"``), SQuAD style, on BERT, RoBERTa
and ModernBERT: the model points at the first and last token of the answer in the context.

Data: SQuAD JSON files (``train.json``, ``dev.json``), JSON lines or ``hf:`` datasets in the hub's
``squad`` layout (``data.question_field``, ``data.context_field``, ``data.answers_field``), or
``builtin:squad``. A context longer than the model is cut into windows that overlap by
``data.doc_stride`` tokens (``data/squad.py``); rows are one window each, in length buckets.

Scoring decodes each question over all of its windows: the ``data.n_best`` highest start and end
logits, pairs inside the context with at most ``data.max_answer_length`` tokens, the best sum
wins; with ``data.version_2_with_negative`` "no answer" wins when pointing at ``[CLS]`` scores
higher (SQuAD v2). Exact match and F1 are SQuAD's official ones (``scores.squad_metrics``).
"""

from __future__ import annotations

import dataclasses
import logging

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ptft_jax import scores, sharding
from ptft_jax.data import coverage, sources, squad
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
from ptft_jax.tasks.classification import bucketed

log = logging.getLogger(__name__)
METRICS = ("f1", "exact_match")


@dataclasses.dataclass
class AnswerData(TaskData):
    """TaskData with each evaluation split's questions and windows."""

    eval_split: tuple | None = None  # (contexts, gold answer texts, Windows)
    test_split: tuple | None = None


@dataclasses.dataclass(frozen=True)
class QuestionAnswering(Task):
    seq_len: int = 384
    metric_for_best: str = ""
    max_answer_length: int = 30
    n_best: int = 20
    with_negative: bool = False

    name = "question_answering"
    head = "question_answering"
    accuracy = "accuracy"  # windows whose start and end are both right
    weight_field = "weights"

    @classmethod
    def from_config(cls, cfg) -> QuestionAnswering:
        d = cfg.data
        return cls(
            d.max_seq_length, cfg.train.metric_for_best, d.max_answer_length, d.n_best,
            d.version_2_with_negative,
        )  # fmt: skip

    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        check_best_metric(cfg, METRICS, "question answering")
        if cfg.model.num_labels != 2:
            raise ConfigError(
                "question answering points at a start and an end (model.num_labels=2); drop "
                "--config.model.num_labels."
            )
        try:
            squad.check_stride(cfg.data)
        except DataError as e:
            raise ConfigError(str(e)) from None
        if cfg.data.max_answer_length < 1 or cfg.data.n_best < 1:
            raise ConfigError("data.max_answer_length and data.n_best must be at least 1.")

    def batch_spec(self) -> dict:
        length = (self.seq_len,)
        return spec_of(
            {
                "input_ids": (length, "int32"),
                "attention_mask": (length, "int32"),
                "token_type_ids": (length, "int32"),
                "start_positions": ((), "int32"),
                "end_positions": ((), "int32"),
                "weights": ((), "float32"),
            }
        )

    def best_metric(self) -> str:
        return self.metric_for_best or "f1"

    # --- Data.

    def data(self, cfg, get_tokenizer, layout, eval_layout, labels_file, extend=None):
        """Questions and contexts in windows, one a row, in length buckets."""
        d = cfg.data
        records = _splits(sources.load_records(d.source), d.context_field)
        if d.max_train_examples > 0 and d.max_train_examples < len(records["train"]):
            n, rows = d.max_train_examples, records["train"]
            keep = np.sort(np.random.default_rng([cfg.train.seed, n]).permutation(len(rows))[:n])
            records["train"] = [rows[i] for i in keep]
            log.info("training on %d of %d questions (data.max_train_examples)", n, len(rows))
        for rows in records.values():
            squad.check_answers(
                rows, d.question_field, d.context_field, d.answers_field,
                d.version_2_with_negative,
            )  # fmt: skip
        train = records["train"]
        contexts = list(dict.fromkeys(r[d.context_field] for r in train))
        tokenizer = get_tokenizer(contexts + [r[d.question_field] for r in train])
        encoded = {split: squad.windows(rows, tokenizer, d) for split, rows in records.items()}
        counts = {k: coverage.count_unknown(tokenizer, v.ids) for k, v in encoded.items()}
        coverage.report_unknown(tokenizer, counts, d.source)
        inside = int(np.sum(encoded["train"].ends > 0))
        batched = bucketed(cfg, encoded, layout, eval_layout, pad_id(tokenizer), squad.make_batch)
        summary = ", ".join(f"{k} {len(records[k])} ({len(v)} windows)" for k, v in encoded.items())
        return AnswerData(
            tokenizer=tokenizer,
            eval_split=_scored(records, encoded, "validation", d),
            test_split=_scored(records, encoded, "test", d),
            summary=(
                f"questions: {summary}; {inside} training windows hold their answer; "
                f"{batched.pop('summary')}"
            ),
            **batched,
        )

    def split_data(self, cfg, tokenizer, layout, split: str, labels_file) -> TaskData:
        return split_from_data(self, cfg, tokenizer, layout, split, labels_file)

    # --- Inside the jitted steps.

    def forward(self, model, mb: dict, rngs):
        logits = _masked(model(*inputs(mb), rngs=rngs), mb["attention_mask"])
        start, end = logits[..., 0], logits[..., 1]
        ce = optax.softmax_cross_entropy_with_integer_labels
        loss = (ce(start, mb["start_positions"]) + ce(end, mb["end_positions"])) / 2
        right = (jnp.argmax(start, -1) == mb["start_positions"]) & (
            jnp.argmax(end, -1) == mb["end_positions"]
        )
        w = mb["weights"]
        sums = {
            "loss_sum": jnp.sum(loss * w),
            "correct_sum": jnp.sum(right.astype(jnp.float32) * w),
            "weight_sum": jnp.sum(w),
        }
        return logits, sums

    def eval_outputs(self, model, mb: dict):
        """Start and end logits ``[rows, L, 2]`` (padding at -1e9), decoded on the host."""
        return _masked(model(*inputs(mb)), mb["attention_mask"])

    def teacher_outputs(self, model, mb: dict):
        raise ConfigError("task=question_answering cannot be distilled yet; fine-tune it.")

    # --- On the host.

    def evaluate(self, ctx: EvalContext, params, split="validation", with_probe=False) -> dict:
        """The loss over windows, and SQuAD's exact match and F1 over questions."""
        data = ctx.data
        batches = data.eval if split == "validation" else data.test
        contexts, gold, win = data.eval_split if split == "validation" else data.test_split
        logits: list = [None] * len(win)
        for batch, idx in batches:
            out = jax.device_get(
                ctx.eval_step(params, sharding.to_global(batch, ctx.mesh, ctx.rows))
            )
            out = np.asarray(out).reshape(-1, *np.shape(out)[-2:])
            for row, i in zip(out, idx, strict=True):
                if i >= 0:
                    logits[i] = row[: len(win.ids[i])]
        losses, right = [], []
        for i, z in enumerate(logits):
            log_p = z - _logsumexp(z, 0)
            losses.append(-(log_p[win.starts[i], 0] + log_p[win.ends[i], 1]) / 2)
            right.append(z[:, 0].argmax() == win.starts[i] and z[:, 1].argmax() == win.ends[i])
        best = self.spans(win, logits, len(contexts))
        answers = [c[a:b] if a >= 0 else "" for c, (_, a, b) in zip(contexts, best, strict=True)]
        found = scores.squad_metrics(answers, gold)
        return {"loss": float(np.mean(losses)), **found, "accuracy": float(np.mean(right))}

    def spans(self, win: squad.Windows, logits, count: int) -> list[tuple[float, int, int]]:
        """``(score, first char, end char)`` of each question's answer ((score, -1, -1): none)."""
        best = [(-np.inf, -1, -1)] * count
        null = [np.inf] * count
        for i, z in enumerate(logits):
            e, offsets = win.example[i], win.offsets[i]
            null[e] = min(null[e], float(z[0, 0] + z[0, 1]))
            starts = np.argsort(-z[:, 0])[: self.n_best]
            ends = np.argsort(-z[:, 1])[: self.n_best]
            for s in starts:
                for t in ends:
                    if offsets[s, 0] < 0 or offsets[t, 0] < 0 or t < s:
                        continue
                    if t - s + 1 > self.max_answer_length:
                        continue
                    score = float(z[s, 0] + z[t, 1])
                    if score > best[e][0]:
                        best[e] = (score, int(offsets[s, 0]), int(offsets[t, 1]))
        if self.with_negative:
            best = [b if b[0] > n else (n, -1, -1) for b, n in zip(best, null, strict=True)]
        return best

    def predict(self, run, texts, pairs, top_k: int, forward) -> list[dict]:
        """The answer to each question (``texts``) in its context (``pairs``): its text,
        character span and score (the softmax probability of its start times its end's, in its
        window)."""
        if pairs is None:
            raise ConfigError('Give each question its context: --question "..." --context "...".')
        d = run.cfg.data
        records = [
            {
                d.question_field: q,
                d.context_field: c,
                d.answers_field: {"text": [], "answer_start": []},
            }
            for q, c in zip(texts, pairs, strict=True)
        ]
        win = squad.windows(records, run.tokenizer, d)
        width = max(len(x) for x in win.ids)
        batch = squad.make_batch(win, np.arange(len(win)), width, pad_id(run.tokenizer))
        batch = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        with jax.set_mesh(run.mesh):
            out = np.asarray(jax.device_get(forward(run.params, batch)))
        mask = batch["attention_mask"][..., None] > 0
        logits = [np.where(mask[i], out[i], -1e9)[: len(win.ids[i])] for i in range(len(win))]
        rows = []
        for e, (score, start, end) in enumerate(self.spans(win, logits, len(records))):
            found = {"question": texts[e], "answer": "", "start": None, "end": None}
            if start >= 0:
                # the probability of the chosen start and end, in the window they came from
                z = [lg for i, lg in enumerate(logits) if win.example[i] == e]
                top = max(float(np.max(g[:, 0]) + np.max(g[:, 1])) for g in z)
                norm = max(float(_logsumexp(g[:, 0], 0) + _logsumexp(g[:, 1], 0)) for g in z)
                found.update(answer=pairs[e][start:end], start=start, end=end)
                found["score"] = float(np.exp(min(score, top) - norm))
            rows.append(found)
        return rows


def _masked(logits_BxLx2, mask_BxL):
    return jnp.where((mask_BxL > 0)[..., None], logits_BxLx2, -1e9)


def _logsumexp(z: np.ndarray, axis: int) -> np.ndarray:
    top = z.max(axis)
    return top + np.log(np.exp(z - np.expand_dims(top, axis)).sum(axis))


def _scored(records: dict, encoded: dict, split: str, d) -> tuple | None:
    """What scoring ``split`` reads: its contexts, gold answer texts and windows."""
    if split not in records:
        return None
    rows = records[split]
    contexts = [r[d.context_field] for r in rows]
    return contexts, [r[d.answers_field]["text"] for r in rows], encoded[split]


def _splits(records: dict, context_field: str) -> dict:
    """train/validation/test: a source with only a train split is cut 80/10/10 by context (the
    one rule's permutation of the distinct contexts), so no context is on two sides."""
    if set(records) == {"train"}:
        rows = records["train"]
        groups = list(dict.fromkeys(str(r.get(context_field)) for r in rows))
        cut = sources.split_labeled([{"text": g} for g in groups])
        side = {g["text"]: split for split, chosen in cut.items() for g in chosen}
        out = {
            split: [r for r in rows if side[str(r.get(context_field))] == split] for split in cut
        }
        if not all(out.values()):
            raise DataError(
                f"The data has {len(groups)} distinct contexts, too few to cut 80/10/10; add "
                "questions on other contexts or give train, validation and test files."
            )
        return out
    if "validation" not in records:
        raise DataError(
            "The data has a train split but no validation split; add a validation file (for "
            "SQuAD: dev.json) or give a single file to be split 80/10/10 by context."
        )
    return dict(records)
