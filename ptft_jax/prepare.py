"""Prepare a pretraining corpus once: tokenize it on every core and pack it into a sharded
token store that training streams from (``data/store.py``).

    python -m ptft_jax.prepare --config configs/bert_base_mlm.py --out DIR [--workers N]
    python -m ptft_jax.prepare ... --runner=DirectRunner|DataflowRunner|FlinkRunner|SparkRunner
        [the runner's own --flags=...]

The config's data keys say what: ``data.source`` (files, folders and globs of .txt, .jsonl,
.csv, .parquet, optionally .gz/.zst; or a built-in), ``data.text_field``,
``data.max_seq_length``, ``data.eval_fraction`` (documents held out by a hash of their text),
``data.tokenizer`` (or the task's tokenizer, WordPiece or byte-level BPE, trained on a seeded
sample of ``data.tokenizer_sample_documents`` documents). The task says what a block is: MLM's
``[CLS] ... [SEP]`` blocks, or causal_lm's next-token windows (``data/store.py``). Then
``--config.data.source=DIR`` trains that task on it.

Each input file is packed into its own shards (``data/writer.py``), by local worker processes
or by an Apache Beam pipeline (``data/beam.py``): both write the same records. A folder with
``manifest.json`` is finished; a rerun with the same inputs finds it so, and a rerun of an
unfinished one skips the inputs already packed.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import errno
import importlib.util
import json
import multiprocessing
import os
import pathlib
import shutil
import sys
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags
from tqdm import tqdm

from ptft_jax import cli, config, metrics, tasks
from ptft_jax.data import coverage, segment, store, stream, tokenize, writer
from ptft_jax.tasks.base import trained_tokenizer_kind


def _encoded(chunks, tokenizer_dir: pathlib.Path, fraction, blocks: str, segmenter, workers: int):
    """``(key, writer.encode(texts))`` of every ``(key, texts)`` of ``chunks``, in order;
    ``workers`` processes run ahead."""
    args = (str(tokenizer_dir), fraction, blocks, segmenter)
    if workers <= 1:
        writer.start_worker(*args)
        for key, texts in chunks:
            yield key, writer.encode(texts)
        return
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=writer.start_worker, initargs=args
    ) as pool:
        pending = []
        for key, texts in chunks:
            pending.append((key, pool.submit(writer.encode, texts)))
            if len(pending) > 2 * workers:  # bounded: memory stays flat
                key, future = pending.pop(0)
                yield key, future.result()
        for key, future in pending:
            yield key, future.result()


def sample_texts(source: str, field: str, count: int, seed: int, skip_empty=False) -> list[str]:
    """A seeded uniform sample of ``count`` documents (reservoir sampling, one pass)."""
    rng = np.random.default_rng(seed)
    sample = []
    for i, (_, text) in enumerate(stream.documents(source, field, skip_empty)):
        if i < count:
            sample.append(text)
        else:
            j = int(rng.integers(0, i + 1))
            if j < count:
                sample[j] = text
    return sample


def fingerprints(source: str) -> list[dict]:
    """What the store was made from: each file's path, size and modification time."""
    if source.startswith(("builtin:", "hf:")):
        return [{"source": source}]
    return [
        {"path": str(p), "bytes": p.stat().st_size, "mtime_ns": p.stat().st_mtime_ns}
        for p in stream.files(source)
    ]


def _tokenizer(cfg, kind: str):
    """``data.tokenizer``, or one of ``kind`` (the task's or the model family's:
    ``trained_tokenizer_kind``) trained on a seeded sample of the corpus (a first pass over it,
    which also finds a file that cannot be read before anything is written)."""
    d = cfg.data
    if d.tokenizer:
        return tokenize.get_tokenizer(d, pathlib.Path(), [], cfg.model.vocab_size, False)
    skip = d.get("skip_empty_texts", False)
    texts = sample_texts(d.source, d.text_field, d.tokenizer_sample_documents, cfg.train.seed, skip)
    if not texts:
        raise stream.DataError(f"data.source {d.source!r} holds no text; check the corpus.")
    return tokenize.get_tokenizer(d, pathlib.Path(), texts, cfg.model.vocab_size, False, kind)


