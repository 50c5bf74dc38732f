"""The built-in text sets' records: each read out of its extracted files (``builtin.extract``).

Labels are names, which predict prints and exports carry; sorted, they number the classes 0,
1, ... . Every set keeps all of its records, duplicates included: the one split rule
(``sources.split_labeled``) drops exact-duplicate texts, keeping the first, and says how many.
"""

from __future__ import annotations

import json
import pathlib
import re

from ptft_jax.data.builtin import BUILTINS, extract
from ptft_jax.errors import DataError

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


READERS = {
    "wiki_en": _wiki_en,
    "mr": _mr,
    "bbc": _bbc,
    "zh_news": _zh_news,
    "thucnews": _thucnews,
    "trec": _trec,
    "sms_spam": _sms_spam,
    "zh_sentiment": _zh_sentiment,
}
TEXT_BUILTINS = tuple(READERS)


def load_builtin_texts(name: str) -> list[dict]:
    """Returns the records of text built-in ``name``: ``{"text"}`` for wiki_en and zh_news (a
    paragraph each); ``{"text", "label"}`` for mr (``negative`` or ``positive``), bbc (its five
    topics), thucnews (its ten), trec (six question types), sms_spam (``ham`` or ``spam``) and
    zh_sentiment (``negative`` or ``positive``)."""
    if name not in READERS:
        known = ", ".join(f"builtin:{n}" for n in TEXT_BUILTINS)
        raise DataError(f"'builtin:{name}' is not a text data set; use one of {known}.")
    return READERS[name](extract(name))
