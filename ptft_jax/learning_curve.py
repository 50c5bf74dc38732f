"""Few-shot learning curve: fine-tune once per training-set size, plot the test score against it.

    python -m ptft_jax.learning_curve --config configs/minilm_mr.py --workdir W \
        --sizes 16,64,256,1024 [--steps 150 --evals 3] [--devices_per_job K] \
        --out learning_curve.png

Fine-tunes the config once per training-set size N (``data.max_train_examples``: a stratified,
seeded subsample) into ``W/n<N>``, the same ``--steps`` at every N, and plots test accuracy
against N (``W/learning_curve.json`` has the numbers; matplotlib: ``pip install -e ".[plot]"``).
The sizes are jobs of ``ptft_jax.jobs``: run again, the finished ones are read back and an
interrupted one resumes; ``--devices_per_job K`` trains several sizes at once, each on K devices.
This is an experiment, so it is its own entry point: ``python -m ptft_jax.plot`` only draws.
"""

from __future__ import annotations

import json
import pathlib
import sys

from ptft_jax import cli, errors
from ptft_jax.figures import _pyplot, plot_learning_curve


def size_jobs(cfg, workdir: pathlib.Path, sizes, steps: int = 150, evals: int = 3) -> list:
    """One ``jobs.Job`` per size N: ``cfg`` on a subsample of N training examples, ``steps``
    steps, evaluated at step 0 and ``evals`` times more, in ``W/n<N>``."""
    from ptft_jax.jobs import Job

    work = []
    for n in sizes:
        c = cfg.copy_and_resolve_references()
        c.data.max_train_examples = n
        c.train.update(epochs=0, steps=steps, eval_every=max(1, -(-steps // evals)))
        work.append(Job(f"n={n}", c, workdir / f"n{n}"))
    return work


def learning_curve(
    cfg, workdir: pathlib.Path, sizes, steps: int = 150, evals: int = 3, devices_per_job: int = 0
):
    """Fine-tune ``cfg`` at every size in ``sizes`` for the same ``steps`` steps (a small set
    is seen for more epochs), evaluating on the validation split at step 0 and ``evals`` times
    more; the config's ``metric_for_best`` picks the checkpoint the test split scores. Returns
    one row per size, also in ``W/learning_curve.json``; a size that failed (its line printed)
    has no row, and stops with one sentence once the others are done."""
    from ptft_jax.jobs import run_jobs

    outcomes = run_jobs(size_jobs(cfg, workdir, sizes, steps, evals), devices_per_job, "sizes")
    rows = [
        {"n": n, "steps": o.summary["step"], **o.summary["test"]}
        for n, o in zip(sizes, outcomes, strict=True)
        if o.error is None
    ]
    (workdir / "learning_curve.json").write_text(json.dumps(rows, indent=2) + "\n")
    failed = [o.job.name for o in outcomes if o.error is not None]
    if failed:
        raise errors.UserError(
            f"{len(failed)} of {len(sizes)} sizes failed ({', '.join(failed)}: the lines above "
            "say why); fix that and run the same command again: the finished sizes are kept."
        )
    return rows


def main(argv=None) -> None:
    import importlib.util

    p = cli.ArgumentParser(
        prog="python -m ptft_jax.learning_curve", description=__doc__.split("\n")[0]
    )
    p.add_argument("--config", required=True, help="a classification config file")
    p.add_argument("--workdir", required=True)
    p.add_argument("--sizes", default="16,64,256,1024")
    p.add_argument("--steps", type=int, default=150, help="training steps at every size")
    p.add_argument("--evals", type=int, default=3, help="validation passes per size")
    p.add_argument(
        "--devices_per_job",
        type=int,
        default=0,
        help="train sizes side by side, each on this many devices (0: one at a time on all)",
    )
    p.add_argument("--out", default="learning_curve.png")
    args = p.parse_args(argv)
    if min(args.steps, args.evals) < 1:
        p.error("--steps and --evals must be at least 1.")
    problem = cli.config_file_problem(args.config)
    if problem:
        raise errors.UserError(problem)
    spec = importlib.util.spec_from_file_location("ptft_jax_config", args.config)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sizes = [int(x) for x in args.sizes.split(",")]
    work = pathlib.Path(args.workdir)
    cfg = module.get_config()
    rows = learning_curve(cfg, work, sizes, args.steps, args.evals, args.devices_per_job)
    title = f"{pathlib.Path(args.config).stem}: test score against training set size"
    fig = plot_learning_curve(rows, args.out, title)
    _pyplot().close(fig)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    cli.guarded(main)()
