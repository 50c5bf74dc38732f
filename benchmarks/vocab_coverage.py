"""How much of a task's text a trained vocabulary cannot spell: the ``[UNK]`` share of each
split of each source, for WordPieces trained on a pretraining source with and without
``data.vocab_characters``, and which words became ``[UNK]`` most often.

    python benchmarks/vocab_coverage.py --pretrain builtin:zh_news --vocab_size 10368 \\
        --sources builtin:thucnews,builtin:zh_sentiment,builtin:stsb_zh

A pair source's second text (``--pair_field``, when a source has it) counts too. Prints one line
a (vocabulary, source), the most frequent ``[UNK]`` words of the first source, and the seconds
taken; deterministic (the tokenizer training is).
"""

from __future__ import annotations

import argparse
import collections
import time

from ptft_jax.data import coverage, sources, vocab


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--pretrain", default="builtin:zh_news", help="the tokenizer's training text")
    p.add_argument("--vocab_size", type=int, default=10368)
    p.add_argument("--characters", default=",gb2312", help="data.vocab_characters values")
    p.add_argument("--sources", default="builtin:thucnews,builtin:zh_sentiment,builtin:stsb_zh")
    p.add_argument("--pair_field", default="text_pair")
    p.add_argument("--top", type=int, default=15, help="the most frequent [UNK] words shown")
    args = p.parse_args()
    t0 = time.time()
    texts = [r["text"] for r in sources.load_records(args.pretrain)["train"]]
    for chars in args.characters.split(","):
        tok = vocab.train_wordpiece(texts, args.vocab_size, characters=vocab.charset(chars))
        print(f"vocab_characters={chars!r}: {len(tok):,} tokens trained on {args.pretrain}")
        for i, src in enumerate(args.sources.split(",")):
            shares = []
            for split, rows in sources.load_records(src).items():
                fields = [f for f in ("text", args.pair_field) if rows and f in rows[0]]
                ids = tok([r[f] for r in rows for f in fields], add_special_tokens=False)
                unknown, total = coverage.count_unknown(tok, ids["input_ids"])
                shares.append(f"{split} {unknown / max(total, 1):.2%} of {total:,}")
            print(f"  {src}: [UNK] " + ", ".join(shares))
            if i == 0 and args.top:
                print(f"    most frequent [UNK] words: {_unknown_words(tok, src, args.top)}")
    print(f"{time.time() - t0:.0f}s")


def _unknown_words(tok, source: str, top: int) -> str:
    """The words (as the tokenizer's pre-tokenizer cuts them) of ``source``'s training split
    that become ``[UNK]``, most frequent first."""
    backend = tok.backend_tokenizer
    counts = collections.Counter()
    for r in sources.load_records(source)["train"]:
        words = backend.pre_tokenizer.pre_tokenize_str(backend.normalizer.normalize_str(r["text"]))
        counts.update(w for w, _ in words if "[UNK]" in tok.tokenize(w))
    return ", ".join(f"{w!r} {n}" for w, n in counts.most_common(top)) or "none"


if __name__ == "__main__":
    main()
