"""Where numbers go: a progress bar, ``W/metrics.jsonl`` and TensorBoard (process 0 only)."""

from __future__ import annotations

import json
import logging
import os
import pathlib

import jax


def quiet_logs() -> None:
    """Warnings and errors, and ptft_jax's own info lines (Orbax's INFO lines drown the output),
    unless --verbosity says otherwise."""
    from absl import flags
    from absl import logging as absl_logging

    if not flags.FLAGS["verbosity"].present:
        absl_logging.set_verbosity(absl_logging.WARNING)
        logging.getLogger("ptft_jax").setLevel(logging.INFO)  # our own info lines stay


def read_rows(path: pathlib.Path) -> list[dict]:
    """The complete rows of a metrics file (a line cut short by a crash is skipped)."""
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


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
        if path.exists():
            # Rows logged after the restored checkpoint (all rows of an attempt that died before
            # its first checkpoint) will be logged again: drop them, and a line a kill cut
            # short. The new file replaces the old in one rename, so a kill here loses nothing.
            kept = [r for r in read_rows(path) if resumed and r["step"] <= start_step]
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
            os.replace(tmp, path)
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
        else:  # evaluations get a line of their own above the bar
            numbers = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in metrics.items())
            self._bar.write(f"step {step} {split}: {numbers}")

    def advance(self, n: int = 1) -> None:
        """Move the progress bar by ``n`` steps."""
        if self.active:
            self._bar.update(n)

    def print(self, line: str) -> None:
        """A line above the progress bar."""
        if self.active:
            self._bar.write(line)

    def close(self) -> None:
        """Flush and close everything (again: nothing)."""
        if self.active:
            self.active = False
            self._bar.close()
            self._jsonl.close()
            self._tb.close()


def scalars(result: dict) -> dict:
    """The numeric entries of an evaluation (what metrics.jsonl and TensorBoard take)."""
    return {k: v for k, v in result.items() if isinstance(v, int | float)}
