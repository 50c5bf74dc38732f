"""Every row of README's "When something is wrong" table: the command stops with one sentence
naming the fix, exits with status 2, and leaves the workdir as it was (absent stays absent)."""

import argparse
import hashlib
import json
import os
import pathlib
import subprocess
import sys

import pytest
import transformers
from test_train import tiny_config

from ptft_jax import hf
from ptft_jax.train import run

ROOT = pathlib.Path(__file__).resolve().parents[1]
CONFIG = """
import sys
sys.path.insert(0, {tests!r})
from test_train import tiny_config

def get_config():
    c = tiny_config(steps=4, checkpoint_every=2, eval_every=2, log_every=2)
    if {classify!r}:
        c.task = "classification"
        c.model.num_labels = 2
        c.data.update(source={data!r}, max_seq_length=32, length_buckets=1)
        c.train.update(batch_size=8, eval_batches=0)
    return c
"""
TRAIN = "text,label\n" + "".join(f"good film {i},1\nbad film {i},0\n" for i in range(8))
STRING_LABELS = TRAIN.replace(",1\n", ",pos\n").replace(",0\n", ",neg\n")


def _snapshot(w: pathlib.Path) -> dict | None:
    """Every file under ``w`` with its size, modification time and content hash."""
    if not w.exists():
        return None
    return {
        str(p.relative_to(w)): (p.stat().st_size, p.stat().st_mtime_ns, _sha(p))
        for p in sorted(w.rglob("*"))
        if p.is_file()
    }


def _sha(p: pathlib.Path) -> str:
    return hashlib.sha1(p.read_bytes()).hexdigest()


def _cli(args, workdir, env=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "ptft_jax.train", *args, "--workdir", str(workdir)]
    return subprocess.run(
        cmd, capture_output=True, text=True, cwd=ROOT, env={**os.environ, **(env or {})}
    )


def _folder(root: pathlib.Path, train: str, validation: str) -> pathlib.Path:
    root.mkdir()
    (root / "train.csv").write_text(train)
    (root / "validation.csv").write_text(validation)
    return root


