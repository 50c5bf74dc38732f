"""What an encoder learned, before any fine-tuning moves it: a linear probe of its frozen,
mean-pooled sentence embeddings (the contrastive task's probe: standardised features, an
L2-regularised softmax regression fitted by L-BFGS on the source's train split, accuracy on its
test split), for each starting point and for random init of its shape and tokenizer.

    python benchmarks/frozen_probe.py --init_from runs/en_mlm,runs/en_mlm_pre_ln,builtin:minilm_l6

Each is one contrastive run of a single step at learning rate 0 (its parameters never move, so
its probe is the frozen one) in a folder under ``--workdir``, deleted after. Prints one line a
start and the seconds taken; deterministic (the probe and the random init are seeded).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import shutil
import tempfile
import time

from ptft_jax import train, weights
from ptft_jax.config import base_config


def probe(init_from: str, random_like: str, source: str, workdir: pathlib.Path) -> float:
    c = base_config()
    c.task = "contrastive"
    c.init_from = init_from
    if random_like:  # random init: the shape and tokenizer of a start
        start = weights.resolve(random_like, False)
        c.model.update(start.fields)
        c.data.tokenizer = str(start.tokenizer)
    c.data.source = source  # its text is read but never trained on (learning rate 0)
    c.data.max_seq_length = 64
    c.train.update(
        probe_source=source,
        steps=1,
        batch_size=8,
        learning_rate=0.0,
        warmup_steps=0,
        eval_every=1,
        eval_batches=1,
        checkpoint_every=1,
    )
    shutil.rmtree(workdir, ignore_errors=True)
    summary = train.run(c, workdir, quiet=True)
    shutil.rmtree(workdir, ignore_errors=True)
    return summary["probe_accuracy"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--init_from", required=True, help="comma-separated starting points")
    p.add_argument("--source", default="builtin:mr", help="a labelled source (text, label)")
    p.add_argument("--workdir", default="", help="scratch folder (default: a temporary one)")
    args = p.parse_args()
    t0 = time.time()
    starts = args.init_from.split(",")
    scratch = pathlib.Path(args.workdir or tempfile.mkdtemp(prefix="probe"))
    rows = [row for s in starts for row in ((s, s, ""), (f"random init, {s}'s shape", "", s))]
    out = {}
    for i, (name, init_from, random_like) in enumerate(rows):
        out[name] = probe(init_from, random_like, args.source, scratch / str(i))
        print(f"{name}: probe accuracy {out[name]:.4f} on {args.source}", flush=True)
    if not args.workdir:
        scratch.rmdir()  # each start's folder is gone already
    print(json.dumps({"source": args.source, "probe_accuracy": out}))
    print(f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
