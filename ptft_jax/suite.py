"""Evaluation suite: did pretraining pay off? Fine-tune a model on every task of a suite over a
grid of learning rates x seeds, beside the same shape from random init and a TF-IDF baseline.

    python -m ptft_jax.suite --suite offline-en --init_from builtin:minilm_l6 --workdir S
    python -m ptft_jax.suite --suite glue --data_dir glue_data --init_from hf:bert-base-uncased \
        --workdir S
    python -m ptft_jax.suite --suite offline-zh --init_from runs/zh_mlm@all --workdir S
    python -m ptft_jax.suite --compare S1 S2

Each (task, learning rate, seed, starting point) is a fine-tuning run of the train path in its
own workdir ``S/jobs/<task>/<start>/lr<LR>-seed<SEED>``; rerunning the command skips finished
jobs and resumes unfinished ones. ``S/suite.json`` holds every job's metrics, the selection and
the scores, ``S/suite.md`` the table, ``S/suite.png`` the figure. The protocol is
``suite_report.py``'s docstring (and README's "Evaluation suite").
"""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib
import sys

import jax

from ptft_jax import (
    cli,
    config,
    errors,
    jobs,
    models,
    suite_data,
    suite_report,
    suitespec,
    weights,
    workdir,
)
from ptft_jax.defaults import base_config

log = logging.getLogger("ptft_jax.suite")
BASELINE_NAMES = ("random", "tfidf")


@dataclasses.dataclass
class Plan:
    """Everything a suite run needs, checked before anything is written or compiled."""

    suite: suitespec.Suite
    folder: pathlib.Path
    starts: list[tuple[str, str]]  # (key, init_from) of every pretrained starting point
    source: weights.Pretrained  # the first starting point: the random baseline's shape
    learning_rates: tuple[float, ...]
    seeds: tuple[int, ...]
    baselines: tuple[str, ...]
    rows: dict[str, dict[str, list[dict]]]  # task -> job split -> examples
    num_labels: dict[str, int]
    devices_per_job: int
    keep_checkpoints: bool = False


