"""README's "Adding a task" example, run for real: a task is one class (one file) plus one
registry line, and the whole stack (data, steps, sharding, checkpoints, evaluation, the
summary) takes it as it is. TokenCount regresses how many tokens a sentence has, as a share of
the sequence length, from the pooled [CLS] state, on the sentences of builtin:wiki_en."""

import dataclasses
import json

import jax.numpy as jnp
import pytest
from test_train import tiny_config

from ptft_jax import tasks
from ptft_jax.data import contrastive, pipeline, sources
from ptft_jax.data.builtin import cache_dir
from ptft_jax.tasks.base import Task, TaskData, spec_of, summed
from ptft_jax.train import run


@dataclasses.dataclass(frozen=True)
class TokenCount(Task):
    seq_len: int = 128

    name = "token_count"
    head = "classification"  # with model.num_labels=1: one score per text
    accuracy = "within_one"  # the share of sentences counted to within one token
    weight_field = "weights"

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.data.max_seq_length)

    def model_options(self):
        return {"add_pooling_layer": True, "next_sentence": False}

    def batch_spec(self):
        length = (self.seq_len,)
        fields = {"input_ids": (length, "int32"), "attention_mask": (length, "int32")}
        return spec_of({**fields, "weights": ((), "float32")})

    def data(self, cfg, get_tokenizer, layout, eval_layout, labels_file):
        records = sources.load_records(cfg.data.source)
        train_texts, eval_texts = pipeline.mlm_texts(cfg.data, records)
        tokenizer = get_tokenizer(train_texts)
        train, held_out = (
            contrastive.rows(cfg.data, texts, None, tokenizer, cache_dir())
            for texts in (train_texts, eval_texts)
        )
        dataset, per_epoch = contrastive.train_dataset(train, layout, cfg.train.seed)
        batches = contrastive.eval_batches(held_out, eval_layout, cfg.train.eval_batches)
        summary = f"{len(train)} train / {len(held_out)} eval sentences"
        return TaskData(tokenizer, dataset, list(batches), per_epoch, summary=summary)

    def forward(self, model, mb, rngs):
        mask, w = mb["attention_mask"], mb["weights"]
        score = model(mb["input_ids"], mask, jnp.zeros_like(mask), rngs=rngs)[:, 0]
        error = score - mask.sum(-1) / self.seq_len
        sums = {
            "loss_sum": jnp.sum(w * error**2),
            "correct_sum": jnp.sum(w * (jnp.abs(error) * self.seq_len < 1)),
            "weight_sum": jnp.sum(w),
        }
        return score, sums

    # totals, loss and step_metrics: Task's (loss_sum and correct_sum over the weight)

    def eval_outputs(self, model, mb):
        return self.forward(model, mb, None)[1]

    def evaluate(self, ctx, params, split="validation", with_probe=False):
        sums = summed(ctx.eval_step, params, ctx.data.eval, ctx.mesh, ctx.rows)
        weight = max(float(sums["weight_sum"]), 1.0)
        loss, hits = float(sums["loss_sum"]) / weight, float(sums["correct_sum"]) / weight
        return {"loss": loss, self.accuracy: hits}


@pytest.mark.slow
def test_a_new_task_is_one_class_and_one_registry_line(tmp_path, monkeypatch):
    monkeypatch.setitem(tasks.REGISTRY, "token_count", "test_toy_task:TokenCount")  # the line
    c = tiny_config(steps=60, eval_every=30, checkpoint_every=30)
    c.task = "token_count"
    c.model.num_labels = 1
    summary = run(c, tmp_path / "w")
    lines = (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()
    evals = [r for r in map(json.loads, lines) if r["split"] == "validation"]
    assert [r["step"] for r in evals] == [0, 30, 60]
    assert evals[-1]["loss"] < 0.5 * evals[0]["loss"], evals
    assert summary["eval_accuracy"] == evals[-1]["within_one"]
