"""Token classification: CoNLL reading, BIO checks, word-to-piece alignment, the People's Daily
conversion, a tiny tagger that learns, packed rows that score as one sentence a row, predict's
character spans, an export transformers loads with equal logits, and one sentence for each
mistake in the data (before anything is written)."""

from __future__ import annotations

import json
import logging
import pathlib

import numpy as np
import pytest
import transformers
from helpers import both_logits, max_diff
from test_train import tiny_config

from ptft_jax import export, predict, workdir
from ptft_jax.data import builtin_tagged, files, tagging
from ptft_jax.errors import DataError
from ptft_jax.train import run

PEOPLE = ["ann", "bob", "cyd", "dan", "eve"]
PLACES = ["oslo", "rome", "lima"]
FILLER = "the a went to saw met in at with for and then".split()


def _sentences(n: int, seed: int) -> list[tuple[list[str], list[str]]]:
    """Sentences whose tags follow from the words: a person is a name and a surname
    (``annsen``), a place one word."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        words, tags = [], []
        for _ in range(rng.integers(3, 10)):
            r = rng.random()
            if r < 0.2:
                name = PEOPLE[rng.integers(len(PEOPLE))]
                words += [name, PEOPLE[rng.integers(len(PEOPLE))] + "sen"]
                tags += ["B-PER", "I-PER"]
            elif r < 0.35:
                words.append(PLACES[rng.integers(len(PLACES))])
                tags.append("B-LOC")
            else:
                words.append(FILLER[rng.integers(len(FILLER))])
                tags.append("O")
        out.append((words, tags))
    return out


def _conll(path: pathlib.Path, sentences) -> pathlib.Path:
    path.write_text(
        "-DOCSTART- -X- O\n\n"
        + "\n\n".join("\n".join(f"{w} NN {t}" for w, t in zip(*s, strict=True)) for s in sentences)
        + "\n"
    )
    return path


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> pathlib.Path:
    folder = tmp_path_factory.mktemp("ner")
    for split, (n, seed) in {"train": (160, 0), "valid": (40, 1), "test": (40, 2)}.items():
        _conll(folder / f"{split}.txt", _sentences(n, seed))
    return folder


def _config(source, **train):
    defaults = dict(steps=60, eval_every=30, checkpoint_every=30, learning_rate=3e-3)
    c = tiny_config(**{**defaults, "batch_size": 16, "eval_batches": 0, **train})
    c.task = "token_classification"
    c.data.update(source=str(source), max_seq_length=32, length_buckets=2)
    return c


def test_conll_reader_and_its_column_check(tmp_path):
    good = _conll(tmp_path / "a.conll", [(["EU", "rejects"], ["B-ORG", "O"]), (["Bo"], ["B-PER"])])
    records = files.read_file(good)
    assert [dict(r) for r in records] == [
        {"tokens": ["EU", "rejects"], "tags": ["B-ORG", "O"]},
        {"tokens": ["Bo"], "tags": ["B-PER"]},
    ]
    assert records[0].origin.endswith("a.conll line 3")
    bad = tmp_path / "b.conll"
    bad.write_text("EU NNP B-ORG\nrejects O\n")
    with pytest.raises(
        DataError, match=r"b.conll line 2 has 2 columns but the lines before have 3"
    ):
        files.read_file(bad)


def test_bio_checks_and_the_label_set(caplog):
    records = [files.Record({}, f"r{i}") for i in range(3)]
    tagged = [(["a", "b"], ["B-PER", "I-PER"]), (["c"], ["I-LOC"]), (["d", "e"], ["O", "I-PER"])]
    with caplog.at_level(logging.WARNING):
        tagging.check_bio(records, tagged, "train")
    assert "2 train-split entities begin with an I- tag (first at r1)" in caplog.text
    assert tagging.label_names(tagged) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    with pytest.raises(DataError, match=r"r0 has the tag 'S-PER', not BIO"):
        tagging.check_bio(records[:1], [(["a"], ["S-PER"])], "train")
    with pytest.raises(DataError, match=r"r0 has the entity type 'ORG', which the training"):
        tagging.check_known(records[:1], [(["a"], ["B-ORG"])], ["O", "B-PER", "I-PER"], "test")


def test_the_first_piece_of_each_word_carries_its_tag():
    tokenizer = transformers.BertTokenizerFast(
        vocab_file=None,
        tokenizer_object=_wordpiece(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "new", "york",
                                     "##er", "is", "big"]),
    )  # fmt: skip
    names = ["O", "B-LOC", "I-LOC"]
    tagged = [(["new", "yorker", "is", "big"], ["B-LOC", "I-LOC", "O", "O"])]
    first = tagging.encode(tagged, tokenizer, names, 16, all_subwords=False)
    assert first.ids[0].tolist() == [2, 5, 6, 7, 8, 9, 3]  # [CLS] new york ##er is big [SEP]
    assert first.labels[0].tolist() == [0, 1, 2, 0, 0, 0, 0]
    assert first.weights[0].tolist() == [0, 1, 1, 0, 1, 1, 0]
    assert first.firsts[0].tolist() == [1, 2, 4, 5]
    every = tagging.encode(tagged, tokenizer, names, 16, all_subwords=True)
    assert every.labels[0].tolist() == [0, 1, 2, 2, 0, 0, 0]
    assert every.weights[0].tolist() == [0, 1, 1, 1, 1, 1, 0]
    cut = tagging.encode(tagged, tokenizer, names, 5, all_subwords=False)  # room for 3 pieces
    assert cut.ids[0].tolist() == [2, 5, 6, 7, 3] and cut.cut_words == 2


def _wordpiece(vocab: list[str]):
    import tokenizers

    model = tokenizers.Tokenizer(
        tokenizers.models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]")
    )
    model.pre_tokenizer = tokenizers.pre_tokenizers.BertPreTokenizer()
    model.post_processor = tokenizers.processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return model


def test_peoples_daily_words_become_character_entities():
    line = "中共中央/nt  总书记/n  江/nr  泽民/nr  在/p  北京/ns  。/w  新华社/nt"
    (chars, tags), (chars2, tags2) = builtin_tagged.tagged_sentences(line)
    assert "".join(chars) == "中共中央总书记江泽民在北京。"
    assert tags == ["B-ORG"] + ["I-ORG"] * 3 + ["O"] * 3 + ["B-PER", "I-PER", "I-PER", "O"] + [
        "B-LOC", "I-LOC", "O",
    ]  # fmt: skip
    assert "".join(chars2) == "新华社" and tags2 == ["B-ORG", "I-ORG", "I-ORG"]


def test_predict_words_and_their_spans():
    assert tagging.split_words("Ann lives in 北京, ok") == [
        ("Ann", 0, 3), ("lives", 4, 9), ("in", 10, 12), ("北", 13, 14), ("京", 14, 15),
        (",", 15, 16), ("ok", 17, 19),
    ]  # fmt: skip


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory) -> tuple[pathlib.Path, dict]:
    w = tmp_path_factory.mktemp("tagger") / "w"
    return w, run(_config(data_dir), w, quiet=True)


@pytest.mark.slow
def test_a_tiny_tagger_learns_and_predicts_spans(trained):
    w, summary = trained
    rows = [json.loads(x) for x in (w / "metrics.jsonl").read_text().splitlines()]
    first = next(r for r in rows if r["split"] == "validation")
    last = [r for r in rows if r["split"] == "validation"][-1]
    assert first["step"] == 0 and first["f1"] < 0.3
    assert last["f1"] > 0.9 and last["f1_PER"] > 0.9 and last["accuracy"] > 0.95
    assert json.loads((w / "labels.json").read_text())["names"] == [
        "O", "B-LOC", "I-LOC", "B-PER", "I-PER",
    ]  # fmt: skip
    assert summary["test"]["f1"] > 0.9
    text = "then ann bobsen went to rome"
    (row,) = predict.predict(workdir.load(w), [text])
    kinds = [(e["entity"], e["text"], text[e["start"] : e["end"]]) for e in row["entities"]]
    assert kinds == [("PER", "ann bobsen", "ann bobsen"), ("LOC", "rome", "rome")]
    assert all(0.5 < e["score"] <= 1 for e in row["entities"])


@pytest.mark.slow
def test_export_loads_as_a_token_classifier_with_equal_logits(trained, tmp_path):
    w, _ = trained
    export.export(str(w), tmp_path)
    loaded = workdir.load(w)
    model = transformers.AutoModelForTokenClassification.from_pretrained(tmp_path)
    assert type(model).__name__ == "BertForTokenClassification"
    assert model.config.id2label[3] == "B-PER"
    tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path)
    enc = tokenizer(["ann bobsen went to rome", "the a"], padding=True, return_tensors="np")
    ours, theirs = both_logits(loaded, "token_classification", model, enc)
    assert max_diff(ours, theirs, enc["attention_mask"]) < 1e-4


@pytest.mark.slow
def test_packed_rows_score_as_one_sentence_a_row(data_dir, tmp_path):
    """Step 0's validation scores (the same initial weights) with and without packing."""
    scores = []
    for packing in (True, False):
        c = _config(data_dir, steps=1, eval_every=1, checkpoint_every=1)
        c.data.packing = packing
        run(c, tmp_path / str(packing), quiet=True)
        rows = (tmp_path / str(packing) / "metrics.jsonl").read_text().splitlines()
        scores.append(next(json.loads(r) for r in rows if '"validation"' in r))
    packed, bucketed = scores
    assert packed["f1"] == bucketed["f1"] and packed["accuracy"] == bucketed["accuracy"]
    assert packed["loss"] == pytest.approx(bucketed["loss"], rel=1e-5)


