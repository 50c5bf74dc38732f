"""How a training run ends: its checkpoints closed, a non-finite step or a signal reported, or
else the best checkpoint scored on the test split and the summary, each number with the step
and checkpoint it comes from, printed as one line."""

from __future__ import annotations

import json
import pathlib
import time

import jax

from ptft_jax import checkpoint, metrics, stopping


def finish(s, task, loop, ctx, workdir: pathlib.Path, compile_s: float, t_start: float) -> dict:
    """Close the checkpoints; stop on a non-finite step or a signal; else score the best
    checkpoint on the test split and print the summary line. ``s`` is the run's ``plan.Plan``,
    ``loop`` the state ``train.Loop`` ended with."""
    best_mgr = loop.best.mgr if loop.best is not None else None
    checkpoint.finish(loop.ckpt)
    checkpoint.finish(best_mgr, close=False)
    step = loop.step
    if loop.nonfinite_at is not None or loop.stop_now:
        checkpoint.finish(best_mgr)
        loop.writer.close()
    if loop.nonfinite_at is not None:
        raise stopping.NonFiniteError(
            f"The loss or gradient was not finite at step {loop.nonfinite_at}; that update was "
            f"dropped and the last good state is saved at step {step}. Lower "
            "train.learning_rate, check the data, or set train.on_nonfinite=skip."
        )
    interrupted = loop.preemption.interrupted
    if loop.stop_now:  # preempted: exit promptly, the next run resumes from this checkpoint
        why = "interrupted" if interrupted else "preempted"
        if loop.stop is not None and loop.stop.is_set():
            why = "stopped"  # by the caller (the job runner, on a signal)
        loop.writer.say(
            f"{why}: saved a checkpoint at step {step}; run the same command to resume."
        )
        return {"step": step, "preempted": True, "interrupted": interrupted, "state": loop.state}
    test = {}
    if loop.best is not None:
        best_params = loop.best.params(loop.state["params"])
        if s.data.test is not None:
            test = task.evaluate(ctx, best_params, split="test")
            # The best checkpoint (W/best) when an evaluation kept one, as evaluate reads it.
            kept = loop.tracker["best_step"] is not None
            test["checkpoint"] = "best" if kept else "last"
            test["step"] = loop.tracker["best_step"] if kept else step
            if jax.process_index() == 0:
                (workdir / "eval_test.json").write_text(json.dumps(test, indent=2) + "\n")
    return _summary(s, task, loop, test, compile_s, t_start, workdir)


def _validation(loop) -> dict:
    """The validation numbers of the checkpoint the test split is scored with: the best one's
    (kept in the tracker since it was found), else the last evaluation's; with its step."""
    best_step = loop.tracker["best_step"] if loop.best is not None else None
    kept = loop.tracker.get("validation")
    if best_step is not None and kept is not None:
        return {**kept, "checkpoint": "best", "step": best_step}
    if best_step is not None and best_step != loop.step:  # a checkpoint of before this record
        return {}
    if not loop.ev:  # nothing was evaluated (train.steps=0)
        return {}
    kind = "last" if best_step is None else "best"
    return {**metrics.scalars(loop.ev), "checkpoint": kind, "step": loop.step}


def _summary(s, task, loop, test, compile_s, t_start, workdir) -> dict:
    """The run's numbers, each with the step it comes from, and its one summary line."""
    ev, best_step = loop.ev, loop.tracker["best_step"] if loop.best is not None else None
    wrote = [f"checkpoints up to step {loop.step}"]
    if best_step is not None:
        wrote.append(f"best/ (step {best_step})")
    summary = {
        "step": loop.step,
        "skipped_steps": loop.skipped,
        "eval_loss": ev.get("loss", float("nan")),
        "eval_accuracy": ev.get(task.accuracy, float("nan")),
        "test": test,
        "validation": _validation(loop),
        "tokens_per_s": loop.trained_tokens / loop.train_s if loop.train_s else 0.0,
        "real_token_share": loop.trained_tokens / max(loop.computed_tokens, 1),
        "compile_s": compile_s,
        "wall_s": time.time() - t_start,
        "trained_steps": loop.trained_steps,
        "best_metric": task.best_metric(),
        "best_step": best_step,
        "workdir": str(workdir),
        "mesh": {axis: int(size) for axis, size in s.mesh.shape.items()},
        "wrote": [*wrote, "metrics.jsonl", *["eval_test.json"] * bool(test)],
        **{k: ev[k] for k in ("probe_accuracy",) if k in ev},
    }
    loop.writer.close()
    loop.writer.say(metrics.done_line(summary, task.accuracy))
    return {**summary, "state": loop.state}
