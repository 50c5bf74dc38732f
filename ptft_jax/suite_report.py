"""A suite's numbers: the learning rate each starting point gets per task, the scores at it,
the averages, and ``suite.json`` / ``suite.md`` / the figure.

The protocol (README, "Evaluation suite"): for each task and starting point, every learning
rate is scored by the median over seeds of the validation score; the best one is chosen, and the
task's result is the median, min and max over seeds of the reported score at that rate. A task's
score is the mean of its metrics (and of its reported splits, MNLI's matched and mismatched),
as the GLUE paper averages a task's metrics; the suite's average is the mean of task scores.
"""

from __future__ import annotations

import json
import pathlib
import statistics

from ptft_jax.suitespec import Suite, TaskSpec

BASELINES = ("random", "tfidf")
NAMES = {"random": "random init", "tfidf": "TF-IDF + linear"}


def job_score(spec: TaskSpec, metrics: dict | None) -> float | None:
    """The mean of the task's metrics in ``metrics`` (one split's), or None when absent."""
    if not metrics or any(m not in metrics for m in spec.metric):
        return None
    return float(statistics.fmean(metrics[m] for m in spec.metric))


def reported(spec: TaskSpec, splits: dict) -> dict | None:
    """``{column: {metric: value}}`` of one job's ``{split: metrics}``, and its score as
    ``"score"``: the mean over the reported columns; None when a split is missing."""
    out, parts = {}, []
    for column, split in spec.report:
        metrics = splits.get(split)
        score = job_score(spec, metrics)
        if score is None:
            return None
        out[column] = {m: float(metrics[m]) for m in spec.metric}
        parts.append(score)
    out["score"] = float(statistics.fmean(parts))
    return out


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def select(spec: TaskSpec, jobs: list[dict]) -> dict | None:
    """The chosen learning rate and the scores at it, from ``jobs`` (one task and starting point:
    ``{"learning_rate", "seed", "splits": {split: metrics}}``; a failed job has no ``splits``).
    The rate with the best median validation score wins; a tie goes to the rate listed first.
    None when no job finished."""
    by_lr: dict[float, list[dict]] = {}
    for job in jobs:
        by_lr.setdefault(job["learning_rate"], []).append(job)
    medians, best = {}, None
    for lr, runs in by_lr.items():
        vals = [job_score(spec, j.get("splits", {}).get("validation")) for j in runs]
        vals = [v for v in vals if v is not None]
        if not vals:
            continue
        medians[lr] = statistics.median(vals)
        if best is None or medians[lr] > medians[best]:
            best = lr
    if best is None:
        return None
    done = [r for r in (reported(spec, j.get("splits", {})) for j in by_lr[best]) if r]
    if not done:
        return None
    result = {"learning_rate": best, **_spread([r["score"] for r in done]), "seeds": len(done)}
    result["columns"] = {
        column: {m: _spread([r[column][m] for r in done]) for m in spec.metric}
        for column, _ in spec.report
    }
    result["validation_medians"] = {str(lr): v for lr, v in medians.items()}
    return result


def fixed(spec: TaskSpec, splits: dict) -> dict | None:
    """The result of a deterministic baseline (TF-IDF): one fit, so median = min = max."""
    r = reported(spec, splits)
    if r is None:
        return None
    columns = {c: {m: _spread([r[c][m]]) for m in spec.metric} for c, _ in spec.report}
    return {"learning_rate": None, **_spread([r["score"]]), "seeds": 1, "columns": columns}


def averages(suite: Suite, tasks: dict) -> dict:
    """The mean of the task scores (medians) per starting point; None where a task has none."""
    starts = {s for t in tasks.values() for s in t["scores"]}
    out = {}
    for start in sorted(starts):
        vals = [tasks[t.name]["scores"].get(start) for t in suite.tasks if t.name in tasks]
        ok = all(v is not None for v in vals) and vals
        out[start] = float(statistics.fmean(v["median"] for v in vals)) if ok else None
    return out


def _cell(result: dict | None, spec: TaskSpec) -> str:
    """A table cell in percent, as the papers print them: the median (F1/acc for two metrics,
    m/mm for two splits) and the min-max over seeds when there are several."""
    if result is None:
        return "failed"
    parts = [
        f"{100 * result['columns'][c][m]['median']:.1f}"
        for c, _ in spec.report
        for m in spec.metric
    ]
    cell = "/".join(parts)
    if result["seeds"] > 1:
        cell += f" ({100 * result['min']:.1f}-{100 * result['max']:.1f})"
    return cell


def row_label(start: str, init_from: str) -> str:
    """A start's name in tables and figures (``init_from`` names the pretrained one)."""
    base, tapt, _ = start.partition(" + TAPT")  # a start after task-adaptive pretraining
    return NAMES.get(base, f"{init_from}" if base == "pretrained" else base) + tapt