def _case(name: str, tmp: pathlib.Path) -> tuple[list[str], dict]:
    """The arguments (after --config) and extra environment that cause error ``name``."""
    mlm = tmp / "mlm.py"
    mlm.write_text(CONFIG.format(tests=str(ROOT / "tests"), classify=False, data=""))

    def classify(data: pathlib.Path) -> list[str]:
        cfg = tmp / "classify.py"
        cfg.write_text(CONFIG.format(tests=str(ROOT / "tests"), classify=True, data=str(data)))
        return ["--config", str(cfg)]

    if name == "unknown key":
        return ["--config", str(mlm), "--config.train.lerning_rate=1e-3"], {}
    if name == "wrong type":
        return ["--config", str(mlm), "--config.train.steps=ten"], {}
    if name == "missing data":
        return ["--config", str(mlm), "--config.data.source=/no/such/file.txt"], {}
    if name == "empty data":
        (tmp / "empty.txt").write_text("\n\n")
        return ["--config", str(mlm), f"--config.data.source={tmp / 'empty.txt'}"], {}
    if name == "non-UTF-8 data":
        (tmp / "latin1.txt").write_bytes("Un café à Paris.\n".encode("latin-1") * 20)
        return ["--config", str(mlm), f"--config.data.source={tmp / 'latin1.txt'}"], {}
    if name == "label outside num_labels":
        return classify(_folder(tmp / "d", TRAIN, "text,label\ngood,1\nodd,5\n")), {}
    if name == "label unseen in training":
        folder = _folder(tmp / "d", STRING_LABELS, "text,label\ngood,pos\nmeh,neutral\n")
        return classify(folder), {}
    if name == "tokenizer larger than the model's vocabulary":
        tokenizer = hf.resolve("builtin:minilm_l6")  # 30,522 tokens; the model has 1,024
        return ["--config", str(mlm), f"--config.data.tokenizer={tokenizer}"], {}
    if name == "sequence longer than the position table":
        return ["--config", str(mlm), "--config.data.max_seq_length=1024"], {}
    if name == "unreachable hub id":
        args = ["--config", str(mlm), "--config.init_from=hf:nobody-here/no-such-bert"]
        return args, {"HF_HUB_OFFLINE": "1"}
    if name == "layer types that disagree with the layer count":
        modern = [
            "--config.model.family=modernbert",
            "--config.model.layer_types=('full_attention',)",
        ]
        return ["--config", str(mlm), *modern], {}
    if name == "unknown model_type in a Hugging Face folder":
        (tmp / "llama").mkdir()
        (tmp / "llama" / "config.json").write_text('{"model_type": "llama"}')
        return ["--config", str(mlm), f"--config.init_from=hf:{tmp / 'llama'}"], {}
    if name == "a checkpoint's position limit below the sequence length":
        config = transformers.ModernBertConfig(
            vocab_size=1024, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64, max_position_embeddings=32, pad_token_id=0,
            bos_token_id=2, eos_token_id=3, cls_token_id=2, sep_token_id=3,
        )  # fmt: skip
        transformers.ModernBertForMaskedLM(config).save_pretrained(tmp / "short")
        return ["--config", str(mlm), f"--config.init_from=hf:{tmp / 'short'}"], {}
    if name == "unknown word segmenter":
        return ["--config", str(mlm), "--config.data.word_segmenter=ltp"], {}
    if name == "word segmenter without whole-word masking":
        return ["--config", str(mlm), "--config.data.word_segmenter=jieba"], {}
    if name == "label that is not a class id":
        rows = TRAIN.splitlines(keepends=True)
        (tmp / "data.csv").write_text("".join(rows[:3]) + "odd film,0.7\n" + "".join(rows[4:]))
        return classify(tmp / "data.csv"), {}
    if name == "empty label":
        rows = TRAIN.splitlines(keepends=True)
        train = "".join(rows[:2]) + "bad film 0,\n" + "".join(rows[3:])
        return classify(_folder(tmp / "d", train, TRAIN)), {}
    if name == "broken JSON line":
        good = "".join(f'{{"text": "document {i}", "label": {i % 2}}}\n' for i in range(1206))
        (tmp / "data.jsonl").write_text(good + '{"text": "a" "label": 1}\n')
        return ["--config", str(mlm), f"--config.data.source={tmp / 'data.jsonl'}"], {}
    if name == "empty text in a CSV cell":
        texts = "text\n" + "".join(f"document {i}\n" for i in range(3)) + '""\nlast one\n'
        (tmp / "data.csv").write_text(texts)
        return ["--config", str(mlm), f"--config.data.source={tmp / 'data.csv'}"], {}
    if name == "CSV quote never closed":
        texts = "text\n" + "".join(f"document {i}\n" for i in range(3)) + '"last\none\n'
        (tmp / "data.csv").write_text(texts)
        return ["--config", str(mlm), f"--config.data.source={tmp / 'data.csv'}"], {}
    if name == "empty text in a JSON line":
        rows = [{"text": "good film", "label": 1}, {"text": " ", "label": 0}]
        (tmp / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        return classify(tmp / "data.jsonl"), {}
    if name.startswith("folder without a train file"):
        (tmp / "d").mkdir()
        (tmp / "d" / "validation.csv").write_text(TRAIN)
        (tmp / "d" / "test.csv").write_text(TRAIN)
        if name.endswith("(classification)"):
            return classify(tmp / "d"), {}
        return ["--config", str(mlm), f"--config.data.source={tmp / 'd'}"], {}
    if name == "workdir of another model":
        return ["--config", str(mlm), "--config.model.hidden_size=64"], {}
    if name == "workdir of another task":
        return classify(_folder(tmp / "d", TRAIN, TRAIN)), {}
    raise AssertionError(name)


# name, the words the one sentence must contain, whether an MLM run already fills the workdir
CASES = [
    ("unknown key", "unknown config key 'train.lerning_rate'; check its spelling", False),
    ("wrong type", "--config.train.steps=ten is not an integer; pass an integer", False),
    ("missing data", "does not exist; set --config.data.source", False),
    ("empty data", "has no records (in its train split); add records", False),
    ("non-UTF-8 data", "is not valid UTF-8 (byte 6); re-encode it as UTF-8", False),
    ("label outside num_labels", "has label 5, outside 0..1; set --config.model.num_labels", False),
    ("label unseen in training", "labels never seen in training (neutral; first at", False),
    (
        "label that is not a class id",
        "data.csv line 4 has the label 0.7 in 'label', not a class id; use whole numbers",
        False,
    ),
    (
        "empty label",
        "d/train.csv line 3 has no 'label' (the train split's label field); fill it in, remove",
        False,
    ),
    (
        "broken JSON line",
        "data.jsonl line 1207 is not valid JSON (Expecting ',' delimiter: "
        """'{"text": "a" "label": 1}'); fix or remove that line.""",
        False,
    ),
    (
        "empty text in a CSV cell",
        "data.csv line 5 has an empty 'text'; fill it in, remove that record, or set "
        "--config.data.skip_empty_texts=True to leave such records out.",
        False,
    ),
    ("empty text in a JSON line", "data.jsonl line 2 has an empty 'text'; fill it in", False),
    (
        "CSV quote never closed",
        "data.csv line 5 opens a quote that is never closed (the rest of the file would be one "
        "cell); close it or export the file again.",
        False,
    ),
    (
        "folder without a train file (classification)",
        "d' has no train file, only validation and test; add train.csv (or .jsonl, .parquet, "
        ".txt) there.",
        False,
    ),
    (
        "folder without a train file (MLM)",
        "d' has no train file, only validation and test; add train.csv",
        False,
    ),
    (
        "tokenizer larger than the model's vocabulary",
        "has 30522 tokens but model.vocab_size is 1024; set --config.model.vocab_size=30522",
        False,
    ),
    ("sequence longer than the position table", "lower data.max_seq_length", False),
    ("unreachable hub id", "Could not download 'nobody-here/no-such-bert'", False),
    (
        "layer types that disagree with the layer count",
        "model.layer_types has 1 entries (full_attention) for model.num_hidden_layers=2",
        False,
    ),
    (
        "unknown model_type in a Hugging Face folder",
        "holds a 'llama' model; ptft_jax reads bert, gpt2, modernbert, roberta checkpoints",
        False,
    ),
    (
        "a checkpoint's position limit below the sequence length",
        "data.max_seq_length=64 exceeds model.max_position_embeddings=32",
        False,
    ),
    ("unknown word segmenter", "data.word_segmenter='ltp' is not one of ('', 'jieba')", False),
    (
        "word segmenter without whole-word masking",
        "set --config.data.whole_word_masking=True or drop the segmenter",
        False,
    ),
    (
        "workdir of another model",
        "has model.hidden_size=32 but the config says 64; use a new --workdir",
        True,
    ),
    (
        "workdir of another task",
        "holds a run of task='mlm' but the config asks for task='classification'; use a new",
        True,
    ),
]


@pytest.fixture(scope="module")
def mlm_workdir(tmp_path_factory) -> pathlib.Path:
    w = tmp_path_factory.mktemp("mlm") / "w"
    run(tiny_config(steps=4, checkpoint_every=2, eval_every=2, log_every=2), w)
    return w


@pytest.mark.slow
@pytest.mark.parametrize("name,message,existing", CASES, ids=[c[0] for c in CASES])
def test_bad_input_stops_with_one_sentence(tmp_path, mlm_workdir, name, message, existing):
    w = tmp_path / "w"
    if existing:
        subprocess.run(["cp", "-a", str(mlm_workdir), str(w)], check=True)
    before = _snapshot(w)
    args, env = _case(name, tmp_path)
    proc = _cli(args, w, env)
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: ") and message in last, proc.stderr[-3000:]
    assert last.count(". ") == 0 and last.endswith("."), f"one sentence: {last}"
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert _snapshot(w) == before, "a failed start must leave the workdir as it was"


DISK_FULL = """
set -e
mount -t tmpfs -o size=16m ptft-test {mnt}
{train} --config.train.stop_at_step=2 > {out}/first.log 2>&1
ls -R {mnt}/w/checkpoints > {out}/before.txt
free=$(df -k --output=avail {mnt} | tail -1)
dd if=/dev/zero of={mnt}/filler bs=1k count=$((free - 300)) 2>/dev/null
set +e
{train} > {out}/full.log 2>&1
echo $? > {out}/full.rc
ls -R {mnt}/w/checkpoints > {out}/after.txt
rm {mnt}/filler
{train} > {out}/resume.log 2>&1
echo $? > {out}/resume.rc
"""


@pytest.mark.slow
def test_disk_full_during_a_save(tmp_path):
    """A real full disk: a 16 MB tmpfs in a private mount namespace (``unshare``), filled up
    after the first checkpoint; the next save stops the run and the checkpoints stay as they
    were; once space is freed, the same command resumes."""
    mnt, out = tmp_path / "mnt", tmp_path / "out"
    mnt.mkdir()
    out.mkdir()
    cfg = tmp_path / "mlm.py"
    cfg.write_text(CONFIG.format(tests=str(ROOT / "tests"), classify=False, data=""))
    train = f"{sys.executable} -m ptft_jax.train --config {cfg} --workdir {mnt / 'w'}"
    script = DISK_FULL.format(mnt=mnt, out=out, train=train)
    done = subprocess.run(
        ["unshare", "--map-root-user", "--mount", "bash", "-c", script],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert done.returncode == 0, f"{done.stderr}\n{(out / 'first.log').read_text()[-2000:]}"
    log = (out / "full.log").read_text()
    assert (out / "full.rc").read_text().strip() == "2", log[-3000:]
    last = log.strip().splitlines()[-1]
    assert last.startswith("error: The disk holding"), log[-3000:]
    assert "(the one of step 2 is intact); free space there" in last
    assert "Traceback" not in log
    assert (out / "after.txt").read_text() == (out / "before.txt").read_text()
    assert (out / "resume.rc").read_text().strip() == "0", (out / "resume.log").read_text()[-3000:]
    assert "resuming from step 2" in (out / "resume.log").read_text()


def test_a_disk_that_fills_up_mid_save_loses_only_that_save(tmp_path):
    """The race the free-space check cannot see: the partial step goes, the committed stay."""
    import errno

    from ptft_jax import checkpoint

    mgr = checkpoint.manager(tmp_path, keep=2)
    folder = tmp_path / "checkpoints"
    (folder / "4").mkdir()
    (folder / "6.orbax-checkpoint-tmp").mkdir()
    with pytest.raises(checkpoint.DiskFullError, match=r"the one of step 4 is intact\); free"):
        with checkpoint._filling_up(mgr):
            raise ValueError("RESOURCE_EXHAUSTED: Error writing local file") from OSError(
                errno.ENOSPC, "No space left on device"
            )
    assert sorted(p.name for p in folder.iterdir()) == ["4"]
    # Any other failure of a save is one line, its traceback in W/errors.log; nothing removed.
    (folder / "8.orbax-checkpoint-tmp").mkdir()
    with pytest.raises(checkpoint.CheckpointError, match=r"A checkpoint save failed \('x'\), wh"):
        with checkpoint._filling_up(mgr):
            raise KeyError("x")
    assert "KeyError: 'x'" in (tmp_path / "errors.log").read_text()
    assert sorted(p.name for p in folder.iterdir()) == ["4", "8.orbax-checkpoint-tmp"]
    mgr.close()


def _entry_case(name: str, tmp: pathlib.Path, mlm: pathlib.Path) -> list[str]:
    """``python -m ptft_jax.<args>`` that makes mistake ``name`` (``mlm``: a finished MLM run)."""
    config = tmp / "mlm.py"
    config.write_text(CONFIG.format(tests=str(ROOT / "tests"), classify=False, data=""))
    train = ["train", "--config", str(config), "--workdir", str(tmp / "w")]
    if name == "train: config path":
        return ["train", "--config", "configs/minilm_mrr.py", "--workdir", str(tmp / "w")]
    if name == "train: config without get_config":
        (tmp / "c.py").write_text("def config():\n    return None\n")
        return ["train", "--config", str(tmp / "c.py"), "--workdir", str(tmp / "w")]
    if name == "train: stray argument":
        return [*train, "steps=3"]
    if name in ("train: malformed config.json", "train: config.json types", "train: pickle"):
        folder = tmp / "hf"
        folder.mkdir()
        text = {"train: malformed config.json": '{"hidden_size": 32,'}.get(name, "")
        text = text or json.dumps({"model_type": "bert", "hidden_size": "32"})
        if name == "train: pickle":
            import torch

            torch.save({"opts": argparse.Namespace(lr=1)}, folder / "pytorch_model.bin")
            # its tokenizer loads (a folder without one stops earlier, naming that instead)
            words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "film", "good", "bad"]
            (folder / "vocab.txt").write_text("\n".join(words) + "\n")
            text = json.dumps({"model_type": "bert", "hidden_size": 32, "vocab_size": 96})
            train.append("--config.allow_pytorch_bin=True")
        (folder / "config.json").write_text(text)
        return [*train, f"--config.init_from=hf:{folder}"]
    if name == "evaluate: no workdir":
        return ["evaluate", "--workdir", str(tmp / "nope")]
    if name == "evaluate: unknown flag":
        return ["evaluate", "--workdir", str(mlm), "--splt", "test"]
    if name == "evaluate: damaged tokenizer":
        subprocess.run(["cp", "-a", str(mlm), str(tmp / "copy")], check=True)
        path = tmp / "copy" / "tokenizer" / "tokenizer.json"
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        return ["evaluate", "--workdir", str(tmp / "copy")]
    if name == "evaluate: no checkpoint":
        (tmp / "empty").mkdir()
        return ["evaluate", "--workdir", str(tmp / "empty")]
    if name == "predict: no workdir":
        return ["predict", "--workdir", str(tmp / "nope"), "--text", "a [MASK] film"]
    if name == "predict: missing file":
        return ["predict", "--workdir", str(mlm), "--file", str(tmp / "none.txt")]
    if name == "predict: blank file":
        (tmp / "blank.txt").write_text("\n  \n\n")
        return ["predict", "--workdir", str(mlm), "--file", str(tmp / "blank.txt")]
    if name == "predict: JSON line without the text field":
        (tmp / "in.jsonl").write_text('{"text": "a [MASK] film"}\n\n{"sentence": "a [MASK]"}\n')
        return ["predict", "--workdir", str(mlm), "--file", str(tmp / "in.jsonl")]
    if name == "export: no workdir":
        return ["export", "--workdir", str(tmp / "nope"), "--out", str(tmp / "hf_out")]
    if name == "plot: curves of no workdir":
        return ["plot", "curves", "--workdir", str(tmp / "nope")]
    if name == "learning_curve: config path":
        return ["learning_curve", "--config", "nope.py", "--workdir", str(tmp / "w")]
    if name == "plot: unknown kind":
        return ["plot", "curve", "--workdir", str(mlm)]
    if name == "bench: steps below 1":
        return ["bench", "--steps", "0"]
    if name.startswith("prepare:"):
        corpus = {
            "prepare: empty corpus": (tmp / "c.txt", b"\n   \n\n"),
            "prepare: not UTF-8": (tmp / "c.txt", b"fine words\n\xff\xfe broken\n"),
            "prepare: no corpus file": (tmp / "notes.md", b"# not a corpus\n"),
            "prepare: an empty text": (tmp / "c.jsonl", b'{"text": "words"}\n{"text": " "}\n'),
        }[name]
        corpus[0].write_bytes(corpus[1])
        source = f"--config.data.source={corpus[0] if name != 'prepare: no corpus file' else tmp}"
        return ["prepare", "--config", str(config), "--out", str(tmp / "w"), source]
    if name == "train: prepared folder of another length":
        from ptft_jax import prepare

        (tmp / "c.txt").write_text("".join(f"document {i} has some words\n" for i in range(40)))
        c = tiny_config()
        c.data.source = str(tmp / "c.txt")
        prepare.prepare(c, tmp / "store", workers=1)
        return [*train, f"--config.data.source={tmp / 'store'}", "--config.data.max_seq_length=32"]
    raise AssertionError(name)


ENTRY_CASES = [
    ("train: config path", "'configs/minilm_mrr.py' does not exist (did you mean configs/minilm"),
    ("train: config without get_config", "defines no get_config(); add one"),
    ("train: stray argument", "unexpected arguments steps=3; config values go as --config."),
    ("train: malformed config.json", "config.json is not valid JSON (Expecting"),
    ("train: config.json types", "has hidden_size='32', not an integer; fix that value"),
    ("train: pickle", "torch.load(weights_only=True) refuses to unpickle; convert it"),
    ("evaluate: no workdir", "nope does not exist; pass the --workdir of a training run"),
    ("evaluate: unknown flag", "unknown command line flag 'splt' (did you mean --split?)"),
    ("evaluate: no checkpoint", "holds no finished checkpoint; train into it first"),
    (
        "evaluate: damaged tokenizer",
        "tokenizer is missing or unreadable (tokenizer.json does not parse), but the checkpoints",
    ),
    ("predict: no workdir", "nope does not exist; pass the --workdir of a training run"),
    ("predict: missing file", "none.txt does not exist; check the path"),
    ("predict: blank file", "blank.txt has no text (every line is blank); add one text"),
    ("predict: JSON line without the text field", "in.jsonl line 3 has no 'text' (the field"),
    ("export: no workdir", "nope does not exist; pass the --workdir of a training run"),
    ("plot: curves of no workdir", "nope does not exist; pass the --workdir of a training run"),
    ("learning_curve: config path", "the config file 'nope.py' does not exist"),
    ("plot: unknown kind", "invalid choice: 'curve'"),
    ("bench: steps below 1", "--warmup and --steps must be at least 1; see python -m"),
    ("prepare: empty corpus", "c.txt' holds no text; check the corpus"),
    ("prepare: not UTF-8", "c.txt line 2 is not valid UTF-8 (byte 0); re-encode the file"),
    ("prepare: no corpus file", "holds no corpus file; use .txt, .jsonl, .csv, .parquet"),
    ("prepare: an empty text", "c.jsonl line 2 has an empty 'text'; fill it in, remove that"),
    ("train: prepared folder of another length", "holds blocks of 64 tokens but data.max_seq_"),
]


@pytest.mark.slow
@pytest.mark.parametrize("name,message", ENTRY_CASES, ids=[c[0] for c in ENTRY_CASES])
def test_every_entry_point_stops_with_one_sentence(tmp_path, mlm_workdir, name, message):
    """A user's mistake at any command: one line on stderr naming the fix, exit 2, no
    traceback, no workdir created or changed."""
    before = _snapshot(mlm_workdir)
    args = _entry_case(name, tmp_path, mlm_workdir)
    proc = subprocess.run(
        [sys.executable, "-m", "ptft_jax." + args[0], *args[1:]],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    if name == "train: pickle":  # its 9-word vocabulary sends the text to [UNK]: rightly said
        lines = [line for line in lines if "[UNK] share of builtin:wiki_en" not in line]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr[-3000:]
    assert message in lines[0], lines[0]
    assert lines[0].count(". ") == 0 and lines[0].endswith("."), f"one sentence: {lines[0]}"
    assert not (tmp_path / "w").exists() and not (tmp_path / "hf_out").exists()
    assert _snapshot(mlm_workdir) == before
