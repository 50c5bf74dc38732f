"""Fine-tuning metrics against scikit-learn and scipy (test-only dependencies)."""

import math

import numpy as np
import pytest
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
    precision_score,
    recall_score,
)

from ptft_jax.scores import (
    LOWER_IS_BETTER,
    classification_metrics,
    is_better,
    regression_metrics,
)


def _expected_classification(preds, labels, num_labels):
    labels_range = list(range(num_labels))
    if num_labels == 2:
        kw = {"average": "binary", "pos_label": 1, "zero_division": 0}
    else:
        kw = {"average": "macro", "labels": labels_range, "zero_division": 0}
    return {
        "accuracy": accuracy_score(labels, preds),
        "precision": precision_score(labels, preds, **kw),
        "recall": recall_score(labels, preds, **kw),
        "f1": f1_score(labels, preds, **kw),
        "mcc": matthews_corrcoef(labels, preds),
        "confusion_matrix": confusion_matrix(labels, preds, labels=labels_range).tolist(),
    }


def _check_classification(preds, labels, num_labels, weights=None):
    got = classification_metrics(preds, labels, num_labels, weights)
    keep = np.ones(len(labels), bool) if weights is None else np.asarray(weights) != 0
    want = _expected_classification(preds[keep], labels[keep], num_labels)
    assert set(got) == set(want)
    for key in ("accuracy", "precision", "recall", "f1", "mcc"):
        assert isinstance(got[key], float), key
        assert got[key] == pytest.approx(want[key], abs=1e-9), key
    assert got["confusion_matrix"] == want["confusion_matrix"]
    assert all(type(v) is int for row in got["confusion_matrix"] for v in row)
    return got


def _padded(rng, preds, labels, n_pad, num_labels):
    """Appends ``n_pad`` weight-0 rows whose (wrong) values would change every metric."""
    pad_preds = rng.integers(0, num_labels, n_pad)
    pad_labels = (pad_preds + 1) % num_labels
    weights = np.r_[np.ones(len(labels)), np.zeros(n_pad)]
    perm = rng.permutation(len(weights))
    return (
        np.r_[preds, pad_preds][perm],
        np.r_[labels, pad_labels][perm],
        weights[perm],
    )


@pytest.mark.parametrize("num_labels", [2, 5])
@pytest.mark.parametrize("seed", range(6))
def test_classification_matches_sklearn(num_labels, seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(20, 300))
    labels = rng.integers(0, num_labels, n)
    # Correlated predictions: right about half the time, so MCC is neither 0 nor 1.
    preds = np.where(rng.random(n) < 0.5, labels, rng.integers(0, num_labels, n))
    _check_classification(preds, labels, num_labels)
    p, y, w = _padded(rng, preds, labels, int(rng.integers(1, 40)), num_labels)
    got = _check_classification(p, y, num_labels, w)
    assert sum(map(sum, got["confusion_matrix"])) == n


@pytest.mark.parametrize("seed", range(3))
def test_classification_with_a_class_that_never_appears(seed):
    rng = np.random.default_rng(100 + seed)
    num_labels, n = 5, 150
    present = np.array([0, 1, 2, 4])  # class 3 neither predicted nor true among kept rows
    labels = rng.choice(present, n)
    preds = np.where(rng.random(n) < 0.6, labels, rng.choice(present, n))
    p, y, w = _padded(rng, preds, labels, 30, num_labels)
    y[w == 0] = 3  # only padding rows mention class 3
    got = _check_classification(p, y, num_labels, w)
    assert got["confusion_matrix"][3] == [0] * num_labels
    # Class 3 is only predicted, never true (precision 0) and class 4 never predicted (recall 0).
    preds2 = np.where(preds == 4, 3, preds)
    _check_classification(preds2, labels, num_labels)