def _heading(spec: TaskSpec) -> str:
    """``MNLI (accuracy; m/mm)``: the task, its metrics and, when several, its reported splits."""
    splits = "/".join(c for c, _ in spec.report) if len(spec.report) > 1 else ""
    return f"{spec.heading} ({'/'.join(spec.metric)}{'; ' + splits if splits else ''})"


def markdown(suite: Suite, report: dict) -> str:
    """``suite.md``: the scores as the papers' GLUE tables, starting points as rows, then what
    pretraining bought, the chosen learning rates and the jobs that failed."""
    specs = [t for t in suite.tasks if t.name in report["tasks"]]
    head = ["start", *(_heading(t) for t in specs), "average"]
    seeds = f"{len(report['seeds'])} seed{'s' * (len(report['seeds']) != 1)}"
    lines = [
        f"# {report['suite']}: {report['init_from']}",
        "",
        f"Median over {seeds} at the learning rate with the best median validation score "
        "(min-max over seeds in brackets), in percent; a task with two "
        "metrics or splits shows both and scores their mean.",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for start in report["starts"]:
        cells = [_cell(report["tasks"][t.name]["scores"].get(start), t) for t in specs]
        avg = report["average"].get(start)
        avg_cell = "-" if avg is None else f"{100 * avg:.1f}"
        lines.append(
            f"| {row_label(start, report['init_from'])} | " + " | ".join(cells) + f" | {avg_cell} |"
        )
    tagging = [t.heading for t in specs if t.tagging]
    if tagging and "tfidf" in report["starts"]:
        lines += [
            "",
            f"The {NAMES['tfidf']} row of {', '.join(tagging)} (tagging: entity F1) is the word "
            "dictionary: each word's most frequent training tag, O for words never seen.",
        ]
    reading = [t.heading for t in specs if t.answering]
    if reading and "tfidf" in report["starts"]:
        lines += [
            "",
            f"The {NAMES['tfidf']} row of {', '.join(reading)} (SQuAD F1) is sentence overlap: "
            "the context sentence sharing most words with the question, less those words.",
        ]
    gain = report.get("pretraining_gain")
    if gain is not None:
        lines += ["", f"Pretraining bought {100 * gain:+.1f} points of average over random init."]
    if report.get("tapt_gain") is not None:
        lines += [
            "",
            f"Task-adaptive pretraining ({report['tapt_steps']} MLM steps on each task's "
            f"training text) bought {100 * report['tapt_gain']:+.1f} points of average.",
        ]
    lines += ["", "Chosen learning rates:", ""]
    for t in specs:
        chosen = report["tasks"][t.name]["scores"]
        rates = ", ".join(
            f"{row_label(s, report['init_from'])} {chosen[s]['learning_rate']:g}"
            for s in report["starts"]
            if chosen.get(s) and chosen[s]["learning_rate"] is not None
        )
        lines.append(f"- {t.heading}: {rates}")
    if report["failed"]:
        lines += ["", f"{len(report['failed'])} jobs failed:", ""]
        lines += [f"- {f['job']}: {f['error']}" for f in report["failed"]]
    return "\n".join(lines) + "\n"


def write(folder: pathlib.Path, suite: Suite, report: dict) -> None:
    """``suite.json`` and ``suite.md`` in ``folder``."""
    (folder / "suite.json").write_text(json.dumps(report, indent=2) + "\n")
    (folder / "suite.md").write_text(markdown(suite, report))


def compare(folders: list[str]) -> str:
    """Several suite runs side by side: a markdown table of every run's starting points."""
    reports = []
    for folder in folders:
        path = pathlib.Path(folder) / "suite.json"
        if not path.is_file():
            from ptft_jax.errors import UserError

            raise UserError(
                f"{folder} has no suite.json; give folders that a finished suite wrote."
            )
        reports.append((folder, json.loads(path.read_text())))
    tasks = []
    for _, r in reports:
        tasks += [t for t in r["tasks"] if t not in tasks]
    lines = ["| run | start | " + " | ".join(tasks) + " | average |"]
    lines.append("|" + "---|" * (len(tasks) + 3))
    for folder, r in reports:
        for start in r["starts"]:
            cells = []
            for t in tasks:
                got = r["tasks"].get(t, {}).get("scores", {}).get(start)
                cells.append("-" if got is None else f"{100 * got['median']:.1f}")
            avg = r["average"].get(start)
            label = row_label(start, r["init_from"])
            avg_cell = "-" if avg is None else f"{100 * avg:.1f}"
            lines.append(f"| {folder} | {label} | " + " | ".join(cells) + f" | {avg_cell} |")
    return "\n".join(lines) + "\n"