def _inputs(cfg, blocks: str, kind: str, segmenter: str, per_shard: int) -> dict:
    """What the store is made from and how (written with it: a rerun with the same inputs
    finds the work done, or an unfinished folder's finished inputs)."""
    d = cfg.data
    inputs = {
        "blocks": blocks,
        "sources": fingerprints(d.source),
        "text_field": d.text_field,
        "seq_len": d.max_seq_length,
        "held_out": {"rule": "blake2b-64(text) / 2**64 < fraction", "fraction": d.eval_fraction},
        "tokenizer_given": d.tokenizer,
        "shard_blocks": per_shard,
    }
    if segmenter:
        inputs["word_segmenter"] = segment.version(segmenter)
    if not d.tokenizer:  # what the trained tokenizer depends on
        inputs["tokenizer_training"] = {
            "vocab_size": cfg.model.vocab_size,
            "sample_documents": d.tokenizer_sample_documents,
            "seed": cfg.train.seed,
            "lowercase": d.lowercase,
            "keep_accents": d.keep_accents,
            "kind": kind,
        }
        if d.vocab_characters:  # absent otherwise: folders prepared before it stay valid
            inputs["tokenizer_training"]["vocab_characters"] = d.vocab_characters
    return inputs


def prepare(cfg, out, workers: int = 0, per_shard: int = 65536, options=()) -> dict:
    """Write the token store of ``cfg``'s data into ``out``; returns its manifest. ``options``
    (``--runner=...`` and its flags) run the Apache Beam pipeline instead of local workers."""
    config.validate(cfg)
    task = tasks.task_class(cfg.task)
    if getattr(task, "store_blocks", None) is None:
        readers = [n for n in tasks.REGISTRY if getattr(tasks.task_class(n), "store_blocks", 0)]
        raise config.ConfigError(
            f"task={cfg.task} trains from its source text, not from a prepared folder; prepare "
            f"with a config of task {' or '.join(readers)}."
        )
    d, out = cfg.data, pathlib.Path(out).expanduser()
    kind = trained_tokenizer_kind(task, cfg.model.family)
    # Whole-word masking's words, marked once here (MLM blocks; jieba's version is recorded).
    segmenter = d.word_segmenter if task.store_blocks == "mlm" else ""
    names = stream.inputs(d.source)
    inputs = _inputs(cfg, task.store_blocks, kind, segmenter, per_shard)
    if store.is_store(str(out)):
        found = store.read_manifest(out)
        if {k: found.get(k) for k in inputs} == inputs:
            print(f"{out} is already prepared from these inputs.", flush=True)
            return found
    tok = _start(cfg, out, inputs, kind)
    done = writer.finished_units(out)
    todo = [(i, name) for i, name in enumerate(names) if done.get(i, {}).get("input") != name]
    for i, _ in todo:
        writer.clear_unit(out, i)
    if len(todo) < len(names):
        print(f"{len(names) - len(todo)} of {len(names)} inputs were already packed.", flush=True)
    t0 = time.time()
    if options:
        print(f"running the Apache Beam pipeline; its log: {out / 'beam.log'}", flush=True)
        with _stderr_to(out / "beam.log"):  # Beam's and its workers' log lines
            from ptft_jax.data import beam

            fraction, seq_len = d.eval_fraction, d.max_seq_length
            blocks = task.store_blocks
            skip = d.get("skip_empty_texts", False)
            beam.run(
                out,
                todo,
                d.text_field,
                fraction,
                seq_len,
                per_shard,
                blocks,
                segmenter,
                options,
                skip,
            )
    else:
        _write(
            d,
            out,
            todo,
            workers or os.cpu_count() or 1,
            per_shard,
            done,
            task.store_blocks,
            segmenter,
        )
    manifest = _manifest(d, inputs, tok, writer.finished_units(out), len(names))
    writer.write_manifest(out, manifest)
    seconds = time.time() - t0
    splits, tokens = manifest["splits"], manifest["tokens"]
    print(
        f"prepared {manifest['documents']:,} documents, {tokens:,} tokens into "
        f"{splits['train']['blocks']:,} train / {splits['validation']['blocks']:,} validation "
        f"blocks of {d.max_seq_length} in {seconds:.1f}s: {out}",
        flush=True,
    )
    coverage.report_unknown(tok, {"all splits": (manifest["unknown"], tokens)}, d.source)
    return manifest


