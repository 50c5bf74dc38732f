"""Contrastive sentence embeddings (``task="contrastive"``, SimCSE): unsupervised (a sentence
and itself under other dropout masks) or supervised (``data.text_pair_field`` names each text's
positive); the rest of the batch is the negatives. The model is the encoder with mean pooling. With
``data.packing`` (the default) a batch holds the same examples without padding
(``data/contrastive.py``): both views of an example share a row, several examples a row.

Its evaluation adds a linear probe: the frozen embeddings of a labelled set's train split fit a
multinomial logistic regression (standardised features, L2-regularised, full-batch L-BFGS),
whose accuracy on the test split is ``probe_accuracy``. Deterministic: the same parameters
give the same number.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from ptft_jax import losses, sharding
from ptft_jax.data import contrastive, pipeline, sources
from ptft_jax.data.builtin import cache_dir
from ptft_jax.data.tokenize import pad_id
from ptft_jax.errors import ConfigError
from ptft_jax.tasks.base import EvalContext, Task, TaskData, packed, spec_of, summed


@dataclasses.dataclass(frozen=True)
class Contrastive(Task):
    temperature: float = 0.05
    seq_len: int = 128
    supervised: bool = False
    packing: bool = False

    name = "contrastive"
    head = "embedding"
    accuracy = "contrastive_accuracy"
    weight_field = "weights"

    @classmethod
    def from_config(cls, cfg) -> Contrastive:
        d = cfg.data
        return cls(cfg.train.temperature, d.max_seq_length, bool(d.text_pair_field), d.packing)

    @classmethod
    def check(cls, cfg) -> None:
        super().check(cfg)
        if cfg.train.grad_accum_steps != 1:
            raise ConfigError(
                "task=contrastive takes its negatives from the whole batch; set "
                "--config.train.grad_accum_steps=1 and use FSDP to fit a larger batch."
            )

    def batch_spec(self) -> dict:
        """Rows of ``seq_len``, or packed rows of ``2 * seq_len`` holding each example's two
        views (each at least ``[CLS] [SEP]``: at most ``seq_len`` views a row)."""
        if self.packing:
            row, views = (2 * self.seq_len,), (self.seq_len,)
            fields = {k: (row, "int32") for k in ("input_ids", "attention_mask", "position_ids")}
            fields |= {"cls_positions": (views, "int32")}
            return spec_of({**fields, "weights": ((self.seq_len // 2,), "float32")})
        length = (self.seq_len,)
        fields = {"input_ids": (length, "int32"), "attention_mask": (length, "int32")}
        if self.supervised:
            fields |= {
                "pair_input_ids": (length, "int32"),
                "pair_attention_mask": (length, "int32"),
            }
        return spec_of({**fields, "weights": ((), "float32")})

    # --- Data.

    def data(self, cfg, get_tokenizer, layout, eval_layout, labels_file) -> TaskData:
        """SimCSE rows: sentences of documents (unsupervised) or text/text_pair positives."""
        d, t = cfg.data, cfg.train
        fields, skip = (d.text_field, d.text_pair_field), d.get("skip_empty_texts", False)
        records = sources.load_records(d.source, fields=fields, skip_empty=skip)
        if not d.text_pair_field:
            train_texts, eval_texts = pipeline.mlm_texts(d, records)
            train_pairs = eval_pairs = None
        else:

            def texts(rows, field):
                return [sources.text_of(r, field) for r in rows[: d.max_documents or None]]

            a = texts(records["train"], d.text_field)
            b = texts(records["train"], d.text_pair_field)
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
        kind = "supervised pairs" if train_pairs else "sentences"
        summary = f"{len(train)} train / {len(held_out)} eval {kind}"
        if self.packing:
            built = _packed(cfg, train, held_out, layout, pad_id(tokenizer))
        else:
            dataset, spe = contrastive.train_dataset(train, layout, t.seed)
            evals = list(contrastive.eval_batches(held_out, eval_layout, t.eval_batches))
            real = np.mean(train.mask if train.pair_mask is None else [train.mask, train.pair_mask])
            built = dict(train=dataset, eval=evals, steps_per_epoch=spe)
            built["summary"] = f"one a row ({real:.0%} of positions real)"
        probe = None
        if t.probe_source:
            fields = (t.probe_text_field, t.probe_label_field)
            probe = contrastive.probe_sets(
                t.probe_source, fields, d, tokenizer, cache_dir(), t.probe_examples
            )
        summary += f"; {built.pop('summary')}"
        return TaskData(tokenizer=tokenizer, probe=probe, summary=summary, **built)

    def split_data(self, cfg, tokenizer, layout, split: str, labels_file) -> TaskData:
        raise ConfigError(
            "A contrastive run is evaluated while it trains (loss, probe_accuracy in "
            "metrics.jsonl); export it and fine-tune the encoder for a task to score it."
        )

    # --- Inside the jitted steps.

    def forward(self, model, mb: dict, rngs):
        if self.packing:  # example j of a row: its views are slots 2j and 2j + 1
            z_BxKxD = model(mb["input_ids"], mb["attention_mask"], rngs=rngs, **packed(mb))
            z_Nx2xD = z_BxKxD.reshape(-1, 2, z_BxKxD.shape[-1])
            weights_N = mb["weights"].reshape(-1)
            return z_Nx2xD, losses.contrastive_sums(z_Nx2xD, weights_N, self.temperature)
        # Both views of a row side by side, [B, 2, L] -> [2B, L]: each device keeps its rows.
        # Unsupervised, the second view is the same text under other dropout masks.
        views = {
            k: jnp.stack([mb[k], mb.get(f"pair_{k}", mb[k])], 1).reshape(-1, mb[k].shape[-1])
            for k in ("input_ids", "attention_mask")
        }
        z_Bx2xD = model(views["input_ids"], views["attention_mask"], rngs=rngs).reshape(
            *mb["input_ids"].shape[:1], 2, -1
        )
        return z_Bx2xD, losses.contrastive_sums(z_Bx2xD, mb["weights"], self.temperature)

    def token_counts(self, batch: dict) -> tuple[int, int]:
        """Both views' tokens: packed rows hold both, unpacked ones are read twice."""
        if self.packing:
            return super().token_counts(batch)
        second = batch.get("pair_attention_mask", batch["attention_mask"])
        real = int((batch["attention_mask"] > 0).sum() + (second > 0).sum())
        return real, 2 * batch["input_ids"].size

    def eval_outputs(self, model, mb: dict) -> dict:
        # Evaluation keeps dropout (fixed masks): without it both views are one.
        return self.forward(model, mb, nnx.Rngs(dropout=jax.random.key(0)))[1]

    # --- On the host.

    def evaluate(self, ctx: EvalContext, params, split="validation", with_probe=False) -> dict:
        """InfoNCE loss and the share of rows whose positive ranks first, within each batch;
        with ``with_probe`` (before and after training) the linear probe's accuracy."""
        sums = summed(ctx.eval_step, params, ctx.data.eval, ctx.mesh, ctx.rows)
        weight = max(float(sums["weight_sum"]), 1.0)
        out = {
            "loss": float(sums["loss_sum"]) / weight,
            "contrastive_accuracy": float(sums["correct_sum"]) / weight,
        }
        if with_probe and ctx.data.probe:
            out["probe_accuracy"] = probe_accuracy(ctx, params, ctx.data.probe)
        return out


