"""Suite files and the suite's arithmetic: the selection, the medians and the GLUE average
against values computed by hand; a malformed suite file names the field and the line."""

import pytest

from ptft_jax import suite_report, suitespec
from ptft_jax.errors import ConfigError


def _job(lr, seed, val, test=None):
    splits = {"validation": val}
    if test is not None:
        splits["test"] = test
    return {"learning_rate": lr, "seed": seed, "splits": splits}


def test_shipped_suites_load():
    assert suitespec.shipped() == ["glue", "offline-en", "offline-zh"]
    glue = suitespec.load("glue")
    assert [t.name for t in glue.tasks] == "cola sst2 mrpc stsb qqp mnli qnli rte".split()
    mnli = glue.task("mnli")
    assert dict(mnli.splits)["test"] == "validation_mismatched"
    assert mnli.report == (("m", "validation"), ("mm", "test"))
    assert glue.task("sst2").report == (("dev", "validation"),)  # GLUE reports dev
    assert glue.task("stsb").regression and glue.task("cola").metric == ("mcc",)
    en = suitespec.load("offline-en")
    assert len(en.tasks) >= 4 and any(t.text_pair_field for t in en.tasks)
    assert len(suitespec.load("offline-zh").tasks) >= 2


def test_selection_picks_the_best_median_validation_rate():
    spec = suitespec.TaskSpec(name="t", source="x", metric=("accuracy",))
    acc = lambda v: {"accuracy": v}  # noqa: E731
    jobs = [
        _job(1e-4, 0, acc(0.7), acc(0.9)),
        _job(1e-4, 1, acc(0.8), acc(0.9)),
        _job(1e-4, 2, acc(0.6), acc(0.9)),  # median 0.7
        _job(3e-4, 0, acc(0.9), acc(0.8)),
        _job(3e-4, 1, acc(0.5), acc(0.6)),
        _job(3e-4, 2, acc(0.75), acc(0.7)),  # median 0.75: chosen
        {"learning_rate": 5e-4, "seed": 0, "error": "failed"},  # never chosen, never counted
    ]
    got = suite_report.select(spec, jobs)
    assert got["learning_rate"] == 3e-4
    assert (got["median"], got["min"], got["max"]) == (0.7, 0.6, 0.8)
    assert got["seeds"] == 3 and got["validation_medians"] == {"0.0001": 0.7, "0.0003": 0.75}
    # a tie goes to the rate listed first; a rate whose seeds all failed is not chosen
    tie = [_job(1e-4, 0, acc(0.5), acc(0.1)), _job(3e-4, 0, acc(0.5), acc(0.9))]
    assert suite_report.select(spec, tie)["learning_rate"] == 1e-4
    assert suite_report.select(spec, jobs[-1:]) is None


def test_two_metrics_two_splits_and_the_glue_average():
    glue = suitespec.load("glue")
    mrpc, mnli, cola = glue.task("mrpc"), glue.task("mnli"), glue.task("cola")
    # MRPC: F1 and accuracy on dev, a seed's score their mean; median of (0.85, 0.75, 0.8)
    m = [
        _job(2e-5, 0, {"f1": 0.9, "accuracy": 0.8}),
        _job(2e-5, 1, {"f1": 0.8, "accuracy": 0.7}),
        _job(2e-5, 2, {"f1": 0.85, "accuracy": 0.75}),
    ]
    got = suite_report.select(mrpc, m)
    assert got["median"] == pytest.approx(0.8) and got["min"] == pytest.approx(0.75)
    assert got["columns"]["dev"]["f1"]["median"] == pytest.approx(0.85)
    # MNLI: matched (validation) and mismatched (test), the score their mean
    n = [_job(2e-5, 0, {"accuracy": 0.8}, {"accuracy": 0.82})]
    assert suite_report.select(mnli, n)["median"] == pytest.approx(0.81)
    c = [_job(2e-5, 0, {"mcc": 0.5})]
    tasks = {
        "cola": {"scores": {"pretrained": suite_report.select(cola, c)}},
        "mrpc": {"scores": {"pretrained": got}},
        "mnli": {"scores": {"pretrained": suite_report.select(mnli, n)}},
    }
    sub = suitespec.choose_tasks(glue, "cola,mrpc,mnli")
    # the GLUE paper's rule: the mean of task scores, a task's metrics averaged first
    assert suite_report.averages(sub, tasks)["pretrained"] == pytest.approx((0.5 + 0.8 + 0.81) / 3)