BAD = {
    "columns": ("EU NNP B-ORG\nrejects O\n", r"train.txt line 2 has 2 columns but"),
    "not BIO": ("EU NNP S-ORG\n", r"train.txt line 1 has the tag 'S-ORG', not BIO"),
    "unseen type": (None, r"has the entity type 'MISC', which the training split never has"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_stops_with_one_sentence_and_writes_nothing(data_dir, tmp_path, case):
    folder = tmp_path / "data"
    folder.mkdir()
    for name in ("train.txt", "valid.txt"):
        (folder / name).write_text((data_dir / name).read_text())
    text, message = BAD[case]
    if text is None:
        _conll(folder / "valid.txt", [(["Rome", "Open"], ["B-MISC", "I-MISC"])])
    else:
        (folder / "train.txt").write_text(text)
    with pytest.raises(DataError, match=message):
        run(_config(folder), tmp_path / "w", quiet=True)
    assert not (tmp_path / "w").exists()


@pytest.mark.slow
def test_init_from_a_hf_tagger_keeps_its_label_order(trained, tmp_path, data_dir):
    """A HF token classifier whose id2label is in another order than ours (sorted): the run
    takes its order, and scores at step 0 what the tagger it came from scores."""
    from safetensors.numpy import load_file, save_file

    w, summary = trained
    export.export(str(w), tmp_path / "hf")
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    order = [4, 2, 0, 3, 1]  # new id -> old id
    names = [config["id2label"][str(i)] for i in order]
    config["id2label"] = dict(enumerate(names))
    config["label2id"] = {n: i for i, n in enumerate(names)}
    (tmp_path / "hf" / "config.json").write_text(json.dumps(config))
    tensors = load_file(str(tmp_path / "hf" / "model.safetensors"))
    for name in ("classifier.weight", "classifier.bias"):
        tensors[name] = np.ascontiguousarray(tensors[name][order])
    save_file(tensors, str(tmp_path / "hf" / "model.safetensors"), metadata={"format": "pt"})
    c = _config(data_dir, steps=1, eval_every=1, checkpoint_every=1)
    c.init_from = f"hf:{tmp_path / 'hf'}"
    c.data.tokenizer = ""
    run(c, tmp_path / "w", quiet=True)
    assert json.loads((tmp_path / "w" / "labels.json").read_text())["names"] == names
    rows = (tmp_path / "w" / "metrics.jsonl").read_text().splitlines()
    step0 = next(json.loads(r) for r in rows if '"validation"' in r)
    best = next(json.loads(r) for r in (w / "metrics.jsonl").read_text().splitlines()[::-1]
                if '"validation"' in r)  # fmt: skip
    assert step0["f1"] == best["f1"]


@pytest.mark.slow
def test_a_suite_scores_a_tagging_task_beside_the_word_dictionary(data_dir, tmp_path):
    from ptft_jax import suite

    mlm = tmp_path / "mlm"
    run(tiny_config(steps=2, checkpoint_every=2, eval_every=2, log_every=2), mlm, quiet=True)
    (tmp_path / "ner.toml").write_text(
        f'name = "ner"\nlearning_rates = [3e-3]\nseeds = [0]\n[tasks.toy]\n'
        f'task = "token_classification"\nsource = "{data_dir}"\nepochs = 4\nbatch_size = 16\n'
        "max_seq_length = 32\nmax_train_examples = 120\n"
    )
    argv = ["--suite", str(tmp_path / "ner.toml"), "--init_from", str(mlm)]
    suite.main([*argv, "--workdir", str(tmp_path / "S"), "--devices_per_job", "4"])
    report = json.loads((tmp_path / "S" / "suite.json").read_text())
    scores = report["tasks"]["toy"]["scores"]
    assert report["tasks"]["toy"]["metric"] == "f1" and not report["failed"]
    assert set(scores) == {"pretrained", "random", "tfidf"}
    assert scores["pretrained"]["median"] > 0.5 and scores["random"]["median"] > 0.5
    # the word dictionary knows every name, but tags a surname it has seen only as I-PER
    assert 0.9 < scores["tfidf"]["median"] <= 1.0
    assert "is the word dictionary" in (tmp_path / "S" / "suite.md").read_text()
    job = json.loads((tmp_path / "S/jobs/toy/pretrained/lr0.003-seed0/config.json").read_text())
    assert job["task"] == "token_classification"
    assert len((tmp_path / "S/data/toy/train.jsonl").read_text().splitlines()) == 120


def test_a_hub_datasets_tag_ids_are_read_as_its_class_names():
    import datasets

    from ptft_jax.data.sources import _tag_names

    names = ["O", "B-PER", "I-PER"]
    features = datasets.Features(
        {
            "tokens": datasets.Sequence(datasets.Value("string")),
            "ner_tags": datasets.Sequence(datasets.ClassLabel(names=names)),
        }
    )
    ds = datasets.Dataset.from_dict(
        {"tokens": [["Ann", "Lee", "ran"]], "ner_tags": [[1, 2, 0]]}, features
    )
    (row,) = ds.to_list()
    assert _tag_names(row, ds.features) == {
        "tokens": ["Ann", "Lee", "ran"],
        "ner_tags": names[1:] + ["O"],
    }


@pytest.mark.parametrize(
    "task,key,value,message",
    [
        ("token_classification", "train.metric_for_best", "bleu", "not a token classification"),
        ("question_answering", "train.metric_for_best", "accuracy", "not a question answering"),
        ("question_answering", "data.doc_stride", 64, "data.doc_stride=64 must be below half"),
        ("question_answering", "model.num_labels", 3, "points at a start and an end"),
    ],
)
def test_config_mistakes_of_the_token_tasks(task, key, value, message):
    from ptft_jax.config import base_config, validate
    from ptft_jax.errors import ConfigError

    c = base_config()
    c.task = task
    section, name = key.split(".")
    c[section][name] = value
    with pytest.raises(ConfigError, match=message):
        validate(c)
