"""Evaluate a workdir's latest checkpoint on a whole split.

    python -m ptft_jax.evaluate --workdir W [--split validation|test]

Prints one JSON object of metrics and writes ``W/eval_<split>.json``. For MLM runs the
validation split is the one training held out; masking is the fixed evaluation masking.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import pathlib

import jax
from absl import app, flags

from ptft_jax import cli, config, metrics, sharding, steps, workdir
from ptft_jax.data import pipeline
from ptft_jax.tasks.base import EvalContext


def evaluate(workdir_path: str, split: str = "validation") -> dict:
    """Metrics of the latest checkpoint over every example of ``split``; also saved in W."""
    if split not in ("validation", "test"):
        raise config.ConfigError(f"--split={split!r} is unknown; use validation or test.")
    run = workdir.load(workdir_path)
    cfg, task = run.cfg, run.task
    shards = run.mesh.shape["data"] * run.mesh.shape["fsdp"]
    rows = math.ceil(cfg.train.batch_size // cfg.train.grad_accum_steps / shards) * shards
    start, stop = sharding.process_rows(run.mesh, rows)
    layout = pipeline.BatchLayout(accum=1, micro=rows, start=start, stop=stop, shards=shards)
    data = task.split_data(cfg, run.tokenizer, layout, split, run.path / "labels.json")
    if data.layout is not None:  # packed rows: the data decided how many a batch takes
        rows = data.layout.micro
    # The eval step training ran (in_shardings aside: batches here may take any rows).
    graphdef, _ = steps.abstract_model(run.model_cfg, task.head)
    eval_step = jax.jit(functools.partial(steps.eval_step, task=task, graphdef=graphdef))
    with jax.set_mesh(run.mesh):
        scores = task.evaluate(EvalContext(eval_step, data, run.mesh, rows), run.params, split)
    result = {"step": run.step, "split": split, **scores}
    if jax.process_index() == 0:
        out = pathlib.Path(workdir_path) / f"eval_{split}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        if "confusion_matrix" in scores:
            _confusion_png(run, split, scores)
    return result


def _confusion_png(run, split: str, scores: dict) -> None:
    """``W/confusion_<split>.png`` when matplotlib is installed (the ``plot`` extra)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        logging.warning('no confusion_%s.png: pip install -e ".[plot]" for plots', split)
        return
    from ptft_jax import figures

    title = f"{run.path.name}, {split} split (step {run.step}): accuracy {scores['accuracy']:.3f}"
    out = run.path / f"confusion_{split}.png"
    fig = figures.plot_confusion(scores["confusion_matrix"], run.label_names(), out, title)
    figures._pyplot().close(fig)


@cli.guarded
def main(argv) -> None:
    del argv
    metrics.quiet_logs()
    if not flags.FLAGS.workdir:
        cli.fail("pass --workdir W [--split validation|test].")
    print(json.dumps(evaluate(flags.FLAGS.workdir, flags.FLAGS.split)))


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "A ptft_jax run folder.")
    flags.DEFINE_string("split", "validation", "validation or test.")
    app.run(main, flags_parser=cli.parse_absl_flags)
