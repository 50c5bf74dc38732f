"""Evaluation suite: did pretraining pay off? Fine-tune a model on every task of a suite over a
grid of learning rates x seeds, beside the same shape from random init and a TF-IDF baseline.

    python -m ptft_jax.suite --suite offline-en --init_from builtin:minilm_l6 --workdir S
    python -m ptft_jax.suite --suite glue --data_dir glue_data --init_from hf:bert-base-uncased \
        --workdir S
    python -m ptft_jax.suite --suite offline-zh --init_from runs/zh_mlm@all --workdir S
    python -m ptft_jax.suite --suite offline-en --init_from builtin:minilm_l6 --tapt_steps 300 \
        --workdir S
    python -m ptft_jax.suite --compare S1 S2

Each (task, learning rate, seed, starting point) is a fine-tuning run of the train path in its
own workdir ``S/jobs/<task>/<start>/lr<LR>-seed<SEED>``; rerunning the command skips finished
jobs and resumes unfinished ones. ``S/suite.json`` holds every job's metrics, the selection and
the scores, ``S/suite.md`` the table, ``S/suite.png`` the figure. The protocol is
``suite_report.py``'s docstring (and README's "Evaluation suite").

``--tapt_steps N`` adds task-adaptive pretraining (Gururangan et al., 2020): for every task and
starting point, N steps of MLM from that start on the task's own training text (texts and
pairs' second texts; the validation texts evaluate it), ``S/tapt/<task>/<start>``, then the
same grid fine-tuned from there: a row ``<start> + TAPT`` beside the start fine-tuned directly.
"""

from __future__ import annotations

import json
import logging
import sys

import jax

from ptft_jax import cli, errors, jobs, suite_data, suite_plan, suite_report, suitespec
from ptft_jax.defaults import base_config
from ptft_jax.suite_plan import Plan

log = logging.getLogger("ptft_jax.suite")
BASELINE_NAMES = suite_plan.BASELINE_NAMES
TAPT = " + TAPT"  # a start's row after task-adaptive pretraining


def _job_config(plan: Plan, spec: suitespec.TaskSpec, init_from: str, lr: float, seed: int):
    c = base_config()
    c.task = spec.task
    c.init_from = init_from
    if not init_from:  # random init: the first starting point's shape and tokenizer
        c.model.update(plan.source.fields)
        c.data.tokenizer = str(plan.source.tokenizer)
    c.model.num_labels = plan.num_labels[spec.name]
    c.data.source = str(plan.folder / "data" / spec.name)
    c.data.text_pair_field = "text_pair" if spec.text_pair_field else ""
    c.data.max_seq_length = spec.max_seq_length
    c.data.doc_stride = spec.doc_stride
    c.train.update(
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        learning_rate=lr,
        warmup_ratio=spec.warmup_ratio,
        weight_decay=spec.weight_decay,
        seed=seed,
        metric_for_best=spec.metric[0],
        eval_every=1_000_000,  # each epoch's end evaluates
        checkpoint_every=1_000_000,  # and saves; one checkpoint is kept, and the best
        keep_checkpoints=1,
        log_every=50,
    )
    return c


def _tapt_jobs(plan: Plan) -> dict[tuple[str, str], jobs.Job]:
    """``(task, start key) -> the MLM job`` of task-adaptive pretraining, for every task and
    pretrained start (none without ``--tapt_steps``); each task's text written beside them."""
    out = {}
    for spec in plan.suite.tasks if plan.tapt_steps else ():
        fields = ("text", "text_pair") if spec.text_pair_field else ("text",)
        text = {}
        for split in ("train", "validation"):  # pairs' texts repeat (SNLI's premises): once
            rows = plan.rows[spec.name][split]
            if spec.tagging:  # a sentence's words, as the tagger's tokenizer sees them
                rows = [{"text": " ".join(r["tokens"])} for r in rows]
            if spec.answering:  # the contexts (each once) and the questions
                rows = [{"text": r["context"]} for r in rows] + [
                    {"text": r["question"]} for r in rows
                ]
            found = dict.fromkeys(r[f] for r in rows for f in fields)
            text[split] = [{"text": t} for t in found if t.strip()]
        source = suite_data.write_task(plan.folder / "tapt" / spec.name / "text", text)
        for key, init_from in plan.starts:
            c = base_config()
            c.task, c.init_from = "mlm", init_from
            c.data.source, c.data.max_seq_length = str(source), spec.max_seq_length
            c.train.update(
                steps=plan.tapt_steps,
                batch_size=spec.batch_size,  # the task's: its text may be a few batches
                learning_rate=plan.tapt_learning_rate,
                warmup_ratio=0.06,
                eval_every=plan.tapt_steps,
                eval_batches=8,
                checkpoint_every=plan.tapt_steps,
                keep_checkpoints=1,
                log_every=50,
            )
            where = plan.folder / "tapt" / spec.name / key.replace(" ", "")
            out[spec.name, key] = jobs.Job(f"{spec.name} {key} TAPT", c, where)
    return out


