"""Export a workdir as a Hugging Face model folder.

    python -m ptft_jax.export --workdir W --out DIR

DIR then loads offline in ``transformers`` (``BertForMaskedLM`` for MLM runs) with the same
outputs as ptft_jax.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib

import jax
from absl import app, flags

from ptft_jax import cli, hf, metrics, models, workdir


def export(workdir_path: str, out: str) -> dict:
    """Write ``out`` from the latest checkpoint in ``workdir_path``; returns a short summary."""
    run = workdir.load(workdir_path)
    params = jax.device_get(run.params)
    family = models.get(run.model_cfg.family)
    architecture = family.architecture(run.task.head, run.model_cfg)
    fields = dataclasses.asdict(run.model_cfg)
    id2label = None
    if run.task.labelled and run.model_cfg.num_labels > 1:
        id2label = dict(enumerate(run.label_names()))
    out_dir = pathlib.Path(out)
    hf.export(params, fields, run.tokenizer, out_dir, architecture, id2label, run.model_cfg.family)
    (pathlib.Path(out) / "README.md").write_text(model_card(run, architecture), encoding="utf-8")
    return {"out": str(out), "architecture": architecture, "step": run.step}


def _scores(run: workdir.Run) -> tuple[str, dict]:
    """The run's measured metrics: ``evaluate``'s or the final test pass's files, else the last
    validation row of ``metrics.jsonl``."""
    for split in ("test", "validation"):
        path = run.path / f"eval_{split}.json"
        if path.is_file():
            found = json.loads(path.read_text())
            return f"{split} split, step {found.get('step', run.step)}", found
    path = run.path / "metrics.jsonl"
    rows = (
        [r for r in metrics.read_rows(path) if r["split"] == "validation"] if path.is_file() else []
    )
    if rows:
        return f"held-out validation split, step {rows[-1]['step']}", rows[-1]
    return "none measured", {}


def model_card(run: workdir.Run, architecture: str) -> str:
    """The export's README.md: what the model is, how it was trained, what it scored."""
    c, m = run.cfg, run.model_cfg
    where, scores = _scores(run)
    numbers = [
        f"| {k} | {v:.4f} |"
        for k, v in scores.items()
        if isinstance(v, int | float) and k not in ("step", "split")
    ]
    shape = ", ".join(f"{k} {getattr(m, k)}" for k in models.get(m.family).SHAPE_FIELDS)
    pair = f", pairs from `{c.data.text_pair_field}`" if c.data.text_pair_field else ""
    how = f"{c.train.epochs} epochs" if c.train.epochs else f"{c.train.steps} steps"
    label = f", labels from `{c.data.label_field}`" if run.task.labelled else ""
    return "\n".join(
        [
            "---",
            "library_name: transformers",
            f"tags: [ptft_jax, {m.family}, {run.task.model_task}]",
            "---",
            "",
            f"# {run.path.name}",
            "",
            f"`{architecture}` trained with ptft_jax (task `{c.task}`), exported at step "
            f"{run.step}. Shape: {shape}.",
            "",
            "## Training",
            "",
            f"- data: `{c.data.source}`, text from `{c.data.text_field}`{pair}{label}, "
            f"max_seq_length {c.data.max_seq_length}",
            f"- started from: `{c.init_from or 'random initialisation'}`",
            f"- {how} of batch {c.train.batch_size}, learning rate {c.train.learning_rate}, "
            f"seed {c.train.seed}; the whole config is below",
            "",
            f"## Evaluation ({where})",
            "",
            *(["| metric | value |", "|---|---|", *numbers] if numbers else ["No evaluation yet."]),
            "",
            "## Use",
            "",
            "```python",
            f"from transformers import AutoTokenizer, {architecture}",
            "",
            "tokenizer = AutoTokenizer.from_pretrained(FOLDER)",
            f"model = {architecture}.from_pretrained(FOLDER)  # needs PyTorch",
            "```",
            "",
            "## Config",
            "",
            "```json",
            c.to_json_best_effort(indent=2),
            "```",
            "",
        ]
    )


@cli.guarded
def main(argv) -> None:
    del argv
    metrics.quiet_logs()
    if not flags.FLAGS.workdir or not flags.FLAGS.out:
        cli.fail("pass --workdir W and --out DIR.")
    print(json.dumps(export(flags.FLAGS.workdir, flags.FLAGS.out)))


if __name__ == "__main__":
    flags.DEFINE_string("workdir", None, "A ptft_jax run folder.")
    flags.DEFINE_string("out", None, "Folder to write the Hugging Face model into.")
    app.run(main, flags_parser=cli.parse_absl_flags)
