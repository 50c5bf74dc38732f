"""Prepare a pretraining corpus with ptft_jax and with Hugging Face's run_mlm recipe, side by side.

    python benchmarks/prepare_vs_hf.py --corpus FILE.txt --tokenizer DIR [--seq 128]
        [--workers N] [--workdir DIR] [--out results.json]

Both tokenize the same text file (one document a line) with the same tokenizer into blocks of
``--seq`` tokens on disk, each in its own process, one after the other:

* ``ptft_jax``: this script again with ``--_run ptft_jax``: ``ptft_jax.prepare.prepare`` (what
  ``python -m ptft_jax.prepare --workers N`` runs) on a config written for the corpus: worker
  processes, ArrayRecord shards (it also holds out a validation split).
* ``hf``: this script again with ``--_run hf``: ``datasets.load_dataset("text")``, then
  ``.map(tokenize, batched=True, num_proc=N)`` and ``.map(group_texts, batched=True,
  num_proc=N)`` as transformers' ``examples/pytorch/language-modeling/run_mlm.py`` does
  (without line-by-line), then ``save_to_disk``; its own datasets cache in the work folder.

Reported per system: wall time of its process, tokens/s (the tokenizer's tokens of the whole
corpus over that wall time), and peak RSS: of the main process and, separately, the largest of
its worker processes (``getrusage``; a worker's is the most any one of them held).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = """
from ptft_jax import config

def get_config():
    c = config.base_config()
    c.data.source = {corpus!r}
    c.data.tokenizer = {tokenizer!r}
    c.data.max_seq_length = {seq}
    c.model.vocab_size = {vocab}
    return c
"""


def _rss() -> dict:
    kib = 1024
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib
    return {"peak_rss_main": own, "peak_rss_worker": children}


def run_hf(corpus: str, tokenizer: str, seq: int, workers: int, out: pathlib.Path) -> dict:
    """The run_mlm recipe: tokenize, group into blocks of ``seq``, save."""
    from itertools import chain

    import datasets
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer)
    raw = datasets.load_dataset("text", data_files=corpus, cache_dir=str(out / "cache"))["train"]

    def tokenize(batch):
        return tok(batch["text"], return_special_tokens_mask=True)

    tokenized = raw.map(tokenize, batched=True, num_proc=workers, remove_columns=["text"])

    def group_texts(examples):
        joined = {k: list(chain(*examples[k])) for k in examples}
        total = (len(joined["input_ids"]) // seq) * seq
        return {k: [t[i : i + seq] for i in range(0, total, seq)] for k, t in joined.items()}

    grouped = tokenized.map(group_texts, batched=True, num_proc=workers)
    grouped.save_to_disk(str(out / "blocks"))
    return {"blocks": len(grouped), **_rss()}


def run_ptft_jax(config: pathlib.Path, workers: int, out: pathlib.Path) -> dict:
    """``python -m ptft_jax.prepare``'s function on the written config."""
    import runpy

    from ptft_jax import prepare

    manifest = prepare.prepare(runpy.run_path(str(config))["get_config"](), out, workers)
    return {"blocks": sum(s["blocks"] for s in manifest["splits"].values()), **_rss()}


def _count_tokens(corpus: str, tokenizer: str) -> int:
    from ptft_jax.data import tokenize

    tok = tokenize.load_tokenizer(tokenizer)
    total = 0
    with open(corpus, encoding="utf-8") as f:
        batch = []
        for line in f:
            if line.strip():
                batch.append(line.rstrip("\n"))
            if len(batch) == 4096:
                total += sum(map(len, tok(batch, add_special_tokens=False)["input_ids"]))
                batch = []
        if batch:
            total += sum(map(len, tok(batch, add_special_tokens=False)["input_ids"]))
    return total


def _spawn(args: list[str]) -> tuple[float, str]:
    t0 = time.time()
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.stderr.write(done.stderr[-3000:])
        raise SystemExit(f"{args[:4]} failed")
    return time.time() - t0, done.stdout


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--corpus", required=True)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--workdir", default=str(pathlib.Path(tempfile.gettempdir()) / "prepare_vs_hf"))
    p.add_argument("--out", default="")
    p.add_argument("--_run", default="", help=argparse.SUPPRESS)
    a = p.parse_args()
    work = pathlib.Path(a.workdir)
    if a._run == "hf":
        print(json.dumps(run_hf(a.corpus, a.tokenizer, a.seq, a.workers, work / "hf")))
        return
    if a._run == "ptft_jax":
        print(json.dumps(run_ptft_jax(work / "config.py", a.workers, work / "ptft_jax")))
        return
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    from ptft_jax.data import tokenize

    vocab = len(tokenize.load_tokenizer(a.tokenizer))
    config = work / "config.py"
    config.write_text(
        CONFIG.format(corpus=a.corpus, tokenizer=a.tokenizer, seq=a.seq, vocab=max(vocab, 8))
    )
    tokens = _count_tokens(a.corpus, a.tokenizer)
    rows = {}
    for name in ("ptft_jax", "hf"):
        cmd = [sys.executable, __file__, "--_run", name, "--corpus", a.corpus, "--tokenizer"]
        cmd += [a.tokenizer, "--seq", str(a.seq), "--workers", str(a.workers)]
        wall, out = _spawn([*cmd, "--workdir", str(work)])
        rows[name] = {"wall_s": wall, **json.loads(out.strip().splitlines()[-1])}
    mb = pathlib.Path(a.corpus).stat().st_size / 1e6
    for name, r in rows.items():
        r["tokens_per_s"] = tokens / r["wall_s"]
        print(
            f"{name:9s} {mb:7.1f} MB  {r['wall_s']:7.1f} s  {r['tokens_per_s']:>11,.0f} tokens/s  "
            f"peak RSS main {r['peak_rss_main'] / 2**30:.2f} GiB, worker "
            f"{r['peak_rss_worker'] / 2**30:.2f} GiB"
        )
    result = {"corpus_mb": mb, "tokens": tokens, "workers": a.workers, "systems": rows}
    result["speedup"] = rows["hf"]["wall_s"] / rows["ptft_jax"]["wall_s"]
    print(json.dumps(result))
    if a.out:
        pathlib.Path(a.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