def _jobs(plan: Plan) -> list[tuple[dict, jobs.Job]]:
    """Every fine-tuning job, ``(its coordinates, the job)``, task by task."""
    random = [("random", "")] if "random" in plan.baselines else []
    tapt_jobs = _tapt_jobs(plan)  # once: it writes each task's text
    out = []
    for spec in plan.suite.tasks:
        tapt = [
            (key + TAPT, str(job.workdir))
            for (task, key), job in tapt_jobs.items()
            if task == spec.name
        ]
        for key, init_from in list(plan.starts) + tapt + random:
            for lr in plan.learning_rates:
                for seed in plan.seeds:
                    where = key.replace(" ", "")
                    path = plan.folder / "jobs" / spec.name / where / f"lr{lr:g}-seed{seed}"
                    name = f"{spec.name} {key} lr={lr:g} seed={seed}"
                    cfg = _job_config(plan, spec, init_from, lr, seed)
                    coords = {"task": spec.name, "start": key, "learning_rate": lr, "seed": seed}
                    out.append((coords, jobs.Job(name, cfg, path, plan.keep_checkpoints)))
    return out


def _tfidf(plan: Plan, spec: suitespec.TaskSpec) -> dict:
    """The TF-IDF baseline's result for ``spec``, computed once (``S/baselines/<task>.json``)."""
    from ptft_jax import baselines

    path = plan.folder / "baselines" / f"tfidf-{spec.name}.json"
    if path.is_file():
        return json.loads(path.read_text())
    if spec.tagging:  # a tagging task's classical baseline: the word dictionary
        result = baselines.dictionary(plan.rows[spec.name])
    elif spec.answering:  # a reading task's: the sentence that shares most question words
        result = baselines.overlap(plan.rows[spec.name])
    else:
        result = baselines.tfidf(
            plan.rows[spec.name], spec.regression, plan.num_labels[spec.name], spec.metric,
            spec.tfidf_analyzer,
        )  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def _splits(summary: dict) -> dict:
    """A finished job's metrics by split, both at the checkpoint the test split scored."""
    out = {"validation": summary.get("validation") or {}}
    if summary.get("test"):
        out["test"] = summary["test"]
    return out


def report(plan: Plan, done: list[tuple[dict, jobs.Outcome]], tfidf: dict) -> dict:
    """suite.json's content from the finished jobs and the TF-IDF results."""
    rows, failed = [], []
    for coords, outcome in done:
        row = {**coords, "workdir": str(outcome.job.workdir)}
        if outcome.error is not None:
            failed.append({"job": outcome.job.name, "error": outcome.error})
            row["error"] = outcome.error
        else:
            row["splits"] = _splits(outcome.summary)
            row["wall_s"] = outcome.summary.get("wall_s")
        rows.append(row)
    keys = [k for k, _ in plan.starts] + [k + TAPT for k, _ in plan.starts if plan.tapt_steps]
    keys += [b for b in BASELINE_NAMES if b in plan.baselines]
    tasks = {}
    for spec in plan.suite.tasks:
        scores = {}
        for key in keys:
            if key == "tfidf":
                scores[key] = suite_report.fixed(spec, tfidf[spec.name])
                if scores[key] is not None:
                    scores[key]["strength"] = tfidf[spec.name]["strength"]
                continue
            mine = [r for r in rows if r["task"] == spec.name and r["start"] == key]
            scores[key] = suite_report.select(spec, mine)
        if len(plan.starts) > 1:  # the contract's "pretrained": the last checkpoint
            scores["pretrained"] = scores[plan.starts[-1][0]]
        tasks[spec.name] = {"metric": "/".join(spec.metric), "scores": scores}
    result = {
        "suite": plan.suite.name,
        "init_from": ",".join(s for _, s in plan.starts),
        "starts": keys,
        "learning_rates": list(plan.learning_rates),
        "seeds": list(plan.seeds),
        "tasks": tasks,
    }
    result["average"] = suite_report.averages(plan.suite, tasks)
    avg = result["average"]
    if avg.get("pretrained") is not None and avg.get("random") is not None:
        result["pretraining_gain"] = avg["pretrained"] - avg["random"]
    last = plan.starts[-1][0]
    if plan.tapt_steps and avg.get(last) is not None and avg.get(last + TAPT) is not None:
        result["tapt_steps"] = plan.tapt_steps
        result["tapt_gain"] = avg[last + TAPT] - avg[last]
    result["failed"], result["jobs"] = failed, rows
    return result