def _numbers(text: str, kind, flag: str) -> tuple:
    try:
        values = tuple(kind(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise errors.ConfigError(
            f"{flag} {text!r} is not a comma-separated list of numbers; write it as {flag} "
            f"{'0,1,2' if kind is int else '2e-5,5e-5'}."
        ) from None
    if not values or any(v < 0 for v in values) or len(set(values)) < len(values):
        raise errors.ConfigError(f"{flag} {text!r} needs distinct non-negative numbers.")
    return values


def _expand(init_from: str) -> list[str]:
    """The starting points of ``--init_from``: a comma-separated list, ``W@all`` standing for
    every kept checkpoint of W, oldest first."""
    out = []
    for spec in (s.strip() for s in init_from.split(",")):
        if not spec:
            continue
        if not spec.endswith("@all"):
            out.append(spec)
            continue
        path = pathlib.Path(spec.removesuffix("@all")).expanduser()
        kept = workdir.steps_of(path / "checkpoints")
        if not config.is_workdir(path) or not kept:
            raise errors.ConfigError(
                f"--init_from {spec}: {path} is not a workdir with kept checkpoints; point it "
                "at a pretraining run's workdir."
            )
        out += [f"{path}@{step}" for step in kept]
    if not out:
        raise errors.ConfigError("--init_from is empty; name the model to fine-tune.")
    return out


def _start_key(spec: str, several: bool) -> str:
    if not several:
        return "pretrained"
    path, which = config.workdir_spec(spec)
    return f"step {which}" if which and which.isdigit() else spec


def _check_head(spec: str, source: weights.Pretrained) -> None:
    family = source.model_cfg.family
    if "classification" not in models.get(family).HEADS:
        raise errors.ConfigError(
            f"--init_from {spec} is a {family} model, which has no classification head to "
            "fine-tune; start from an encoder (bert, roberta, modernbert) or a gpt2 model."
        )


def _check_positions(spec: str, source: weights.Pretrained, suite: suitespec.Suite) -> None:
    positions = getattr(source.model_cfg, "max_position_embeddings", None)
    for task in suite.tasks:
        if positions is not None and task.max_seq_length > positions:
            raise errors.ConfigError(
                f"task {task.name} has max_seq_length {task.max_seq_length}, but --init_from "
                f"{spec} has {positions} positions; lower max_seq_length in the suite file to "
                f"{positions} or less."
            )


def make_plan(args) -> Plan:
    """Every check a user can fail, in one sentence each, before anything is written."""
    suite = suitespec.choose_tasks(suitespec.load(args.suite), args.tasks)
    lrs = _numbers(args.learning_rates, float, "--learning_rates") if args.learning_rates else None
    seeds = _numbers(args.seeds, int, "--seeds") if args.seeds else None
    lrs, seeds = lrs or suite.learning_rates, seeds or suite.seeds
    if args.quick:  # one look: the middle learning rate, the first seed
        lrs, seeds = (lrs[len(lrs) // 2],), seeds[:1]
    given = "" if args.baselines.strip() == "none" else args.baselines
    baselines = tuple(b.strip() for b in given.split(",") if b.strip())
    for b in baselines:
        if b not in BASELINE_NAMES:
            raise errors.ConfigError(
                f"--baselines names {b!r}; use random, tfidf or both (comma-separated)."
            )
    if args.devices_per_job < 0:
        raise errors.ConfigError("--devices_per_job must be 0 (all devices) or more.")
    specs = _expand(args.init_from)
    starts = [(_start_key(s, len(specs) > 1), s) for s in specs]
    sources = [weights.resolve(s) for s in specs]
    for spec, source in zip(specs, sources, strict=True):
        _check_head(spec, source)
        _check_positions(spec, source, suite)
    if "tfidf" in baselines:
        from ptft_jax import baselines as baselines_lib

        baselines_lib.check()  # scikit-learn is there, or one sentence now
    data_dir = args.data_dir or suite.data_dir
    rows, num_labels = {}, {}
    for spec in suite.tasks:
        rows[spec.name] = suite_data.load_task(spec, data_dir, suite.path.parent)
        num_labels[spec.name] = suite_data.num_labels(spec, rows[spec.name])
    folder = pathlib.Path(args.workdir).expanduser()
    return Plan(
        suite, folder, starts, sources[0], lrs, seeds, baselines, rows, num_labels,
        args.devices_per_job, args.keep_checkpoints,
    )  # fmt: skip


def _job_config(plan: Plan, spec: suitespec.TaskSpec, init_from: str, lr: float, seed: int):
    c = base_config()
    c.task = "classification"
    c.init_from = init_from
    if not init_from:  # random init: the first starting point's shape and tokenizer
        c.model.update(plan.source.fields)
        c.data.tokenizer = str(plan.source.tokenizer)
    c.model.num_labels = plan.num_labels[spec.name]
    c.data.source = str(plan.folder / "data" / spec.name)
    c.data.text_pair_field = "text_pair" if spec.text_pair_field else ""
    c.data.max_seq_length = spec.max_seq_length
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


def _jobs(plan: Plan) -> list[tuple[dict, jobs.Job]]:
    """Every fine-tuning job, ``(its coordinates, the job)``, task by task."""
    starts = list(plan.starts) + ([("random", "")] if "random" in plan.baselines else [])
    out = []
    for spec in plan.suite.tasks:
        for key, init_from in starts:
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
    keys = [k for k, _ in plan.starts] + [b for b in BASELINE_NAMES if b in plan.baselines]
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
    todo = _jobs(plan)
    outcomes = jobs.run_jobs([j for _, j in todo], plan.devices_per_job, desc=plan.suite.name)
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
    plan = make_plan(args)
    result = run(plan)
    print(suite_report.markdown(plan.suite, result), end="")
    print(f"wrote {plan.folder / 'suite.json'}, suite.md and suite.png", file=sys.stderr)


if __name__ == "__main__":
    cli.guarded(main)()
