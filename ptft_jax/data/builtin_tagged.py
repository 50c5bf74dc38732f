"""The built-in sets tagged word by word (token classification): records ``{"tokens", "tags"}``
with BIO tags, read out of their extracted files (``builtin.extract``).

``peoples_daily_ner``: People's Daily, January 1998 (Peking University's part-of-speech tagged
corpus, the one ``zh_news`` reads as text), cut into sentences after 。！？ and tagged by
character: a person name (``nr``, the family and given names tagged apart, one entity when
adjacent) is PER, a place (``ns``) LOC, an organisation (``nt``) ORG. It has no published split:
the one rule splits it. ``conll2003``: CoNLL-2003's English train/valid/test files as
published (IOB2 tags PER, LOC, ORG, MISC).
"""

from __future__ import annotations

import pathlib

from ptft_jax.data.files import Record, read_file

ENTITY_TYPES = {"nr": "PER", "ns": "LOC", "nt": "ORG"}  # People's Daily tags -> entity types
SENTENCE_ENDS = ("。", "！", "？")
CONLL_FILES = {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}


def tagged_sentences(line: str) -> list[tuple[list[str], list[str]]]:
    """The sentences of one line of the tagged corpus (``word/tag`` between spaces) as
    characters and their BIO tags."""
    out, chars, tags, before = [], [], [], None
    for token in line.split():
        word, _, pos = token.rpartition("/")
        kind = ENTITY_TYPES.get(pos)
        for i, char in enumerate(word):
            if kind is None:
                tags.append("O")
            else:  # a given name right after a family name continues the same person
                joined = i > 0 or (kind == "PER" and before == "nr")
                tags.append(f"{'I' if joined else 'B'}-{kind}")
            chars.append(char)
        before = pos
        if word in SENTENCE_ENDS:
            out.append((chars, tags))
            chars, tags, before = [], [], None
    if chars:
        out.append((chars, tags))
    return out


def peoples_daily_ner(folder: pathlib.Path) -> list[dict]:
    path = folder / "199801.txt"
    records = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for chars, tags in tagged_sentences(line):
            where = f"builtin:peoples_daily_ner line {n} sentence {len(records) + 1}"
            records.append(Record({"tokens": chars, "tags": tags}, where))
    return records


def conll2003(folder: pathlib.Path) -> dict[str, list[dict]]:
    out = {}
    for split, name in CONLL_FILES.items():
        rows = read_file(folder / name, conll=True)
        out[split] = [
            Record(dict(r), f"builtin:conll2003 {name} sentence {i + 1}")
            for i, r in enumerate(rows)
        ]
    return out
