"""The three plot kinds render to PNG files a person can read: attention maps (checked against
transformers' own attention probabilities), training curves and a confusion matrix."""

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from helpers import assert_golden, scores  # noqa: E402
from test_train import tiny_config  # noqa: E402

from ptft_jax import figures, learning_curve, plot, workdir  # noqa: E402
from ptft_jax.export import export  # noqa: E402
from ptft_jax.train import run  # noqa: E402

PNG = b"\x89PNG\r\n\x1a\n"


def _no_overlap(fig) -> None:
    """No two tick labels of any panel overlap, and every panel has its titles or labels."""
    renderer = fig.canvas.get_renderer()
    for ax in fig.axes:
        for axis, lo, hi in ((ax.xaxis, "x0", "x1"), (ax.yaxis, "y0", "y1")):
            boxes = [
                t.get_window_extent(renderer)
                for t in axis.get_ticklabels()
                if t.get_text() and t.get_visible()
            ]
            boxes.sort(key=lambda b: getattr(b, lo))
            for a, b in zip(boxes, boxes[1:], strict=False):
                assert getattr(a, hi) <= getattr(b, lo) + 0.5, f"tick labels overlap in {ax}"


@pytest.fixture(scope="module")
def mlm_run(tmp_path_factory):
    w = tmp_path_factory.mktemp("plot") / "w"
    run(tiny_config(steps=6, checkpoint_every=6, eval_every=3, log_every=1), w)
    return w


@pytest.mark.slow
def test_attention_maps_equal_transformers_and_read_well(mlm_run, tmp_path):
    loaded = workdir.load(mlm_run)
    text = "the quick brown fox jumps over the lazy dog near the river bank"
    tokens, probs = plot.attention_maps(loaded, text, "it was a sunny day")
    export(str(mlm_run), str(tmp_path / "hf"))
    model = transformers.BertModel.from_pretrained(tmp_path / "hf", attn_implementation="eager")
    enc = loaded.tokenizer(text, "it was a sunny day", return_tensors="pt")
    with torch.no_grad():
        want = model.eval()(**enc, output_attentions=True).attentions
    assert tokens[0] == "[CLS]" and len(tokens) == enc["input_ids"].shape[1]
    np.testing.assert_allclose(probs, np.stack([a[0].numpy() for a in want]), atol=2e-5)

    out = tmp_path / "attention.png"
    fig = figures.plot_attention(tokens, probs, out)
    assert out.read_bytes()[:8] == PNG
    assert len(fig.axes) == probs.shape[0] * probs.shape[1]
    assert fig.axes[0].get_title() == "head 0" and "layer 0" in fig.axes[0].get_ylabel()
    _no_overlap(fig)
    plt.close(fig)


@pytest.mark.slow
def test_curves_and_confusion_matrix(mlm_run, tmp_path):
    fig = figures.plot_curves(mlm_run, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG
    loss, metric = fig.axes
    assert loss.get_xlabel() == "step" and loss.get_ylabel() == "loss"
    assert [line.get_label() for line in loss.get_lines()] == ["train", "validation"]
    assert metric.get_ylabel() == "mlm accuracy"
    assert len(loss.get_lines()[0].get_xdata()) == 6
    plt.close(fig)

    names = ["business", "entertainment", "politics", "sport", "tech"]
    cm = np.random.default_rng(0).integers(0, 90, (5, 5))
    fig = figures.plot_confusion(cm, names, tmp_path / "cm.png", "validation")
    assert (tmp_path / "cm.png").read_bytes()[:8] == PNG
    ax = fig.axes[0]
    assert ax.get_xlabel() == "predicted label" and ax.get_ylabel() == "true label"
    assert sorted(t.get_text() for t in ax.texts) == sorted(str(v) for v in cm.ravel())
    _no_overlap(fig)
    plt.close(fig)


@pytest.mark.slow
def test_learning_curve_runs_and_plots(tmp_path):
    from test_classify import tiny_classifier

    cfg = tiny_classifier()
    cfg.data.length_buckets = 1  # one compiled shape, shared by both runs
    rows = learning_curve.learning_curve(cfg, tmp_path, [16, 64], steps=4, evals=2)
    assert [r["n"] for r in rows] == [16, 64]
    assert all(r["steps"] == 4 for r in rows)
    for n in (16, 64):  # step 0, then two passes (steps 2 and 4), whatever the epochs
        lines = (tmp_path / f"n{n}" / "metrics.jsonl").read_text().splitlines()
        evals = [r["step"] for r in map(json.loads, lines) if r.get("split") == "validation"]
        assert evals == [0, 2, 4], (n, evals)
    assert json.loads((tmp_path / "learning_curve.json").read_text()) == rows
    fig = figures.plot_learning_curve(rows, tmp_path / "lc.png", "tiny on builtin:mr")
    assert (tmp_path / "lc.png").read_bytes()[:8] == PNG
    ax = fig.axes[0]
    assert ax.get_xlabel().startswith("training examples") and ax.get_ylabel() == "test score"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["16", "64"]
    _no_overlap(fig)
    plt.close(fig)
    # Four steps leave both runs at chance (each predicts one class for the whole test split),
    # so their test results are checked against the values these runs give.
    assert_golden("learning_curve.json", [scores(r) for r in rows], approx=("loss",))
