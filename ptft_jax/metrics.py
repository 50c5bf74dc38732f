"""Where numbers go: a progress bar (one plain line per logged step when standard error is not
a terminal), ``W/metrics.jsonl``, TensorBoard and the summary line (process 0 only); a quiet
run's lines go to the log instead of the terminal."""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
import sys
import time

import jax

log = logging.getLogger(__name__)


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
    """Appends metric rows to JSONL and TensorBoard and shows progress on ``progress`` (standard
    error by default): a bar on a terminal; in a log file or a pipe, where a bar's carriage
    returns pile up, one plain line per logged step instead. ``quiet``: no bar, and its lines
    go to the ``ptft_jax`` log (a job runner's ``W/train.log``) instead of the terminal."""

    def __init__(
        self,
        workdir: pathlib.Path,
        total_steps: int,
        start_step: int,
        resumed: bool,
        progress=None,
        quiet: bool = False,
    ):
        self.active = jax.process_index() == 0
        self.quiet = quiet
        self._bar = self._jsonl = self._tb = None
        if not self.active:
            return
        from tensorboardX import SummaryWriter

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
        # TensorBoard hides the earlier event files' steps from the purge step on: the steps
        # after the restored checkpoint (logged again), or every step of an earlier attempt.
        purge = start_step + 1 if resumed else 0
        self._tb = SummaryWriter(str(workdir / "tensorboard"), purge_step=purge)
        self._progress = sys.stderr if progress is None else progress
        self._total, self._first = total_steps, None  # (time, step) of the first train row
        if _is_terminal(self._progress) and not quiet:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total_steps,
                initial=start_step,
                desc="train",
                unit="step",
                dynamic_ncols=True,
                file=self._progress,
            )

    def write(self, step: int, split: str, metrics: dict) -> None:
        """One row ``{step, split, **metrics}``; train rows also update the progress bar (or
        print the progress line)."""
        if not self.active:
            return
        row = {"step": int(step), "split": split, **{k: float(v) for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(row) + "\n")
        self._jsonl.flush()
        for key, value in metrics.items():
            self._tb.add_scalar(f"{split}/{key}", float(value), int(step))
        if split != "train":  # evaluations get a line of their own (above the bar)
            numbers = ", ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in metrics.items())
            self.print(f"step {step} {split}: {numbers}")
        elif self._bar is not None:
            self._bar.set_postfix(
                loss=f"{row['loss']:.3f}", tok_s=f"{row.get('tokens_per_s', 0):,.0f}"
            )
        elif self.quiet:
            log.info("%s", self._progress_line(row))
        else:
            print(self._progress_line(row), file=self._progress, flush=True)

    def _progress_line(self, row: dict) -> str:
        """``step 20/360: loss 6.1234, 3,622 tokens/s, ETA 5m12s``: the ETA from the wall time
        since the first train row (evaluations included), or that row's step time."""
        now, step = time.time(), row["step"]
        if self._first is None:
            self._first = (now - row.get("step_time_s", 0.0), step - 1)
        t0, step0 = self._first
        per_step = (now - t0) / max(step - step0, 1)
        line = f"step {step}/{self._total}: loss {row['loss']:.4f}"
        if "tokens_per_s" in row:
            line += f", {row['tokens_per_s']:,.0f} tokens/s"
        return f"{line}, ETA {_duration(per_step * max(self._total - step, 0))}"

    def advance(self, n: int = 1) -> None:
        """Move the progress bar by ``n`` steps."""
        if self.active and self._bar is not None:
            self._bar.update(n)

    def print(self, line: str) -> None:
        """A line on standard output (above the progress bar)."""
        if not self.active:
            return
        if self._bar is not None:
            self._bar.write(line)
        else:
            self.say(line)

    def say(self, line: str) -> None:
        """A line on standard output on process 0 (also once closed; a quiet writer's: a log
        line)."""
        if jax.process_index() != 0:
            return
        if self.quiet:
            log.info("%s", line)
        else:
            print(line, flush=True)

    def close(self) -> None:
        """Flush and close everything (again: nothing)."""
        if self.active:
            self.active = False
            if self._bar is not None:
                self._bar.close()
            self._jsonl.close()
            self._tb.close()


class JobsBar:
    """Progress over a list of jobs on ``progress`` (standard error by default), process 0 only:
    on a terminal a bar of jobs done of all, the time left from the mean time of the jobs run so
    far over ``at_once`` (how many run side by side); elsewhere one plain line per finished job.
    A failed job is one line ``failed: <name>: <sentence>`` either way."""

    def __init__(self, total: int, desc: str, at_once: int, progress=None):
        self.active = jax.process_index() == 0
        self._progress = sys.stderr if progress is None else progress
        self._total, self._desc, self._at_once = total, desc, max(at_once, 1)
        self._done, self._seconds, self._bar = 0, [], None
        if self.active and _is_terminal(self._progress):
            from tqdm import tqdm

            self._bar = tqdm(
                total=total,
                desc=desc,
                unit="job",
                dynamic_ncols=True,
                file=self._progress,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}{postfix}]",
            )

    def finished(self, name: str, seconds: float | None, note: str = "") -> None:
        """Job ``name`` is done: it ran for ``seconds`` (None: it had finished before)."""
        left = self._count(seconds)
        if not self.active or self._bar is not None:
            return
        how = "done earlier" if seconds is None else f"done in {_duration(seconds)}"
        line = f"{self._desc} {self._done}/{self._total}: {name} {how}{note}"
        if left is not None and self._done < self._total:
            line += f", ETA {_duration(left)}"
        print(line, file=self._progress, flush=True)

    def failed(self, name: str, sentence: str, seconds: float | None = None) -> None:
        """Job ``name`` failed with ``sentence``: its one line, and it counts as done."""
        self.say(f"failed: {name}: {sentence}")
        self._count(seconds)

    def _count(self, seconds: float | None) -> float | None:
        """One more job done; the time left, once a job has run here."""
        self._done += 1
        if seconds is not None:
            self._seconds.append(seconds)
        left = None
        if self._seconds:
            mean = sum(self._seconds) / len(self._seconds)
            left = mean * (self._total - self._done) / self._at_once
        if self._bar is not None:
            self._bar.update(1)
            self._bar.set_postfix_str(f"left {_duration(left)}" if left is not None else "")
        return left

    def say(self, line: str) -> None:
        """A line on the progress stream, above the bar."""
        if not self.active:
            return
        if self._bar is not None:
            self._bar.write(line, file=self._progress)
        else:
            print(line, file=self._progress, flush=True)

    def close(self) -> None:
        """Close the bar (again: nothing)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _duration(seconds: float) -> str:
    """``42s``, ``5m12s``, ``2h05m``."""
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def scalars(result: dict) -> dict:
    """The numeric entries of an evaluation (what metrics.jsonl and TensorBoard take)."""
    return {k: v for k, v in result.items() if isinstance(v, int | float)}


def done_line(summary: dict, accuracy: str) -> str:
    """The run's one summary line: which step and checkpoint each number comes from (the
    validation numbers from the last step, the test numbers from the checkpoint scored), the
    speed when it trained, and what the workdir got. ``accuracy``: the task's accuracy key."""
    head = f"done: step {summary['step']}"
    if not math.isnan(summary["eval_loss"]):  # nan: nothing was evaluated (train.steps=0)
        head += f", validation loss {summary['eval_loss']:.4f}"
        head += f", {accuracy.replace('_', ' ')} {summary['eval_accuracy']:.4f}"
        if "probe_accuracy" in summary:
            head += f", probe accuracy {summary['probe_accuracy']:.4f}"
        head += f" (step {summary['step']})"
    groups = [head]
    test = summary["test"]
    if test:
        metric = summary["best_metric"]
        where = f"{test['checkpoint']} checkpoint, step {test['step']}"
        groups.append(f"test {metric.replace('_', ' ')} {test[metric]:.4f} ({where})")
    timing = f"wall {summary['wall_s']:.1f}s"
    if summary["trained_steps"]:  # a run that found its work done reports no speed
        share = summary["real_token_share"]
        timing = (
            f"{summary['tokens_per_s']:,.0f} tokens/s ({share:.0%} of computed), "
            f"compile {summary['compile_s']:.1f}s, {timing}"
        )
    groups.append(timing)
    groups.append(f"wrote {summary['workdir']}: {', '.join(summary['wrote'])}")
    return "; ".join(groups)