def run(plan: Plan) -> dict:
    """Writes each task's data, runs the TF-IDF baselines and every job, and the report."""
    plan.folder.mkdir(parents=True, exist_ok=True)
    if jax.config.jax_compilation_cache_dir is None:
        # The grid's jobs of a task share their shapes: each program compiles once.
        jax.config.update("jax_compilation_cache_dir", str(plan.folder / "xla_cache"))
    for name, rows in plan.rows.items():
        suite_data.write_task(plan.folder / "data" / name, rows)
    tfidf = {}
    if "tfidf" in plan.baselines:
        tfidf = {spec.name: _tfidf(plan, spec) for spec in plan.suite.tasks}
    tapt = _tapt_jobs(plan)
    failed = {}
    if tapt:
        done = jobs.run_jobs(list(tapt.values()), plan.devices_per_job, desc="TAPT")
        failed = {str(o.job.workdir): o.error for o in done if o.error is not None}
    todo = _jobs(plan)
    runnable = [j for _, j in todo if j.cfg.init_from not in failed]
    ran = iter(jobs.run_jobs(runnable, plan.devices_per_job, desc=plan.suite.name))
    outcomes = [
        jobs.Outcome(j, None, f"its TAPT run failed: {failed[j.cfg.init_from]}")
        if j.cfg.init_from in failed
        else next(ran)
        for _, j in todo
    ]
    result = report(plan, [(c, o) for (c, _), o in zip(todo, outcomes, strict=True)], tfidf)
    suite_report.write(plan.folder, plan.suite, result)
    try:
        from ptft_jax import figures

        fig = figures.plot_suite(result, plan.suite, plan.folder / "suite.png")
        figures._pyplot().close(fig)
    except errors.UserError as e:  # no matplotlib: the numbers are written all the same
        log.warning("no suite.png: %s", e)
    return result


def main(argv=None) -> None:
    p = cli.ArgumentParser(prog="python -m ptft_jax.suite", description=__doc__.split("\n")[0])
    p.add_argument("--suite", help=f"{', '.join(suitespec.shipped())} or a suite file (.toml)")
    p.add_argument("--init_from", help="W, W@STEP, W@all, hf:<folder>, builtin:minilm_l6; a list")
    p.add_argument("--workdir", help="the suite's folder S")
    p.add_argument("--data_dir", default="", help="GLUE in its own layout (glue:TASK sources)")
    p.add_argument("--tasks", default="", help="a comma-separated subset of the suite's tasks")
    p.add_argument("--seeds", default="", help="comma-separated; default: the suite file's")
    p.add_argument("--learning_rates", default="", help="comma-separated; default: the file's")
    p.add_argument("--baselines", default="random,tfidf", help="random, tfidf, both or none")
    p.add_argument("--devices_per_job", type=int, default=0, help="0: all devices, one job")
    p.add_argument("--quick", action="store_true", help="one learning rate, one seed")
    p.add_argument(
        "--tapt_steps", type=int, default=0, help="> 0: also each start after N MLM steps on "
        "the task's training text (task-adaptive pretraining)",
    )  # fmt: skip
    p.add_argument("--tapt_learning_rate", type=float, default=1e-4, help="TAPT's peak rate")
    p.add_argument(
        "--keep_checkpoints", action="store_true", help="keep each job's checkpoints (disk!)"
    )
    p.add_argument("--compare", nargs="+", metavar="S", help="print finished suites side by side")
    args = p.parse_args(argv)
    if args.compare:
        print(suite_report.compare(args.compare), end="")
        return
    missing = [f"--{k}" for k in ("suite", "init_from", "workdir") if not getattr(args, k)]
    if missing:
        p.error(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} required")
    plan = suite_plan.make_plan(args)
    result = run(plan)
    print(suite_report.markdown(plan.suite, result), end="")
    print(f"wrote {plan.folder / 'suite.json'}, suite.md and suite.png", file=sys.stderr)


if __name__ == "__main__":
    cli.guarded(main)()
