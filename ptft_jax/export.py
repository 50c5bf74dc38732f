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

from ptft_jax import cli, config, hf, metrics, workdir

ARCHITECTURES = {
    "mlm": "BertForMaskedLM",
    "classification": "BertForSequenceClassification",
    "contrastive": "BertModel",
}


def export(workdir_path: str, out: str) -> dict:
    """Write ``out`` from the latest checkpoint in ``workdir_path``; returns a short summary."""
    run = workdir.load(workdir_path)
    params = jax.device_get(run.params)
    architecture = ARCHITECTURES[config.model_task(run.cfg)]
    if run.model_cfg.next_sentence:
        architecture = "BertForPreTraining"
    fields = dataclasses.asdict(run.model_cfg)
    id2label = None
    if config.model_task(run.cfg) == "classification" and run.model_cfg.num_labels > 1:
        id2label = dict(enumerate(workdir.label_names(run)))
    hf.export(params, fields, run.tokenizer, pathlib.Path(out), architecture, id2label)
    return {"out": str(out), "architecture": architecture, "step": run.step}


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
