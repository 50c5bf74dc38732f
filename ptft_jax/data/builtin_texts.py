"""The built-in text sets' records: each read out of its extracted files (``builtin.extract``).

Labels are names, which predict prints and exports carry; sorted, they number the classes 0,
1, ... . A set with no published split keeps all of its records, duplicates included: the one
split rule (``sources.split_labeled``) drops exact-duplicate texts, keeping the first, and says
how many. The sentence-pair sets (snli, stsb, stsb_zh) come with official splits, kept as
published (``load_builtin_splits``); their records carry the file and line they came from.
"""

from __future__ import annotations

import gzip
import json
import logging
import pathlib
import re

import numpy as np

from ptft_jax.data import builtin_tagged
from ptft_jax.data.builtin import BUILTINS, extract
from ptft_jax.data.files import Record
from ptft_jax.errors import DataError

log = logging.getLogger(__name__)

MR_LABELS = ("negative", "positive")  # score < 0, score > 0 (sorted: ids 0 and 1)


def untagged(line: str) -> str:
    """The text of a line of the tagged People's Daily corpus (``word/tag`` tokens between
    spaces): the words joined, with a space only between two Latin letters or digits."""
    out = ""
    for token in line.split():
        word = token.rsplit("/", 1)[0]
        if (
            out
            and out[-1].isascii()
            and out[-1].isalnum()
            and word[:1].isascii()
            and word[:1].isalnum()
        ):
            out += " "
        out += word
    return out


def _file(folder: pathlib.Path, name: str) -> pathlib.Path:
    return folder / pathlib.PurePosixPath(BUILTINS[name].member).name


def _wiki_en(folder: pathlib.Path) -> list[dict]:
    articles = json.loads((folder / "summaries_en-us.json").read_text(encoding="utf-8"))
    return [{"text": a["extract"]} for a in articles.values() if a.get("extract", "").strip()]


def _zh_news(folder: pathlib.Path) -> list[dict]:
    lines = _file(folder, "zh_news").read_text(encoding="utf-8").splitlines()
    return [{"text": untagged(line)} for line in lines if line.strip()]


def _thucnews(folder: pathlib.Path) -> list[dict]:
    lines = _file(folder, "thucnews").read_text(encoding="utf-8").splitlines()
    return [{"text": text, "label": label} for label, text in (x.split("\t", 1) for x in lines)]


def _mr(folder: pathlib.Path) -> list[dict]:
    records = []
    # CRLF line ends and an "id<TAB>sentiment<TAB>text" header; a score of 0 has no label.
    text = _file(folder, "mr").read_text(encoding="utf-8", errors="replace")
    for line in text.splitlines():
        parts = line.split("\t", 2)
        try:
            score = float(parts[1]) if len(parts) == 3 else 0.0
        except ValueError:  # the header line
            continue
        if score != 0:
            records.append({"text": parts[2], "label": MR_LABELS[int(score > 0)]})
    return records


def _bbc(folder: pathlib.Path) -> list[dict]:
    classes = sorted(p.name for p in folder.iterdir() if p.is_dir())
    return [
        {"text": path.read_text(encoding="utf-8", errors="replace"), "label": cls}
        for cls in classes
        for path in sorted((folder / cls).glob("*.txt"))
    ]


def _trec(folder: pathlib.Path) -> list[dict]:
    """``COARSE:fine question`` a line; the file is train_1000 ... train_5500 one after another
    (each a subset of the next), so the split rule's duplicate rule leaves train_5500."""
    lines = _file(folder, "trec").read_text(encoding="utf-8").splitlines()
    out = []
    for line in lines:
        label, _, text = line.partition(" ")
        out.append({"text": text, "label": label.split(":", 1)[0]})
    return out


_SMS_ROW = re.compile(r"^\d+,([01]),(.*)$")  # "id,spam,text" (the text maybe quoted)
_SMS_RAW = re.compile(r"^(ham|spam)\t(.*)$")  # the collection's own lines, left unquoted


