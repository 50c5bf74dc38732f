"""Fine-tune MiniLM-L6 on a classification task with ptft_jax and with HF ``Trainer``, side by side.

    python benchmarks/finetune_vs_hf.py --task mr|bbc [--systems ptft_jax,hf_trainer]
        [--max_train N] [--seed S] [--out results.json] [--workdir DIR]

Both systems start from ``builtin:minilm_l6`` (sentence-transformers/all-MiniLM-L6-v2, a bare
``BertModel``; the classifier head starts fresh) and use the same hyperparameters (``HPARAMS``):
AdamW, linear warmup over 10% of the steps then linear decay, weight decay 0.01, batch 32, seed 0.
Each system runs in its own process, one after the other:

* ``ptft_jax``: ``python -m ptft_jax.train --config configs/minilm_<task>.py --workdir
  DIR/ptft_jax_<task>`` (the folder is emptied first); results from ``eval_test.json``,
  per-epoch validation accuracy from the ``split == "validation"`` rows of ``metrics.jsonl``.
* ``hf_trainer``: this script again with ``--_run hf_trainer`` (PyTorch on the CPU,
  ``BertForSequenceClassification`` + ``Trainer``, dynamic padding); needs ``torch`` and
  ``accelerate>=1.1.0`` besides ``transformers``.

Timing. ``total_wall_s`` is the wall time of the system's process as seen from here (interpreter
start, imports, model and data loading, training, test prediction), the same for both.
``train_wall_s`` is ``trainer.train()`` alone for HF (it includes the per-epoch validation
passes); ptft_jax's training loop cannot be timed from outside, so its ``train_wall_s`` is its
total wall time (``train_wall_is_total``), which includes JAX compilation. ``speedup_train_wall``
(HF / ours) therefore understates ptft_jax's speed, never overstates it.

Metrics are computed here with numpy: accuracy, and F1 of class 1 for two labels or the
unweighted mean of per-class F1 over all labels otherwise (F1 = 2TP / (2TP + FP + FN), 0 when
that is 0/0). ``--max_train N`` keeps the first N training records (for smoke runs); ``--seed S``
sets both systems' seed (data order, dropout, the fresh head), for comparisons over seeds.
Subprocess logs go to stderr; stdout carries only the table and the JSON result.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SYSTEMS = ("ptft_jax", "hf_trainer")
_COMMON = dict(
    learning_rate=5e-5,
    batch_size=32,
    eval_batch_size=64,
    warmup_ratio=0.1,
    weight_decay=0.01,
    optimizer="adamw",
    schedule="linear",
    seed=0,
)
HPARAMS = {
    "mr": dict(_COMMON, source="builtin:mr", num_labels=2, max_length=64, epochs=3),
    "bbc": dict(_COMMON, source="builtin:bbc", num_labels=5, max_length=256, epochs=2),
}
MODEL = "builtin:minilm_l6"


def classification_metrics(labels, preds, num_labels: int) -> dict:
    """Accuracy and F1 (class 1 for two labels, macro over ``range(num_labels)`` otherwise)."""
    import numpy as np

    labels, preds = np.asarray(labels), np.asarray(preds)

    def f1(c: int) -> float:
        tp = int(np.sum((preds == c) & (labels == c)))
        fp = int(np.sum((preds == c) & (labels != c)))
        fn = int(np.sum((preds != c) & (labels == c)))
        return 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0

    f1_value = f1(1) if num_labels == 2 else float(np.mean([f1(c) for c in range(num_labels)]))
    return {"accuracy": float(np.mean(preds == labels)), "f1": float(f1_value)}


def load_splits(task: str, max_train: int | None) -> dict[str, list[dict]]:
    from ptft_jax.data.sources import load_records

    hp = HPARAMS[task]
    splits = load_records(hp["source"])
    if max_train is not None:
        splits["train"] = splits["train"][:max_train]
    # Built-in labels are names; class ids are their sorted order, as ptft_jax numbers them.
    names = sorted({r["label"] for r in splits["train"]})
    if len(names) != hp["num_labels"]:
        raise SystemExit(f"{task} has {len(names)} labels in training, not {hp['num_labels']}")
    return {
        name: [{**r, "label": names.index(r["label"])} for r in records]
        for name, records in splits.items()
    }


# --- hf_trainer: runs inside its own process (``--_run hf_trainer``).


def run_hf_trainer(task: str, max_train: int | None, workdir: pathlib.Path) -> dict:
    t_start = time.time()
    import datasets
    import numpy as np
    import torch
    import transformers
    from transformers import (
        BertForSequenceClassification,
        BertTokenizerFast,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from ptft_jax.hf import resolve

    hp = HPARAMS[task]
    folder = resolve(MODEL)
    splits = load_splits(task, max_train)
    tokenizer = BertTokenizerFast.from_pretrained(folder)

    def encode(records: list[dict]) -> datasets.Dataset:
        ds = datasets.Dataset.from_list([{"text": r["text"], "label": r["label"]} for r in records])
        return ds.map(
            lambda b: tokenizer(b["text"], truncation=True, max_length=hp["max_length"]),
            batched=True,
            remove_columns=["text"],
        )

    data = {name: encode(splits[name]) for name in ("train", "validation", "test")}

    transformers.set_seed(hp["seed"])  # before the fresh classifier head is initialised
    model = BertForSequenceClassification.from_pretrained(folder, num_labels=hp["num_labels"])

    def compute_metrics(eval_pred) -> dict:
        logits, labels = eval_pred
        return classification_metrics(labels, np.argmax(logits, -1), hp["num_labels"])

    # transformers 5 has no ``warmup_ratio``: a float ``warmup_steps`` in [0, 1) is the ratio.
    args = TrainingArguments(
        output_dir=str(workdir),
        per_device_train_batch_size=hp["batch_size"],
        per_device_eval_batch_size=hp["eval_batch_size"],
        learning_rate=hp["learning_rate"],
        num_train_epochs=hp["epochs"],
        warmup_steps=hp["warmup_ratio"],
        weight_decay=hp["weight_decay"],
        lr_scheduler_type=hp["schedule"],
        eval_strategy="epoch",
        save_strategy="no",
        logging_strategy="epoch",
        report_to=[],
        seed=hp["seed"],
        dataloader_num_workers=0,
        use_cpu=True,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=data["train"],
        eval_dataset=data["validation"],
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
    )
    t0 = time.time()
    train_output = trainer.train()
    train_wall_s = time.time() - t0

    prediction = trainer.predict(data["test"])
    test = classification_metrics(
        data["test"]["label"], np.argmax(prediction.predictions, -1), hp["num_labels"]
    )
    history = trainer.state.log_history
    return {
        "system": "hf_trainer",
        "test_accuracy": test["accuracy"],
        "test_f1": test["f1"],
        "train_wall_s": train_wall_s,
        "inprocess_wall_s": time.time() - t_start,
        "val_accuracy_per_epoch": [h["eval_accuracy"] for h in history if "eval_accuracy" in h],
        "train_loss_per_epoch": [h["loss"] for h in history if "loss" in h],
        "train_examples": len(data["train"]),
        "steps": train_output.global_step,
        "optim": getattr(args.optim, "value", str(args.optim)),
        "torch_threads": torch.get_num_threads(),
        "versions": {"transformers": transformers.__version__, "torch": torch.__version__},
    }


# --- The driver: one subprocess per system.


def _stream(cmd: list[str]) -> tuple[int, float, str | None]:
    """Runs ``cmd`` from the repository root, its output to our stderr; (rc, wall s, done line)."""
    print("$ " + " ".join(cmd), file=sys.stderr, flush=True)
    done = None
    t0 = time.time()
    with subprocess.Popen(
        cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    ) as proc:
        for line in proc.stdout:
            sys.stderr.write(line)
            if line.startswith("done:"):
                done = line.strip()
    return proc.returncode, time.time() - t0, done


def _fresh(path: pathlib.Path) -> pathlib.Path:
    if path.exists():
        print(f"removing the previous run in {path}", file=sys.stderr)
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def drive_hf_trainer(task: str, max_train: int | None, workdir: pathlib.Path) -> dict:
    import importlib.util

    missing = [m for m in ("torch", "accelerate") if importlib.util.find_spec(m) is None]
    if missing:  # transformers' Trainer needs accelerate>=1.1.0 for PyTorch
        need = "'torch' 'accelerate>=1.1.0'" if "torch" in missing else "'accelerate>=1.1.0'"
        return {
            "system": "hf_trainer",
            "error": f"{', '.join(missing)} missing: pip install {need}",
        }
    run_dir = _fresh(workdir / f"hf_trainer_{task}")
    result_file = run_dir / "result.json"
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--task", task]
    cmd += ["--_run", "hf_trainer", "--workdir", str(run_dir)]
    if max_train is not None:
        cmd += ["--max_train", str(max_train)]
    cmd += ["--seed", str(HPARAMS[task]["seed"])]
    rc, wall, _ = _stream(cmd)
    if rc != 0 or not result_file.exists():
        return {"system": "hf_trainer", "error": f"exit status {rc}, no {result_file}"}
    return {**json.loads(result_file.read_text()), "total_wall_s": wall}


def drive_ptft_jax(task: str, max_train: int | None, workdir: pathlib.Path) -> dict:
    config = ROOT / "configs" / f"minilm_{task}.py"
    if not config.exists():
        return {"system": "ptft_jax", "error": f"{config} does not exist"}
    run_dir = _fresh(workdir / f"ptft_jax_{task}")
    cmd = [sys.executable, "-m", "ptft_jax.train", "--config", str(config)]
    cmd += ["--workdir", str(run_dir)]
    if max_train is not None:
        cmd.append(f"--config.data.max_train_examples={max_train}")
    cmd.append(f"--config.train.seed={HPARAMS[task]['seed']}")
    rc, wall, done = _stream(cmd)
    eval_file = run_dir / "eval_test.json"
    if rc != 0 or not eval_file.exists():
        return {"system": "ptft_jax", "error": f"exit status {rc}, no {eval_file}"}
    test = json.loads(eval_file.read_text())
    val = []
    metrics_file = run_dir / "metrics.jsonl"
    if metrics_file.exists():
        for line in metrics_file.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:
                continue
            if row.get("split") == "validation" and "accuracy" in row:
                val.append(row["accuracy"])
    return {
        "system": "ptft_jax",
        "test_accuracy": test["accuracy"],
        "test_f1": test["f1"],
        "train_wall_s": wall,
        "train_wall_is_total": True,
        "total_wall_s": wall,
        "val_accuracy_per_epoch": val,
        "done_line": done,
    }


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(runs: list[dict]) -> str:
    lines = [
        f"{'system':<11} {'test_acc':>8} {'test_f1':>8} {'train_s':>8} {'total_s':>8}  val_acc"
    ]
    for r in runs:
        if "error" in r:
            lines.append(f"{r['system']:<11} FAILED: {r['error']}")
            continue
        val = " ".join(f"{v:.4f}" for v in r["val_accuracy_per_epoch"]) or "-"
        lines.append(
            f"{r['system']:<11} {_fmt(r['test_accuracy'], '8.4f')} {_fmt(r['test_f1'], '8.4f')} "
            f"{_fmt(r['train_wall_s'], '8.1f')} {_fmt(r['total_wall_s'], '8.1f')}  {val}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", choices=sorted(HPARAMS), required=True)
    parser.add_argument("--systems", default=",".join(SYSTEMS))
    parser.add_argument("--max_train", type=int, default=None, help="keep the first N train rows")
    parser.add_argument("--seed", type=int, default=0, help="both systems' seed")
    parser.add_argument("--out", type=pathlib.Path, default=None, help="also write the JSON here")
    parser.add_argument("--workdir", type=pathlib.Path, default=ROOT / "runs" / "finetune_vs_hf")
    parser.add_argument("--_run", choices=["hf_trainer"], default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.max_train is not None and args.max_train < 1:
        parser.error("--max_train must be at least 1")
    workdir = args.workdir.resolve()
    HPARAMS[args.task]["seed"] = args.seed

    if args._run == "hf_trainer":  # the child process
        result = run_hf_trainer(args.task, args.max_train, workdir)
        (workdir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        return 0

    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = sorted(set(systems) - set(SYSTEMS))
    if unknown or not systems:
        parser.error(f"--systems takes a comma-separated subset of {','.join(SYSTEMS)}")
    drivers = {"ptft_jax": drive_ptft_jax, "hf_trainer": drive_hf_trainer}
    runs = [drivers[s](args.task, args.max_train, workdir) for s in systems]

    by_name = {r["system"]: r for r in runs if "error" not in r}
    speedup = speedup_total = None
    if "hf_trainer" in by_name and "ptft_jax" in by_name:
        speedup = by_name["hf_trainer"]["train_wall_s"] / by_name["ptft_jax"]["train_wall_s"]
        speedup_total = by_name["hf_trainer"]["total_wall_s"] / by_name["ptft_jax"]["total_wall_s"]
    result = {
        "task": args.task,
        "runs": runs,
        "speedup_train_wall": speedup,
        "speedup_total_wall": speedup_total,
        "max_train": args.max_train,
        "hparams": HPARAMS[args.task],
        "model": MODEL,
    }
    print(table(runs))
    if speedup is not None:
        print(f"speedup_train_wall (hf / ptft_jax): {speedup:.2f}x")
        print(f"speedup_total_wall (hf / ptft_jax): {speedup_total:.2f}x")
    print(json.dumps(result))  # one line, the last on stdout
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
