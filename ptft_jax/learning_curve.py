"""Few-shot learning curve: fine-tune once per training-set size, plot the test score against it.

    python -m ptft_jax.learning_curve --config configs/minilm_mr.py --workdir W \
        --sizes 16,64,256,1024 [--steps 150 --evals 3] --out learning_curve.png

Fine-tunes the config once per training-set size N (``data.max_train_examples``: a stratified,
seeded subsample) into ``W/n<N>``, the same ``--steps`` at every N, and plots test accuracy
against N (``W/learning_curve.json`` has the numbers; matplotlib: ``pip install -e ".[plot]"``).
This is an experiment, so it is its own entry point: ``python -m ptft_jax.plot`` only draws.
"""

from __future__ import annotations

import json
import pathlib
import sys

from ptft_jax import cli, errors
from ptft_jax.figures import _pyplot, plot_learning_curve


def learning_curve(cfg, workdir: pathlib.Path, sizes, steps: int = 150, evals: int = 3):
    """Fine-tune ``cfg`` at every size in ``sizes`` for the same ``steps`` steps (a small set
    is seen for more epochs), evaluating on the validation split at step 0 and ``evals`` times
    more; the config's ``metric_for_best`` picks the checkpoint the test split scores. Returns
    one row per size, also in ``W/learning_curve.json``."""
    from ptft_jax.train import run

    rows = []
    for n in sizes:
        c = cfg.copy_and_resolve_references()
        c.data.max_train_examples = n
        c.train.update(epochs=0, steps=steps, eval_every=max(1, -(-steps // evals)))
        summary = run(c, workdir / f"n{n}")
        rows.append({"n": n, "steps": summary["step"], **summary["test"]})
        (workdir / "learning_curve.json").write_text(json.dumps(rows, indent=2) + "\n")
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
    rows = learning_curve(module.get_config(), work, sizes, args.steps, args.evals)
    title = f"{pathlib.Path(args.config).stem}: test score against training set size"
    fig = plot_learning_curve(rows, args.out, title)
    _pyplot().close(fig)
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    cli.guarded(main)()
