"""The token store written by an Apache Beam pipeline, for corpora past one machine: each input
(a corpus file) is tokenized and packed by one Beam worker with the same functions as the local
writer (``writer.pack_input``), so both write the same records. ``python -m ptft_jax.prepare
... --runner=DirectRunner`` runs it here on every core; Dataflow, Flink and Spark run it on a
cluster when ``--out`` is a folder every worker can write (README). Importing this module
needs ``apache_beam`` (``pip install "ptft_jax[beam]"``).
"""

from __future__ import annotations

import pathlib
import re

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from ptft_jax.data import writer
from ptft_jax.errors import DataError


class PackInput(beam.DoFn):
    """Tokenizes and packs one ``(index, input)`` into its shards; emits the index."""

    def __init__(
        self, out: str, field: str, fraction, seq_len: int, per_shard, blocks, segmenter, skip_empty
    ):
        self.out, self.field, self.fraction = out, field, fraction
        self.seq_len, self.per_shard, self.blocks = seq_len, per_shard, blocks
        self.segmenter, self.skip_empty = segmenter, skip_empty

    def setup(self):
        tokenizer = str(pathlib.Path(self.out) / "tokenizer")
        writer.start_worker(tokenizer, self.fraction, self.blocks, self.segmenter)

    def process(self, item):
        index, name = item
        out = pathlib.Path(self.out)
        args = (self.field, self.seq_len, self.per_shard, self.skip_empty)
        writer.pack_input(out, index, name, *args)
        yield index


def run(
    out,
    todo,
    field: str,
    fraction,
    seq_len: int,
    per_shard,
    blocks,
    segmenter,
    options,
    skip_empty=False,
):
    """Pack the inputs of ``todo`` into ``out`` (which already holds the tokenizer) with the
    pipeline options ``options`` (``--runner=...`` and the runner's own flags); ``skip_empty``:
    ``data.skip_empty_texts``. A corpus mistake found by a worker comes back as its one
    sentence."""
    pack = PackInput(str(out), field, fraction, seq_len, per_shard, blocks, segmenter, skip_empty)
    try:
        with beam.Pipeline(options=PipelineOptions(options)) as pipeline:
            _ = (
                pipeline
                | "inputs" >> beam.Create(todo)
                | "spread" >> beam.Reshuffle()
                | "tokenize and pack" >> beam.ParDo(pack)
            )
    except Exception as e:  # Beam re-raises a worker's error, or its text, with more words
        sentence = str(e)
        if not isinstance(e, DataError):
            found = re.search(r"DataError: (.+)", sentence)
            if found is None:
                raise
            sentence = found.group(1)
        raise DataError(re.sub(r"\s*\[while running .*", "", sentence)) from None