def _start(cfg, out: pathlib.Path, inputs: dict, tokenizer_kind: str):
    """The folder with its tokenizer, emptied of the work of other inputs. An unfinished folder
    of the same inputs keeps its tokenizer and its finished inputs, so a prepare killed and run
    again writes what an uninterrupted one would, without packing those inputs again."""
    started = out / ".inputs.json"
    same = started.is_file() and json.loads(started.read_text()) == inputs
    if same and (out / "tokenizer" / "tokenizer.json").is_file():
        tok = tokenize.load_tokenizer(str(out / "tokenizer"))
    else:
        tok, same = _tokenizer(cfg, tokenizer_kind), False
    if not same:
        for part in ("tokenizer", ".done", *store.SPLITS):
            shutil.rmtree(out / part, ignore_errors=True)
    (out / store.MANIFEST).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    if not same:
        tokenize.save_tokenizer(tok, out / "tokenizer")
        tok = tokenize.load_tokenizer(str(out / "tokenizer"))
        started.write_text(json.dumps(inputs) + "\n")
    return tok


def _write(d, out: pathlib.Path, todo, workers: int, per_shard, done: dict, blocks, segmenter):
    """Tokenize on ``workers`` processes and pack, input by input, every input of ``todo``."""
    tok = tokenize.load_tokenizer(str(out / "tokenizer"))
    ids, dtype = writer.separators(tok, blocks), writer.dtype_of(tok)
    names = dict(todo)
    total, t0 = stream.size(d.source), time.time()
    bar = tqdm(total=total or None, desc="prepare", unit="B", unit_scale=True, dynamic_ncols=True)
    bar.update(sum(r["bytes"] for r in done.values()) if total else 0)
    docs = tokens = 0
    unit = None
    chunks = writer.chunks(todo, d.text_field, d.get("skip_empty_texts", False))
    fraction = d.eval_fraction
    encoded_chunks = _encoded(chunks, out / "tokenizer", fraction, blocks, segmenter, workers)
    for (index, last), encoded in encoded_chunks:
        if unit is None:
            seq_len = d.max_seq_length
            name, words = names[index], bool(segmenter)
            unit = writer.Unit(out, index, name, seq_len, ids, dtype, per_shard, blocks, words)
        unit.add(encoded)
        if last:
            unit.finish()
            unit = None
        docs, tokens = docs + encoded["documents"], tokens + encoded["tokens"]
        seconds = max(time.time() - t0, 1e-9)
        bar.update(encoded["bytes"])
        bar.set_postfix(docs_s=f"{docs / seconds:,.0f}", tok_s=f"{tokens / seconds:,.0f}")
    bar.close()


