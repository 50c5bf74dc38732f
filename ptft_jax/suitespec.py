"""A suite file: the tasks an evaluation suite fine-tunes on, as data (TOML).

A suite is one small file, so a user adds their own in one file. The shipped ones are
``ptft_jax/suites/<name>.toml`` (``glue``, ``offline-en``, ``offline-zh``); ``--suite FILE``
reads any other. Its shape::

    name = "my-suite"
    learning_rates = [2e-5, 5e-5, 1e-4]      # the grid's defaults; --learning_rates wins
    seeds = [0, 1, 2]                        # --seeds wins
    [defaults]                               # any task key, for every task
    epochs = 3
    [tasks.sentiment]
    source = "data/sentiment"                # builtin:NAME, glue:TASK, hf:NAME[:CONFIG], a path
    metric = "accuracy"                      # or a list: the task's score is their mean

A malformed file stops with one sentence that names the field and its line.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import tomllib

from ptft_jax.errors import ConfigError

SHIPPED = pathlib.Path(__file__).resolve().parent / "suites"
CLASS_METRICS = ("accuracy", "f1", "precision", "recall", "mcc")
REGRESSION_METRICS = ("pearson", "spearman")
TAG_METRICS = ("f1", "precision", "recall", "accuracy")  # seqeval's entity scores, word accuracy
QA_METRICS = ("f1", "exact_match")  # SQuAD's
TASKS = ("classification", "token_classification", "question_answering")
SPLITS = ("train", "validation", "test")


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """One task of a suite: where its examples come from, what scores it, how it trains."""

    name: str
    source: str
    task: str = "classification"  # or token_classification (tags of words, BIO)
    title: str = ""  # the column heading (GLUE's "SST-2"); the name when empty
    text_field: str = "text"
    text_pair_field: str = ""
    label_field: str = "label"
    tokens_field: str = "tokens"  # token classification: each record's words and their tags
    tags_field: str = "tags"
    doc_stride: int = 64  # question answering: the overlap of a long context's windows
    num_labels: int = 0  # 1: regression; 0: the training split's classes
    metric: tuple[str, ...] = ("accuracy",)  # the task's score: the mean of these
    # the job's split -> the source's split (GLUE has no test labels: its dev is reported)
    splits: tuple[tuple[str, str], ...] = tuple((s, s) for s in ("train", "validation", "test"))
    report: tuple[tuple[str, str], ...] = (("test", "test"),)  # column name -> job split
    epochs: int = 3
    batch_size: int = 32
    max_seq_length: int = 128
    warmup_ratio: float = 0.1  # warmup as a fraction of the steps
    weight_decay: float = 0.01
    max_train_examples: int = 0  # > 0: a seeded subsample of the training split
    max_eval_examples: int = 0  # > 0: a seeded subsample of each evaluation split
    tfidf_analyzer: str = "word"  # the TF-IDF baseline's n-grams: "word" or "char" (Chinese)

    @property
    def regression(self) -> bool:
        return self.num_labels == 1

    @property
    def tagging(self) -> bool:
        return self.task == "token_classification"

    @property
    def answering(self) -> bool:
        return self.task == "question_answering"

    @property
    def heading(self) -> str:
        return self.title or self.name


@dataclasses.dataclass(frozen=True)
class Suite:
    name: str
    path: pathlib.Path
    tasks: tuple[TaskSpec, ...]
    learning_rates: tuple[float, ...] = (2e-5, 5e-5, 1e-4)
    seeds: tuple[int, ...] = (0, 1, 2)
    description: str = ""
    data_dir: str = ""  # glue:TASK reads this folder (GLUE's layout); --data_dir wins

    def task(self, name: str) -> TaskSpec:
        return next(t for t in self.tasks if t.name == name)


# The type each key takes (a tuple: one of several), for the sentence that names a bad field.
_TASK_KEYS = {
    "source": str,
    "task": str,
    "title": str,
    "text_field": str,
    "text_pair_field": str,
    "label_field": str,
    "tokens_field": str,
    "tags_field": str,
    "doc_stride": int,
    "num_labels": int,
    "metric": (str, list),
    "splits": dict,
    "report": dict,
    "epochs": int,
    "batch_size": int,
    "max_seq_length": int,
    "warmup_ratio": (float, int),
    "weight_decay": (float, int),
    "max_train_examples": int,
    "max_eval_examples": int,
    "tfidf_analyzer": str,
}
_TOP_KEYS = ("name", "description", "learning_rates", "seeds", "defaults", "tasks", "data_dir")


def shipped() -> list[str]:
    """The names of the suites that ship with ptft_jax."""
    return sorted(p.stem for p in SHIPPED.glob("*.toml"))


def locate(name_or_file: str) -> pathlib.Path:
    """The file of a shipped suite's name, or the given suite file; one sentence otherwise."""
    path = pathlib.Path(name_or_file).expanduser()
    if path.suffix == ".toml" or path.is_file():
        if not path.is_file():
            raise ConfigError(f"the suite file {name_or_file!r} does not exist; check the path.")
        return path
    if (SHIPPED / f"{name_or_file}.toml").is_file():
        return SHIPPED / f"{name_or_file}.toml"
    raise ConfigError(
        f"unknown suite {name_or_file!r}; use one of {', '.join(shipped())} or a suite file "
        "(.toml)."
    )


