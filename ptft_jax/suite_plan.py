"""An evaluation suite's plan: the command line checked, every mistake a user can make one
sentence before anything is written or compiled (``suite.py`` runs the plan)."""

from __future__ import annotations

import dataclasses
import pathlib

from ptft_jax import config, errors, models, suite_data, suitespec, weights, workdir

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
    tapt_steps: int = 0  # > 0: also each start after that many MLM steps on the task's text
    tapt_learning_rate: float = 1e-4


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


def _check_head(spec: str, source: weights.Pretrained, suite: suitespec.Suite) -> None:
    family = source.model_cfg.family
    for task in suite.tasks:
        if task.task not in models.get(family).HEADS:
            raise errors.ConfigError(
                f"--init_from {spec} is a {family} model, which has no {task.task} head for "
                f"task {task.name}; start from an encoder (bert, roberta, modernbert), or leave "
                "that task out with --tasks."
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
    if args.tapt_steps < 0 or args.tapt_learning_rate <= 0:
        raise errors.ConfigError(
            "--tapt_steps must be 0 (no task-adaptive pretraining) or more, and "
            "--tapt_learning_rate above 0."
        )
    specs = _expand(args.init_from)
    starts = [(_start_key(s, len(specs) > 1), s) for s in specs]
    sources = [weights.resolve(s) for s in specs]
    for spec, source in zip(specs, sources, strict=True):
        _check_head(spec, source, suite)
        _check_positions(spec, source, suite)
        if args.tapt_steps and "mlm" not in models.get(source.model_cfg.family).HEADS:
            raise errors.ConfigError(
                f"--tapt_steps {args.tapt_steps}: --init_from {spec} is a "
                f"{source.model_cfg.family} model, which has no MLM head to continue "
                "pretraining with; drop --tapt_steps or start from an encoder."
            )
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
        args.devices_per_job, args.keep_checkpoints, args.tapt_steps, args.tapt_learning_rate,
    )  # fmt: skip