@pytest.mark.filterwarnings("ignore:A single label was found:UserWarning")
def test_classification_edge_cases():
    # Binary with the positive class never predicted and never true: P/R/F1 and MCC are 0.
    zeros = np.zeros(10, dtype=int)
    got = _check_classification(zeros, zeros, 2)
    assert got["accuracy"] == 1.0 and got["f1"] == 0.0 and got["mcc"] == 0.0
    # Perfect and perfectly wrong binary predictions.
    y = np.array([0, 1, 1, 0, 1])
    assert _check_classification(y, y, 2)["mcc"] == pytest.approx(1.0)
    assert _check_classification(1 - y, y, 2)["mcc"] == pytest.approx(-1.0)
    # Every row is padding: zeros, no NaN, no exception.
    got = classification_metrics(y, y, 2, np.zeros(5))
    assert got["accuracy"] == 0.0 and got["mcc"] == 0.0 and got["f1"] == 0.0
    assert got["confusion_matrix"] == [[0, 0], [0, 0]]
    # Shapes like (n, 1) are flattened; ids outside [0, num_labels) are refused.
    _check_classification(y[:, None], y[:, None], 2)
    with pytest.raises(ValueError):
        classification_metrics(np.array([0, 2]), np.array([0, 1]), 2)


def _check_regression(preds, labels, weights=None):
    got = regression_metrics(preds, labels, weights)
    keep = np.ones(len(labels), bool) if weights is None else np.asarray(weights) != 0
    p, y = preds[keep], labels[keep]
    assert set(got) == {"pearson", "spearman", "mse"}
    assert all(isinstance(v, float) for v in got.values())
    assert got["pearson"] == pytest.approx(pearsonr(p, y)[0], abs=1e-9)
    assert got["spearman"] == pytest.approx(spearmanr(p, y)[0], abs=1e-9)
    assert got["mse"] == pytest.approx(np.mean((p - y) ** 2), abs=1e-9)
    return got


@pytest.mark.parametrize("seed", range(6))
def test_regression_matches_scipy(seed):
    rng = np.random.default_rng(200 + seed)
    n = int(rng.integers(10, 400))
    labels = rng.normal(size=n) * 2.0 + 1.0
    preds = labels + rng.normal(size=n)
    _check_regression(preds, labels)
    # Ties on both sides (STS-B style labels in steps of 0.2, rounded predictions).
    tied_labels = np.round(rng.uniform(0, 5, n) * 5) / 5
    tied_preds = np.round(tied_labels + rng.normal(scale=0.7, size=n), 1)
    _check_regression(tied_preds, tied_labels)
    # Weight-0 padding rows with wild values are ignored.
    pad = int(rng.integers(1, 30))
    weights = np.r_[np.ones(n), np.zeros(pad)]
    perm = rng.permutation(n + pad)
    p = np.r_[tied_preds, rng.normal(size=pad) * 100][perm]
    y = np.r_[tied_labels, -rng.normal(size=pad) * 100][perm]
    _check_regression(p, y, weights[perm])


def test_regression_constant_input_gives_zero_not_nan():
    x = np.array([1.0, 2.0, 3.0, 4.0])
    c = np.full(4, 2.5)
    for got in (regression_metrics(c, x), regression_metrics(x, c), regression_metrics(c, c)):
        assert got["pearson"] == 0.0 and got["spearman"] == 0.0
        assert not any(math.isnan(v) for v in got.values())
    # Constant once the padding rows are dropped.
    got = regression_metrics(np.array([1.0, 1.0, 9.0]), x[:3], np.array([1, 1, 0]))
    assert got["pearson"] == 0.0 and got["spearman"] == 0.0
    # Empty split.
    assert regression_metrics(x, x, np.zeros(4)) == {"pearson": 0.0, "spearman": 0.0, "mse": 0.0}
    # Perfect rank agreement despite a non-linear relation.
    got = _check_regression(x**3, x)
    assert got["spearman"] == pytest.approx(1.0)


def test_is_better():
    assert LOWER_IS_BETTER == ("loss", "mse")
    assert is_better("accuracy", 0.5, None) and is_better("loss", 9.0, None)
    assert is_better("f1", 0.8, 0.7) and not is_better("f1", 0.7, 0.7)
    assert not is_better("pearson", 0.6, 0.7)
    assert is_better("loss", 0.3, 0.4) and not is_better("loss", 0.5, 0.4)
    assert is_better("mse", 1.0, 2.0) and not is_better("mse", 2.0, 2.0)
    assert is_better("validation/loss", 0.3, 0.4)
    assert not is_better("accuracy", float("nan"), 0.1)
