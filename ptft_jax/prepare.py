"""Prepare a pretraining corpus once: tokenize it on every core and pack it into a sharded
token store that training streams from (``data/store.py``).

    python -m ptft_jax.prepare --config configs/bert_base_mlm.py --out DIR [--workers N]

The config's data keys say what: ``data.source`` (files, folders and globs of .txt, .jsonl,
.csv, .parquet, optionally .gz/.zst; or a built-in), ``data.text_field``,
``data.max_seq_length``, ``data.eval_fraction`` (documents held out by a hash of their text),
``data.tokenizer`` (or a WordPiece trained on a seeded sample of
``data.tokenizer_sample_documents`` documents). Then ``--config.data.source=DIR`` trains on it.
A folder with ``manifest.json`` is finished; a rerun with the same inputs finds it so.
"""

from __future__ import annotations

import concurrent.futures
import errno
import json
import multiprocessing
import os
import pathlib
import shutil
import time

import numpy as np
from absl import app, flags
from ml_collections import config_flags
from tqdm import tqdm

from ptft_jax import cli, config, metrics
from ptft_jax.data import store, stream, tokenize

CHUNK = 512  # documents per tokenization job
_WORKER = {}


def _init_worker(tokenizer_dir: str, fraction: float) -> None:
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # the processes are the parallelism
    tokenizer = tokenize.load_tokenizer(tokenizer_dir)
    _WORKER.update(tokenizer=tokenizer, fraction=fraction)
    _WORKER["sep"] = tokenize.special_ids(tokenizer)["sep"]


def _encode(texts: list[str]) -> dict:
    """One chunk of documents as each split's token stream (``store.stream_of``), with counts."""
    # The Rust tokenizer without offsets or masks: the same ids as tokenizer(texts), faster.
    backend = _WORKER["tokenizer"].backend_tokenizer
    encoded = [e.ids for e in backend.encode_batch_fast(texts, add_special_tokens=False)]
    split = {name: [] for name in store.SPLITS}
    for text, ids in zip(texts, encoded, strict=True):
        held = store.held_out(text, _WORKER["fraction"])
        split["validation" if held else "train"].append(np.asarray(ids, np.int32))
    out = {name: store.stream_of(docs, _WORKER["sep"]) for name, docs in split.items()}
    out["tokens"] = sum(map(len, encoded))
    out["bytes"] = sum(len(t.encode("utf-8")) for t in texts)
    return out


def _chunks(documents, size: int):
    chunk = []
    for _, text in documents:
        chunk.append(text)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _encoded(chunks, tokenizer_dir: pathlib.Path, fraction: float, workers: int):
    """Every chunk's split streams (``_encode``), in order; ``workers`` processes run ahead."""
    if workers <= 1:
        _init_worker(str(tokenizer_dir), fraction)
        for chunk in chunks:
            yield len(chunk), _encode(chunk)
        return
    context = multiprocessing.get_context("spawn")
    args = (str(tokenizer_dir), fraction)
    with concurrent.futures.ProcessPoolExecutor(
        workers, mp_context=context, initializer=_init_worker, initargs=args
    ) as pool:
        pending = []
        for chunk in chunks:
            pending.append((len(chunk), pool.submit(_encode, chunk)))
            if len(pending) > 2 * workers:  # bounded: memory stays flat
                n, future = pending.pop(0)
                yield n, future.result()
        for n, future in pending:
            yield n, future.result()


def sample_texts(source: str, field: str, count: int, seed: int) -> list[str]:
    """A seeded uniform sample of ``count`` documents (reservoir sampling, one pass)."""
    rng = np.random.default_rng(seed)
    sample = []
    for i, (_, text) in enumerate(stream.documents(source, field)):
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


def _tokenizer(cfg):
    """``data.tokenizer``, or WordPiece trained on a seeded sample of the corpus (a first pass
    over it, which also finds a file that cannot be read before anything is written)."""
    d = cfg.data
    if d.tokenizer:
        return tokenize.get_tokenizer(d, pathlib.Path(), [], cfg.model.vocab_size, False)
    texts = sample_texts(d.source, d.text_field, d.tokenizer_sample_documents, cfg.train.seed)
    if not texts:
        raise stream.DataError(f"data.source {d.source!r} holds no text; check the corpus.")
    return tokenize.train_wordpiece(texts, cfg.model.vocab_size)


