"""Evaluate a workdir's checkpoint on a whole split.

    python -m ptft_jax.evaluate --workdir W [--split validation|test] [--checkpoint best|last|STEP]

Prints one JSON object of metrics, with the ``checkpoint`` ("best", "last" or "kept") and
``step`` they come from, and writes ``W/eval_<split>.json``. The checkpoint is the best one when
the run keeps it (classification, ``W/best``), else the last. For MLM runs the validation split
is the one training held out; masking is the fixed evaluation masking. Classification also
draws ``W/confusion_<split>.png`` when matplotlib is installed (``--plot`` insists on it,
``--noplot`` skips it).
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

log = logging.getLogger("ptft_jax.evaluate")  # also when run as __main__


def evaluate(
    workdir_path: str,
    split: str = "validation",
    checkpoint: str | int | None = None,
    plot: bool | None = None,
) -> dict:
    """Metrics of ``checkpoint`` (``workdir.load``: by default the best when the run keeps one,
    else the last) over every example of ``split``; also saved in W. ``plot``: a confusion
    matrix PNG for classification: None when matplotlib is installed, True always (an error
    without it), False never."""
    if split not in ("validation", "test"):
        raise config.ConfigError(f"--split={split!r} is unknown; use validation or test.")
    if plot and not _has_matplotlib():
        raise config.ConfigError(
            'the confusion plot needs matplotlib: pip install -e ".[plot]", or drop --plot.'
        )
    run = workdir.load(workdir_path, checkpoint)
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
    result = {"checkpoint": run.checkpoint, "step": run.step, "split": split, **scores}
    log.info("%s", run.describe())  # once it worked: a mistake stays one line
    if jax.process_index() == 0:
        out = pathlib.Path(workdir_path) / f"eval_{split}.json"
        out.write_text(json.dumps(result, indent=2) + "\n")
        if "confusion_matrix" in scores and plot is not False:
            _confusion_png(run, split, scores)
    return result


def _has_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _confusion_png(run, split: str, scores: dict) -> None:
    """``W/confusion_<split>.png`` when matplotlib is installed (the ``plot`` extra); an info
    line says why there is none when it is not (plots are on by default, not asked for)."""
    if not _has_matplotlib():
        log.info(
            'no confusion_%s.png: matplotlib is not installed (pip install -e ".[plot]")', split
        )
        return
    from ptft_jax import figures

    where = f"{run.checkpoint} checkpoint, step {run.step}"
    title = f"{run.path.name}, {split} split ({where}): accuracy {scores['accuracy']:.3f}"
    out = run.path / f"confusion_{split}.png"
    fig = figures.plot_confusion(scores["confusion_matrix"], run.label_names(), out, title)
    figures._pyplot().close(fig)


@cli.guarded
def main(argv) -> None:
    del argv
    metrics.quiet_logs()
    f = flags.FLAGS
    if not f.workdir:
        cli.fail("pass --workdir W [--split validation|test] [--checkpoint best|last|STEP].")
    print(json.dumps(evaluate(f.workdir, f.split, f.checkpoint, f.plot)))


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "A ptft_jax run folder.")
    flags.DEFINE_string("split", "validation", "validation or test.")
    flags.DEFINE_string(
        "checkpoint",
        None,
        "best (W/best), last (the newest of W/checkpoints) or one of its kept steps; default: "
        "best when the run keeps one (classification), else last.",
    )
    flags.DEFINE_bool(
        "plot",
        None,
        "Classification: draw W/confusion_<split>.png (default: when matplotlib is installed).",
    )
    app.run(main, flags_parser=cli.parse_absl_flags)