def _packed(cfg, train, held_out, layout, pad: int) -> dict:
    """Packed rows (``data/contrastive.py``) sized for every batch of the run: TaskData's
    train and evaluation fields and the layout its batches take."""
    d, t = cfg.data, cfg.train
    contrastive.check_batch_size(train, layout.global_rows)
    plan = contrastive.PackedPlan(train, layout.global_rows, t.seed, 2 * d.max_seq_length)
    eval_plan = contrastive.PackedPlan(held_out, layout.global_rows, t.seed, plan.row_len)
    groups = contrastive.packed_eval_groups(eval_plan, t.eval_batches)
    batches = t.epochs * plan.spe if t.epochs else t.steps
    shape, real = contrastive.packed_shape(plan, batches, groups, layout.shards)
    layout = layout.with_rows(shape.rows)
    eval_layout = layout.with_rows(shape.rows, accum=1)
    return {
        "train": contrastive.packed_train_dataset(plan, shape, layout, pad),
        "eval": list(contrastive.packed_eval_batches(eval_plan, groups, shape, eval_layout, pad)),
        "steps_per_epoch": plan.spe,
        "layout": layout,
        "summary": (
            f"packed {shape.rows} rows of {plan.row_len} a batch, up to {shape.slots} examples "
            f"(both views) a row ({real:.0%} of positions real)"
        ),
    }