def _manifest(d, inputs: dict, tok, records: dict, count: int) -> dict:
    """The store's manifest from its inputs' records (``writer.Unit``), in input order."""
    records = [records[i] for i in range(count)]
    if not sum(r["documents"] for r in records):
        raise stream.DataError(f"data.source {d.source!r} holds no text; check the corpus.")
    splits = {}
    for split in store.SPLITS:
        shards = [s for r in records for s in r["shards"][split]]
        if not shards:
            raise stream.DataError(
                f"data.source {d.source!r} gave the {split} split no tokens; add text or "
                "change data.eval_fraction."
            )
        splits[split] = {
            "blocks": sum(s["blocks"] for s in shards),
            "tokens": sum(s["tokens"] for s in shards),
            "shards": shards,
        }
    manifest = {"format": store.FORMAT, **inputs, "dtype": writer.dtype_of(tok)}
    manifest |= {"tokenizer": tokenize.tokenizer_fingerprint(tok)}
    manifest |= {"documents": sum(r["documents"] for r in records)}
    manifest |= {"tokens": sum(r["tokens"] for r in records), "splits": splits}
    # [UNK] tokens (folders written before they were counted say nothing of theirs)
    manifest |= {"unknown": sum(r.get("unknown", 0) for r in records)}
    return manifest


@contextlib.contextmanager
def _stderr_to(path: pathlib.Path):
    """Standard error, this process's and its children's, appended to ``path``."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "ab") as f:
        os.dup2(f.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def _beam_options(runner: str, extra: list[str], workers: int) -> list[str]:
    """Apache Beam's pipeline options: the runner, its own flags, and for the DirectRunner one
    worker process per core unless told otherwise."""
    options = [f"--runner={runner}", *extra]
    if runner == "DirectRunner" and not any(o.startswith("--direct_") for o in extra):
        workers = workers or os.cpu_count() or 1
        options += [f"--direct_num_workers={workers}", "--direct_running_mode=multi_processing"]
    return options


def _parse(argv: list[str]) -> list[str]:
    """prepare's flags; with ``--runner``, the flags it does not define are the runner's (they
    come back after the positional arguments, for ``main``)."""
    if not cli.flag_value(argv[1:], "runner"):
        return cli.parse_config_flags(argv)
    ours, theirs = [argv[0]], []
    for arg in argv[1:]:
        name = arg[2:].split("=", 1)[0] if arg.startswith("--") else ""
        mine = not name or name.split(".")[0] == "config" or name in flags.FLAGS
        (ours if mine else theirs).append(arg)
    return [*cli.parse_config_flags(ours), *theirs]


@cli.guarded
def main(argv) -> None:
    f = flags.FLAGS
    positional = [a for a in argv[1:] if not a.startswith("--")]
    if positional:
        cli.fail(f"unexpected arguments {' '.join(positional)}; pass --config and --out.")
    metrics.quiet_logs()
    if f.config is None or not f.out:
        cli.fail("pass --config configs/<name>.py and --out DIR.")
    if f.workers < 0 or f.shard_blocks < 1:
        cli.fail("--workers must be 0 (every core) or more, and --shard_blocks at least 1.")
    options = _beam_options(f.runner, argv[1:], f.workers) if f.runner else []
    if options:
        if importlib.util.find_spec("apache_beam") is None:
            cli.fail(f'--runner={f.runner} needs Apache Beam: pip install "ptft_jax[beam]".')
    try:
        prepare(f.config, f.out, f.workers, f.shard_blocks, options)
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise
        cli.fail(
            f"The disk is full ({e.filename or f.out}); free space there or choose another "
            "--out, then run the same command again (the folder has no manifest: unfinished)."
        )


if __name__ == "__main__":
    config_flags.DEFINE_config_file("config", None, "Config file (a get_config() .py).")
    flags.DEFINE_string("out", None, "Folder to write the token store into.")
    flags.DEFINE_integer("workers", 0, "Tokenizing processes (0: one per core).")
    flags.DEFINE_integer("shard_blocks", 65536, "Blocks per ArrayRecord shard.")
    flags.DEFINE_string(
        "runner",
        "",
        "An Apache Beam runner (DirectRunner, DataflowRunner, FlinkRunner, "
        "SparkRunner) instead of local workers; the flags prepare does not define go to it.",
    )
    app.run(main, flags_parser=_parse)
