"""A Hugging Face config.json's fields as a family's config fields, with the checks every family
shares: whole numbers where a shape is meant, numbers elsewhere, and one sentence naming the
file and the value to fix when they are not."""

from __future__ import annotations

from ptft_jax.errors import DataError


def read_fields(hf: dict, names: dict[str, str], integers, where, nullable=()) -> dict:
    """Our fields from the config.json dict ``hf``: ``names`` maps each field of ours to its
    config.json key; ``integers``: our fields that must be whole numbers (the others: any
    number); a key the file lacks, or a ``nullable`` key holding null, is left out (the family
    decides its default). ``where``: the file, for messages."""
    fields = {}
    for ours, theirs in names.items():
        if theirs not in hf or (hf[theirs] is None and theirs in nullable):
            continue
        value, whole = hf[theirs], ours in integers
        if isinstance(value, bool) or not isinstance(value, int if whole else int | float):
            kind = "an integer" if whole else "a number"
            raise DataError(f"{where} has {theirs}={value!r:.40}, not {kind}; fix that value.")
        fields[ours] = value
    return fields