def _line_of(text: str, table: str, key: str | None) -> int:
    """The line of ``key`` in ``[table]`` (of the table's header when ``key`` is None, or the key
    is not there), 1-based; 1 when neither is found."""
    lines = text.splitlines()
    header = re.compile(r"^\s*\[\s*" + re.escape(table).replace(r"\.", r"\s*\.\s*") + r"\s*\]")
    start = next((i for i, line in enumerate(lines) if header.match(line)), None)
    if start is None:
        pattern = re.compile(r"^\s*" + re.escape(key or table) + r"\s*=")
        return next((i + 1 for i, line in enumerate(lines) if pattern.match(line)), 1)
    if key is not None:
        pattern = re.compile(r"^\s*" + re.escape(key) + r"\s*=")
        for i in range(start + 1, len(lines)):
            if lines[i].lstrip().startswith("["):
                break
            if pattern.match(lines[i]):
                return i + 1
    return start + 1


class _Reader:
    """Reads one suite file; every problem is one sentence with the file, the line and the field."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.text = path.read_text(encoding="utf-8")

    def fail(self, table: str, key: str | None, problem: str) -> ConfigError:
        line = _line_of(self.text, table, key)
        field = f"{table}.{key}" if key and table else (key or table)
        return ConfigError(f"{self.path.name} line {line}: {field} {problem}.")

    def parse(self) -> dict:
        try:
            return tomllib.loads(self.text)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(
                f"{self.path.name} is not valid TOML ({e}); fix that line of the suite file."
            ) from None

    def check_type(self, table: str, key: str, value, kind) -> None:
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if isinstance(value, bool) or not isinstance(value, kinds):
            names = " or ".join(
                {"str": "text", "dict": "a table"}.get(k.__name__, k.__name__) for k in kinds
            )
            raise self.fail(table, key, f"is {value!r:.40}, not {names}; fix its value")


def _task(reader: _Reader, name: str, fields: dict) -> TaskSpec:
    table = f"tasks.{name}"
    for key, value in fields.items():
        if key not in _TASK_KEYS:
            known = ", ".join(_TASK_KEYS)
            raise reader.fail(table, key, f"is not a task key; use one of {known}")
        reader.check_type(table, key, value, _TASK_KEYS[key])
    if "source" not in fields:
        raise reader.fail(table, None, 'has no source; add source = "builtin:NAME" (or a path)')
    fields = dict(fields)
    task = fields.get("task", "classification")
    if task not in TASKS:
        raise reader.fail(table, "task", f"is {task!r}; use {' or '.join(TASKS)}")
    tagging = task == "token_classification"
    metric = fields.pop("metric", "accuracy" if task == "classification" else "f1")
    metric = (metric,) if isinstance(metric, str) else tuple(metric)
    num_labels = fields.get("num_labels", 0)
    allowed = REGRESSION_METRICS if num_labels == 1 else CLASS_METRICS
    kind = "a regression (num_labels = 1)" if num_labels == 1 else "a classification"
    if tagging:
        allowed, kind = TAG_METRICS, "a token classification"
    if task == "question_answering":
        allowed, kind = QA_METRICS, "a question answering"
    for m in metric:
        if m not in allowed:
            raise reader.fail(
                table, "metric", f"names {m!r}, not a metric of {kind}; use {', '.join(allowed)}"
            )
    if not metric:
        raise reader.fail(table, "metric", "is empty; name at least one metric")
    if num_labels < 0:
        raise reader.fail(table, "num_labels", "is negative; use 1 (regression) or 0 (the data's)")
    splits = dict(TaskSpec.splits)
    if "splits" in fields:
        given = fields.pop("splits")
        for split, src in given.items():
            if split not in SPLITS or not isinstance(src, str):
                raise reader.fail(
                    table,
                    "splits",
                    f"maps {split!r}; map train, validation and test to the "
                    "source's split names (text)",
                )
        splits = given if "train" in given else {"train": "train", **given}
        if "validation" not in splits:
            raise reader.fail(table, "splits", "has no validation split; the grid selects on it")
    report = fields.pop("report", {"test": "test"})
    for column, split in report.items():
        if split not in ("validation", "test") or split not in splits and split != "test":
            raise reader.fail(
                table, "report", f"reports {column} from {split!r}; use validation or test"
            )
        if split == "test" and "test" not in splits:
            raise reader.fail(
                table,
                "report",
                "reports the test split but splits maps none; map test or report validation",
            )
    for key in ("epochs", "batch_size", "max_seq_length"):
        if key in fields and fields[key] < 1:
            raise reader.fail(table, key, f"is {fields[key]}; use a positive number")
    if fields.get("tfidf_analyzer", "word") not in ("word", "char"):
        raise reader.fail(table, "tfidf_analyzer", 'is neither "word" nor "char"')
    for key in ("warmup_ratio", "weight_decay"):
        if key in fields:
            fields[key] = float(fields[key])
    return TaskSpec(
        name=name,
        metric=metric,
        splits=tuple(splits.items()),
        report=tuple(report.items()),
        **fields,
    )


def _grid(reader: _Reader, doc: dict, key: str, kind) -> tuple:
    values = doc[key]
    if not isinstance(values, list) or not values:
        raise reader.fail("", key, "is not a non-empty list; write it as [a, b, c]")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, kind) or v < 0:
            raise reader.fail("", key, f"holds {v!r}, not a non-negative number")
    return tuple(kind(v) if kind is not float else float(v) for v in values)


def load(name_or_file: str) -> Suite:
    """The suite ``name_or_file`` (a shipped name or a .toml file), checked field by field."""
    path = locate(name_or_file)
    reader = _Reader(path)
    doc = reader.parse()
    for key in doc:
        if key not in _TOP_KEYS:
            raise reader.fail("", key, f"is not a suite key; use one of {', '.join(_TOP_KEYS)}")
    tasks = doc.get("tasks")
    if not isinstance(tasks, dict) or not tasks:
        raise reader.fail("tasks", None, "is missing; add a [tasks.NAME] table per task")
    defaults = doc.get("defaults", {})
    for key, value in defaults.items():
        if key not in _TASK_KEYS or key == "source":
            raise reader.fail("defaults", key, "is not a key a task shares; check its spelling")
        reader.check_type("defaults", key, value, _TASK_KEYS[key])
    specs = []
    for name, fields in tasks.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", name):
            raise reader.fail(
                f"tasks.{name}", None, "is not a plain name (letters, digits, - and _)"
            )
        if not isinstance(fields, dict):
            raise reader.fail(f"tasks.{name}", None, "is not a table; write [tasks.NAME]")
        specs.append(_task(reader, name, {**defaults, **fields}))
    extra = {}
    if "learning_rates" in doc:
        extra["learning_rates"] = _grid(reader, doc, "learning_rates", float)
    if "seeds" in doc:
        extra["seeds"] = _grid(reader, doc, "seeds", int)
    for key in ("name", "description", "data_dir"):
        if key in doc:
            reader.check_type("", key, doc[key], str)
            extra[key] = doc[key]
    extra.setdefault("name", path.stem)
    return Suite(path=path, tasks=tuple(specs), **extra)


def choose_tasks(suite: Suite, names: str) -> Suite:
    """``suite`` with only the comma-separated task ``names`` (all when empty)."""
    if not names:
        return suite
    wanted = [n.strip() for n in names.split(",") if n.strip()]
    known = [t.name for t in suite.tasks]
    for name in wanted:
        if name not in known:
            raise ConfigError(
                f"--tasks names {name!r}, which suite {suite.name} does not have; use some of "
                f"{', '.join(known)}."
            )
    return dataclasses.replace(suite, tasks=tuple(suite.task(n) for n in wanted))
