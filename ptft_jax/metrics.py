"""Where numbers go: a progress bar, ``W/metrics.jsonl`` and TensorBoard (process 0 only)."""

from __future__ import annotations

import json
import math
import pathlib

import jax


def quiet_logs() -> None:
    """Warnings and errors only (Orbax's INFO lines drown the output), unless --verbosity."""
    from absl import flags
    from absl import logging as absl_logging

    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)


def mlm_eval_metrics(sums: dict) -> dict:
    """Loss, accuracy and perplexity from summed statistics over a whole split."""
    weight = max(float(sums["weight_sum"]), 1.0)
    loss = float(sums["loss_sum"]) / weight
    return {
        "loss": loss,
        "mlm_accuracy": float(sums["correct_sum"]) / weight,
        "perplexity": math.exp(min(loss, 50.0)),
    }


class Writer:
    """Appends metric rows to JSONL and TensorBoard and drives the progress bar."""

    def __init__(self, workdir: pathlib.Path, total_steps: int, start_step: int, resumed: bool):
        self.active = jax.process_index() == 0
        self._bar = self._jsonl = self._tb = None
        if not self.active:
            return
        from tensorboardX import SummaryWriter
        from tqdm import tqdm

        path = workdir / "metrics.jsonl"
        if resumed and path.exists():
            # Rows logged after the restored checkpoint will be logged again: drop them.
            rows = path.read_text(encoding="utf-8").splitlines(keepends=True)
            path.write_text("".join(r for r in rows if json.loads(r)["step"] <= start_step))
        self._jsonl = open(path, "a", encoding="utf-8")  # noqa: SIM115
        self._tb = SummaryWriter(str(workdir / "tensorboard"))
        self._bar = tqdm(
            total=total_steps, initial=start_step, desc="train", unit="step", dynamic_ncols=True
        )

    def write(self, step: int, split: str, metrics: dict) -> None:
        """One row ``{step, split, **metrics}``; train rows also update the progress bar."""
        if not self.active:
            return
        row = {"step": int(step), "split": split, **{k: float(v) for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        for key, value in metrics.items():
            self._tb.add_scalar(f"{split}/{key}", float(value), int(step))
        if split == "train":
            self._bar.set_postfix(
                loss=f"{row['loss']:.3f}", tok_s=f"{row.get('tokens_per_s', 0):,.0f}"
            )

    def advance(self, n: int = 1) -> None:
        """Move the progress bar by ``n`` steps."""
        if self.active:
            self._bar.update(n)

    def print(self, line: str) -> None:
        """A line above the progress bar."""
        if self.active:
            self._bar.write(line)

    def close(self) -> None:
        """Flush and close everything."""
        if self.active:
            self._bar.close()
            self._jsonl.close()
            self._tb.close()