def prepare(cfg, out, workers: int = 0, per_shard: int = 65536) -> dict:
    """Write the token store of ``cfg``'s data into ``out``; returns its manifest."""
    config.validate(cfg)
    d, out = cfg.data, pathlib.Path(out).expanduser()
    inputs = {
        "sources": fingerprints(d.source),
        "text_field": d.text_field,
        "seq_len": d.max_seq_length,
        "held_out": {"rule": "blake2b-64(text) / 2**64 < fraction", "fraction": d.eval_fraction},
        "tokenizer_given": d.tokenizer,
    }
    if store.is_store(str(out)):
        found = store.read_manifest(out)
        if {k: found.get(k) for k in inputs} == inputs:
            print(f"{out} is already prepared from these inputs.", flush=True)
            return found
    tok = _start(cfg, out, inputs)
    t0 = time.time()
    shards, docs, tokens = _write(d, tok, out, workers or os.cpu_count() or 1, per_shard)
    splits = {
        s: {
            "blocks": sum(x["blocks"] for x in shards[s].done),
            "tokens": sum(x["tokens"] for x in shards[s].done),
            "shards": shards[s].done,
        }
        for s in store.SPLITS
    }
    manifest = {"format": store.FORMAT, **inputs, "dtype": shards["train"].dtype}
    manifest |= {"tokenizer": tokenize.tokenizer_fingerprint(tok), "documents": docs}
    manifest |= {"tokens": tokens, "splits": splits}
    store.write_manifest(out, manifest)
    seconds = time.time() - t0
    print(
        f"prepared {docs:,} documents, {tokens:,} tokens into {splits['train']['blocks']:,} "
        f"train / {splits['validation']['blocks']:,} validation blocks of {d.max_seq_length}"
        f" in {seconds:.1f}s ({tokens / max(seconds, 1e-9):,.0f} tokens/s): {out}",
        flush=True,
    )
    return manifest


def _start(cfg, out: pathlib.Path, inputs: dict):
    """The folder emptied of earlier shards, with its tokenizer. An unfinished folder of the
    same inputs keeps its tokenizer, so a prepare killed and run again writes what an
    uninterrupted one would (the shards are written again)."""
    started = out / ".inputs.json"
    same = started.is_file() and json.loads(started.read_text()) == inputs
    if same and (out / "tokenizer" / "tokenizer.json").is_file():
        tok = tokenize.load_tokenizer(str(out / "tokenizer"))
    else:
        tok, same = _tokenizer(cfg), False
    for part in (*(() if same else ("tokenizer",)), *store.SPLITS):
        shutil.rmtree(out / part, ignore_errors=True)
    (out / store.MANIFEST).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    if not same:
        tokenize.save_tokenizer(tok, out / "tokenizer")
        tok = tokenize.load_tokenizer(str(out / "tokenizer"))
        started.write_text(json.dumps(inputs) + "\n")
    return tok


def _write(d, tok, out: pathlib.Path, workers: int, per_shard: int):
    """Tokenize, split, pack and write every document: ``(shards per split, documents,
    tokens)``."""
    ids = tokenize.special_ids(tok)
    dtype = "uint16" if len(tok) <= 2**16 else "int32"
    packers = {s: store.Packer(d.max_seq_length, ids["cls"], ids["sep"]) for s in store.SPLITS}
    shards = {s: store.Shards(out / s, dtype, per_shard) for s in store.SPLITS}
    docs = tokens = 0
    total, t0 = stream.size(d.source), time.time()
    bar = tqdm(total=total or None, desc="prepare", unit="B", unit_scale=True, dynamic_ncols=True)
    chunks = _chunks(stream.documents(d.source, d.text_field), CHUNK)
    for n, encoded in _encoded(chunks, out / "tokenizer", d.eval_fraction, workers):
        for split in store.SPLITS:
            shards[split].write_all(packers[split].feed(encoded[split]))
        docs, tokens = docs + n, tokens + encoded["tokens"]
        seconds = max(time.time() - t0, 1e-9)
        bar.update(encoded["bytes"])
        bar.set_postfix(docs_s=f"{docs / seconds:,.0f}", tok_s=f"{tokens / seconds:,.0f}")
    bar.close()
    for split in store.SPLITS:
        for block in packers[split].finish():
            shards[split].write(block)
        shards[split].close()
        if not shards[split].done:
            raise stream.DataError(
                f"data.source {d.source!r} gave the {split} split no tokens; add text or "
                "change data.eval_fraction."
            )
    return shards, docs, tokens


@cli.guarded
def main(argv) -> None:
    if len(argv) > 1:
        cli.fail(f"unexpected arguments {' '.join(argv[1:])}; pass --config and --out.")
    metrics.quiet_logs()
    f = flags.FLAGS
    if f.config is None or not f.out:
        cli.fail("pass --config configs/<name>.py and --out DIR.")
    if f.workers < 0 or f.shard_blocks < 1:
        cli.fail("--workers must be 0 (every core) or more, and --shard_blocks at least 1.")
    try:
        prepare(f.config, f.out, f.workers, f.shard_blocks)
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
    app.run(main, flags_parser=cli.parse_config_flags)