def _sms_spam(folder: pathlib.Path) -> list[dict]:
    """One message a line: the file's CSV has quotes a CSV reader would run across lines (737
    messages lost), so each line is read on its own; the 5,574 messages of the collection."""
    out = []
    for line in _file(folder, "sms_spam").read_text(encoding="utf-8").splitlines()[1:]:
        row, raw = _SMS_ROW.match(line), _SMS_RAW.match(line)
        if row:
            label, text = ("ham", "spam")[int(row[1])], row[2]
            if len(text) > 1 and text[0] == text[-1] == '"':
                text = text[1:-1].replace('""', '"')
        elif raw:
            label, text = raw[1], raw[2]
        else:
            raise DataError(f"builtin:sms_spam has a line of no known form: {line[:60]!r}.")
        out.append({"text": text, "label": label})
    return out


def _zh_sentiment(folder: pathlib.Path) -> list[dict]:
    return [
        {"text": line, "label": label}
        for name, label in (("neg.txt", "negative"), ("pos.txt", "positive"))
        for line in (folder / name).read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]


SNLI_LABELS = ("contradiction", "entailment", "neutral")
_SNLI_FILES = {"train": "snli_1.0_train_subset.jsonl", "test": "snli_1.0_test.jsonl"}


def held_out_groups(records: list, key, fraction: float = 0.1) -> tuple[list, list]:
    """``records`` as (kept, held out): the held-out part is a ``numpy.random.default_rng(0)``
    choice of ``int(fraction * groups)`` of the groups of records that share ``key(record)``,
    so no group is on both sides; both keep the records' order."""
    groups = list(dict.fromkeys(key(r) for r in records))
    chosen = np.random.default_rng(0).permutation(len(groups))[: int(fraction * len(groups))]
    held = {groups[i] for i in chosen}
    return [r for r in records if key(r) not in held], [r for r in records if key(r) in held]


def _snli(folder: pathlib.Path) -> dict[str, list[dict]]:
    """The official test split, and the first 100,000 official train pairs less a validation
    split of 10% of their premises: a premise has about three hypotheses, so a split by pair
    would show a model the validation premises in training. Grouped by the premise's text, not
    its captionID: 22 premises appear under two captionIDs."""
    read, unlabeled = {}, {}
    for split, name in _SNLI_FILES.items():
        rows, unlabeled[split] = [], 0
        with (folder / name).open(encoding="utf-8") as f:
            for n, line in enumerate(f, 1):
                pair = json.loads(line)
                if pair["gold_label"] == "-":
                    unlabeled[split] += 1
                    continue
                fields = {"text": pair["sentence1"], "text_pair": pair["sentence2"]}
                fields["label"] = pair["gold_label"]
                rows.append(Record(fields, f"builtin:snli {name} line {n}"))
        read[split] = rows
    left_out = sum(unlabeled.values())
    if left_out:
        log.info(
            "builtin:snli: %d of %d pairs (%d of train, %d of test) have the gold_label '-' (no "
            "majority among the annotators) and are left out, as SNLI's own papers do",
            left_out,
            left_out + sum(map(len, read.values())),
            unlabeled["train"],
            unlabeled["test"],
        )
    train, validation = held_out_groups(read["train"], lambda r: r["text"])
    return {"train": train, "validation": validation, "test": read["test"]}


_STSB_SPLITS = {"train": "train", "dev": "validation", "test": "test"}
_STSB_HEADER = "split genre dataset year sid score sentence1 sentence2".split()


def _stsb(folder: pathlib.Path) -> dict[str, list[dict]]:
    """One gzipped TSV of the three splits; tabs only, no quoting (412 pairs hold a '"'); the
    score a float from 0 to 5."""
    path = folder / "stsbenchmark.tsv.gz"
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")
    if lines[0].rstrip("\r").split("\t") != _STSB_HEADER:
        raise DataError(f"{path} does not start with the STS benchmark's header; delete {folder}.")
    out: dict[str, list[dict]] = {split: [] for split in _STSB_SPLITS.values()}
    for n, line in enumerate(lines[1:], 2):
        if not line:
            continue
        split, *_, score, text, pair = line.rstrip("\r").split("\t")
        fields = {"text": text, "text_pair": pair, "label": float(score)}
        out[_STSB_SPLITS[split]].append(Record(fields, f"builtin:stsb {path.name} line {n}"))
    return out


