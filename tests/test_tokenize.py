import numpy as np
import pytest

from ptft_jax.data.sources import DataError
from ptft_jax.data.tokenize import (
    load_tokenizer,
    save_tokenizer,
    special_ids,
    tokenize_cached,
    train_wordpiece,
)

TEXTS = [
    f"Document {i} talks about topic {i % 7} and the weather in city {i % 13}." for i in range(200)
]


def test_trained_wordpiece_is_canonically_numbered_and_bert_shaped(tmp_path):
    a = train_wordpiece(TEXTS, 300)
    save_tokenizer(a, tmp_path / "a")
    # Specials first, then sorted: ids do not depend on the trainer's hash order.
    vocab = sorted(a.get_vocab().items(), key=lambda kv: kv[1])
    tokens = [t for t, _ in vocab]
    assert tokens[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert tokens[5:] == sorted(tokens[5:])
    assert special_ids(a) == {"pad": 0, "cls": 2, "sep": 3, "mask": 4}
    loaded = load_tokenizer(str(tmp_path / "a"))
    assert loaded("Document 3 talks")["input_ids"] == a("Document 3 talks")["input_ids"]
    assert loaded("x y")["input_ids"][0] == 2 and loaded("x y")["input_ids"][-1] == 3


def test_a_cased_tokenizer_keeps_case_and_accents(tmp_path):
    texts = [f"Café {i} in São Paulo met the café owner {i % 5}." for i in range(100)]
    uncased, cased = train_wordpiece(texts, 300), train_wordpiece(texts, 300, lowercase=False)
    assert uncased.tokenize("Café São") == ["cafe", "sao"]
    assert cased.tokenize("Café São") == ["Café", "São"]
    assert cased.tokenize("café")[0] != "Café"
    save_tokenizer(cased, tmp_path / "cased")
    assert load_tokenizer(str(tmp_path / "cased")).tokenize("Café São") == ["Café", "São"]


def test_tokenization_is_cached(tmp_path):
    tok = train_wordpiece(TEXTS, 300)
    first = tokenize_cached(TEXTS[:20], tok, tmp_path / "cache")
    assert len(list((tmp_path / "cache" / "tokenized").iterdir())) == 1
    again = tokenize_cached(TEXTS[:20], tok, tmp_path / "cache")
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    assert first[0].tolist() == tok(TEXTS[0], add_special_tokens=False)["input_ids"]


def test_missing_tokenizer_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="data.tokenizer"):
        load_tokenizer(str(tmp_path / "nothing"))


@pytest.mark.parametrize(
    "kind,damage,reason",
    [
        ("wordpiece", "tokenizer.json", r"\(tokenizer\.json does not parse\)"),
        ("wordpiece", "tokenizer_config.json", r"\(tokenizer_config\.json does not parse\)"),
        ("byte_bpe", "tokenizer.json", r"\(tokenizer\.json does not parse\)"),
        ("wordpiece", "not a tokenizer", r"\((KeyError|Exception)\)"),  # the library's
        (
            "wordpiece",
            "empty folder",
            r"\(it holds no tokenizer\.json, vocab\.txt or vocab\.json\)",
        ),
    ],
)
def test_a_tokenizer_whose_files_do_not_load_is_one_sentence(tmp_path, kind, damage, reason):
    """Files cut short (a copy or a disk that failed halfway) stop with the sentence of a
    missing tokenizer, saying why: given as data.tokenizer, and on resume."""
    from ptft_jax.data.tokenize import get_tokenizer
    from ptft_jax.data.vocab import train_byte_bpe
    from ptft_jax.defaults import base_config

    folder = tmp_path / "w" / "tokenizer"
    train = train_byte_bpe if kind == "byte_bpe" else train_wordpiece
    save_tokenizer(train(TEXTS, 300), folder)
    if damage == "empty folder":
        for path in folder.iterdir():
            path.unlink()
    elif damage == "not a tokenizer":  # JSON, but not a tokenizer's
        (folder / "tokenizer.json").write_text('{"model": 1}')
    else:
        path = folder / damage
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    why = reason
    with pytest.raises(DataError, match=rf"^Could not load a tokenizer from .*{why}; set "):
        load_tokenizer(str(folder))
    data = base_config().data
    data.tokenizer = str(folder)
    with pytest.raises(DataError, match=rf"{why}; set --config.data.tokenizer to a folder"):
        get_tokenizer(data, tmp_path / "new", [], 1024, resuming=False)
    data.tokenizer = ""
    resumed = rf"tokenizer is missing or unreadable {why}, but the checkpoints in .*w were"
    with pytest.raises(DataError, match=resumed + " trained with it; restore that folder or"):
        get_tokenizer(data, tmp_path / "w", [], 1024, resuming=True)


def test_alphabet_larger_than_vocab_is_a_clear_error():
    texts = ["".join(chr(0x4E00 + i + j) for j in range(5)) for i in range(0, 400, 5)]
    with pytest.raises(DataError, match="model.vocab_size"):
        train_wordpiece(texts, 64)


def test_wordpiece_training_gives_the_same_vocabulary_in_every_process(tmp_path):
    """The tokenizers trainer numbers symbols in hash order, which changes between processes;
    ours must not depend on it (three fresh processes, one with a single thread)."""
    import os
    import subprocess
    import sys

    code = (
        "import sys; from ptft_jax.data import sources, tokenize; "
        "texts = [r['text'] for r in sources.load_records('builtin:wiki_en')['train'][:1500]]; "
        "import pathlib; "
        "tokenize.save_tokenizer(tokenize.train_wordpiece(texts, 2048), pathlib.Path(sys.argv[1]))"
    )
    for i, threads in enumerate(("", "", "1")):
        env = {**os.environ, **({"RAYON_NUM_THREADS": threads} if threads else {})}
        subprocess.run([sys.executable, "-c", code, str(tmp_path / str(i))], check=True, env=env)
    files = [(tmp_path / str(i) / "tokenizer.json").read_bytes() for i in range(3)]
    assert files[0] == files[1] == files[2]