def embed(forward, params, data, mesh, layout) -> np.ndarray:
    """Sentence embeddings ``[N, D]`` of Rows ``data`` (``forward(params, batch)`` returns one
    vector per row of the global batch)."""
    g = layout.global_rows
    out = []
    for b in range(-(-len(data) // g)):
        rows = layout.rows()
        idx = np.minimum(b * g + rows.reshape(-1), len(data) - 1)
        batch = {
            "input_ids": data.ids[idx].reshape(*rows.shape, -1),
            "attention_mask": data.mask[idx].reshape(*rows.shape, -1),
        }
        out.append(np.asarray(jax.device_get(forward(params, sharding.to_global(batch, mesh, g)))))
    return np.concatenate(out)[: len(data)]


def logistic_regression(x_tr, y_tr, x_te, y_te, l2: float = 1e-3, iters: int = 200) -> float:
    """Test accuracy of an L2-regularised softmax regression fitted on (x_tr, y_tr)."""
    mean, std = x_tr.mean(0), x_tr.std(0) + 1e-6
    x_tr, x_te = (x_tr - mean) / std, (x_te - mean) / std
    classes = int(max(y_tr.max(), y_te.max())) + 1
    keep = y_te >= 0  # a test label the train split never had cannot be predicted: it counts wrong
    x_tr, x_te = jnp.asarray(x_tr, jnp.float32), jnp.asarray(x_te, jnp.float32)

    def loss(w):
        logits = x_tr @ w["w"] + w["b"]
        xent = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.asarray(y_tr))
        return xent.mean() + l2 * jnp.sum(w["w"] ** 2)

    @jax.jit
    def fit():
        w0 = {"w": jnp.zeros((x_tr.shape[1], classes)), "b": jnp.zeros((classes,))}
        opt = optax.lbfgs()
        value_and_grad = optax.value_and_grad_from_state(loss)

        def body(carry, _):
            w, state = carry
            value, grad = value_and_grad(w, state=state)
            updates, state = opt.update(grad, state, w, value=value, grad=grad, value_fn=loss)
            return (optax.apply_updates(w, updates), state), None

        (w, _), _ = jax.lax.scan(body, (w0, opt.init(w0)), None, length=iters)
        return w

    w = fit()
    pred = np.asarray(jnp.argmax(x_te @ w["w"] + w["b"], axis=-1))
    return float(np.mean((pred == y_te) & keep))


def probe_accuracy(ctx: EvalContext, params, probe: dict) -> float:
    """Probe accuracy of ``params`` on ``probe`` (``{"train": Rows, "test": Rows}``)."""
    x_tr, x_te = (embed(ctx.forward, params, probe[k], ctx.mesh, ctx.layout) for k in probe)
    return logistic_regression(x_tr, probe["train"].labels, x_te, probe["test"].labels)