_STSB_ZH_FILES = {"train": "train", "validation": "valid", "test": "test"}


def _stsb_zh(folder: pathlib.Path) -> dict[str, list[dict]]:
    """``sentence1<TAB>sentence2<TAB>score`` a line, the score a whole number from 0 to 5."""
    out = {}
    for split, stem in _STSB_ZH_FILES.items():
        name = f"STS-B.{stem}.data"
        rows = []
        for n, line in enumerate((folder / name).read_text(encoding="utf-8").split("\n"), 1):
            if line:
                text, pair, score = line.rstrip("\r").split("\t")
                fields = {"text": text, "text_pair": pair, "label": float(score)}
                rows.append(Record(fields, f"builtin:stsb_zh {name} line {n}"))
        out[split] = rows
    return out


def _squad(folder: pathlib.Path) -> dict[str, list[dict]]:
    """SQuAD v1.1: the official dev file is the test split (its test set is hidden), and a
    seeded 10% of the training articles (by title, so no paragraph is on both sides) the
    validation split."""
    from ptft_jax.data.files import read_squad

    train = read_squad(folder / "train-v1.1.json")
    kept, held = held_out_groups(train, lambda r: r["title"])
    return {"train": kept, "validation": held, "test": read_squad(folder / "dev-v1.1.json")}


READERS = {
    "wiki_en": _wiki_en,
    "mr": _mr,
    "bbc": _bbc,
    "zh_news": _zh_news,
    "thucnews": _thucnews,
    "trec": _trec,
    "sms_spam": _sms_spam,
    "zh_sentiment": _zh_sentiment,
    "peoples_daily_ner": builtin_tagged.peoples_daily_ner,  # {"tokens", "tags"}: no split
}
# Sets published with their own splits: each reader returns {split: records}.
SPLIT_READERS = {
    "snli": _snli,
    "stsb": _stsb,
    "stsb_zh": _stsb_zh,
    "conll2003": builtin_tagged.conll2003,  # {"tokens", "tags"}
    "squad": _squad,  # {"id", "title", "question", "context", "answers"}
}
OFFICIAL_SPLITS = tuple(SPLIT_READERS)
TEXT_BUILTINS = tuple(READERS) + OFFICIAL_SPLITS


def _known(name: str) -> None:
    if name not in TEXT_BUILTINS:
        known = ", ".join(f"builtin:{n}" for n in TEXT_BUILTINS)
        raise DataError(f"'builtin:{name}' is not a text data set; use one of {known}.")


def load_builtin_texts(name: str) -> list[dict]:
    """Returns the records of text built-in ``name``: ``{"text"}`` for wiki_en and zh_news (a
    paragraph each); ``{"text", "label"}`` for mr (``negative`` or ``positive``), bbc (its five
    topics), thucnews (its ten), trec (six question types), sms_spam (``ham`` or ``spam``) and
    zh_sentiment (``negative`` or ``positive``). The sets of ``OFFICIAL_SPLITS`` are read with
    ``load_builtin_splits``."""
    _known(name)
    if name in SPLIT_READERS:
        raise DataError(
            f"builtin:{name} comes in its own splits; read it with load_builtin_splits."
        )
    return READERS[name](extract(name))


def load_builtin_splits(name: str) -> dict[str, list[dict]]:
    """Returns the official ``train``, ``validation`` and ``test`` splits of built-in ``name``
    (one of ``OFFICIAL_SPLITS``), records ``{"text", "text_pair", "label"}``: snli (``label``
    one of ``SNLI_LABELS``; its validation split is cut from train by premise, see ``_snli``),
    stsb and stsb_zh (``label`` a float similarity from 0 to 5)."""
    _known(name)
    if name not in SPLIT_READERS:
        raise DataError(f"builtin:{name} has no official splits; read it with load_builtin_texts.")
    return SPLIT_READERS[name](extract(name))