BAD = [
    ("[tasks.a]\nsource = 1\n", "line 2: tasks.a.source is 1, not text"),
    ('[tasks.a]\nsource = "x"\nmetric = "acc"\n', "line 3: tasks.a.metric names 'acc'"),
    ('[tasks.a]\nsource = "x"\nnum_labels = 1\nmetric = "accuracy"\n', "line 4: tasks.a.metric"),
    ('[tasks.a]\nsource = "x"\nepoch = 3\n', "line 3: tasks.a.epoch is not a task key"),
    ("[tasks.a]\ntext_field = 'x'\n", "line 1: tasks.a has no source"),
    ('seeds = [0, "1"]\n[tasks.a]\nsource = "x"\n', "line 1: seeds holds '1'"),
    ('[defaults]\nepochs = "3"\n[tasks.a]\nsource = "x"\n', "line 2: defaults.epochs is '3'"),
    ('[tasks.a]\nsource = "x"\nreport = { dev = "valid" }\n', "line 3: tasks.a.report"),
    ('[tasks.a]\nsource = "x"\nsplits = { train = "t" }\n', "line 3: tasks.a.splits has no valid"),
    ('[tasks.a]\nsource = "x"\nepochs = 0\n', "line 3: tasks.a.epochs is 0"),
    ("[tasks.a\n", "is not valid TOML"),
    ("name = 'x'\n", "line 1: tasks is missing"),
    ('color = "red"\n[tasks.a]\nsource = "x"\n', "line 1: color is not a suite key"),
]


@pytest.mark.parametrize("text,expected", BAD, ids=[e for _, e in BAD])
def test_a_malformed_suite_file_names_the_field_and_line(tmp_path, text, expected):
    path = tmp_path / "mine.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        suitespec.load(str(path))
    assert expected in str(e.value) and str(e.value).startswith("mine.toml"), str(e.value)


def test_unknown_suite_and_task_names():
    with pytest.raises(ConfigError, match="unknown suite 'gleu'; use one of glue, offline-en"):
        suitespec.load("gleu")
    with pytest.raises(ConfigError, match="the suite file 'nope.toml' does not exist"):
        suitespec.load("nope.toml")
    with pytest.raises(ConfigError, match="--tasks names 'sst', which suite glue does not have"):
        suitespec.choose_tasks(suitespec.load("glue"), "cola,sst")


def test_a_curve_over_pretraining_steps_draws_and_tabulates(tmp_path):
    from ptft_jax import figures

    suite = suitespec.choose_tasks(suitespec.load("offline-en"), "mr,stsb")
    mr, stsb = suite.task("mr"), suite.task("stsb")

    def result(v):
        return suite_report.select(mr, [_job(1e-4, 0, {"accuracy": v}, {"accuracy": v})])

    def sim(v):
        return suite_report.select(
            stsb, [_job(1e-4, 0, {"pearson": v, "spearman": v}, {"pearson": v, "spearman": v})]
        )

    tasks = {
        "mr": {
            "metric": "accuracy",
            "scores": {"step 100": result(0.6), "step 200": result(0.7), "random": result(0.55)},
        },
        "stsb": {
            "metric": "pearson/spearman",
            "scores": {"step 100": sim(0.3), "step 200": sim(0.5), "random": None},
        },
    }
    tasks["mr"]["scores"]["pretrained"] = tasks["mr"]["scores"]["step 200"]
    tasks["stsb"]["scores"]["pretrained"] = tasks["stsb"]["scores"]["step 200"]
    report = {
        "suite": "offline-en",
        "init_from": "W@100,W@200",
        "seeds": [0],
        "starts": ["step 100", "step 200", "random"],
        "tasks": tasks,
        "failed": [],
    }
    report["average"] = suite_report.averages(suite, tasks)
    assert report["average"]["step 200"] == pytest.approx(0.6)
    assert report["average"]["random"] is None  # a task without a score has no average
    fig = figures.plot_suite(report, suite, tmp_path / "steps.png")
    assert [line.get_label() for line in fig.axes[0].get_lines()][:3] == ["MR", "STS-B", "average"]
    assert (tmp_path / "steps.png").stat().st_size > 10_000
    md = suite_report.markdown(suite, report)
    assert (
        "| step 100 | 60.0 | 30.0/30.0 | 45.0 |" in md
        and "| random init | 55.0 | failed | - |" in md
    )
