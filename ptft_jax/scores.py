"""Evaluation metrics computed on the host from a whole split's outputs (numpy only): MLM
statistics, classification and regression scores, and which value of a metric is better."""

from __future__ import annotations

import math

import numpy as np


def mlm_eval_metrics(sums: dict) -> dict:
    """Loss, accuracy and perplexity from summed statistics over a whole split."""
    weight = max(float(sums["weight_sum"]), 1.0)
    loss = float(sums["loss_sum"]) / weight
    out = {
        "loss": loss,
        "mlm_accuracy": float(sums["correct_sum"]) / weight,
        "perplexity": math.exp(min(loss, 50.0)),
    }
    if "nsp_loss_sum" in sums:  # loss = MLM + NSP, as trained; perplexity stays MLM's
        pairs = max(float(sums["nsp_weight_sum"]), 1.0)
        out.update(mlm_loss=loss, nsp_loss=float(sums["nsp_loss_sum"]) / pairs)
        out.update(loss=loss + out["nsp_loss"], nsp_accuracy=float(sums["nsp_correct_sum"]) / pairs)
    return out


# --- Fine-tuning metrics: exact over a whole split, numpy only. --------------------------------

LOWER_IS_BETTER = ("loss", "mse")


def is_better(metric: str, new: float, best: float | None) -> bool:
    """Whether ``new`` strictly improves on ``best`` (``None``: nothing yet, so yes).

    ``loss`` and ``mse`` (also as the last part of a name like ``"validation/loss"``) are lower
    is better; every other metric is higher is better. A NaN ``new`` never improves.
    """
    new = float(new)
    if math.isnan(new):
        return False
    if best is None or math.isnan(float(best)):
        return True
    if metric.rsplit("/", 1)[-1] in LOWER_IS_BETTER:
        return new < float(best)
    return new > float(best)


def _kept_rows(weights: np.ndarray | None, n: int) -> np.ndarray:
    """Boolean mask of the rows to count: all of them, or those whose weight is not 0."""
    if weights is None:
        return np.ones(n, dtype=bool)
    weights = np.asarray(weights).reshape(-1)
    if weights.shape[0] != n:
        raise ValueError(f"{weights.shape[0]} weights for {n} rows")
    return weights != 0


def _div(num: float, den: float) -> float:
    """``num / den``, or 0.0 when ``den`` is 0 (sklearn's ``zero_division=0``)."""
    return float(num) / float(den) if den else 0.0


def classification_metrics(
    preds: np.ndarray, labels: np.ndarray, num_labels: int, weights: np.ndarray | None = None
) -> dict:
    """Accuracy, precision, recall, F1, MCC and the confusion matrix over a whole split.

    ``preds`` and ``labels`` are class ids in ``[0, num_labels)``; rows whose weight is 0
    (padding examples) are never counted, every other row counts once. With ``num_labels == 2``
    precision, recall and F1 are those of the positive class 1 (sklearn ``average="binary"``);
    otherwise they are macro averages over all ``num_labels`` classes (sklearn
    ``average="macro", labels=range(num_labels)``), a class never predicted nor seen counting 0.
    Divisions by zero give 0.0 (sklearn ``zero_division=0``). ``mcc`` is sklearn's multi-class
    ``matthews_corrcoef``; ``confusion_matrix`` is a nested list ``[true][pred]`` of ints.
    """
    preds = np.asarray(preds).reshape(-1)
    labels = np.asarray(labels).reshape(-1)
    if preds.shape != labels.shape:
        raise ValueError(f"{preds.shape[0]} predictions for {labels.shape[0]} labels")
    keep = _kept_rows(weights, labels.shape[0])
    preds = preds[keep].astype(np.int64)
    labels = labels[keep].astype(np.int64)
    for name, ids in (("prediction", preds), ("label", labels)):
        if ids.size and (ids.min() < 0 or ids.max() >= num_labels):
            raise ValueError(f"{name} ids must lie in [0, {num_labels})")

    cm = np.bincount(labels * num_labels + preds, minlength=num_labels * num_labels)
    cm = cm.reshape(num_labels, num_labels)
    tp = np.diag(cm).astype(np.float64)
    pred_count = cm.sum(axis=0).astype(np.float64)  # tp + fp per class
    true_count = cm.sum(axis=1).astype(np.float64)  # tp + fn per class
    n = float(cm.sum())

    precision = [_div(tp[c], pred_count[c]) for c in range(num_labels)]
    recall = [_div(tp[c], true_count[c]) for c in range(num_labels)]
    f1 = [_div(2 * tp[c], pred_count[c] + true_count[c]) for c in range(num_labels)]
    if num_labels == 2:
        precision, recall, f1 = precision[1], recall[1], f1[1]
    else:
        precision, recall, f1 = (float(np.mean(v)) for v in (precision, recall, f1))

    # sklearn's matthews_corrcoef, in floats so that large splits cannot overflow.
    cov_true_pred = tp.sum() * n - float(np.dot(true_count, pred_count))
    cov_pred_pred = n * n - float(np.dot(pred_count, pred_count))
    cov_true_true = n * n - float(np.dot(true_count, true_count))
    den = cov_pred_pred * cov_true_true
    mcc = cov_true_pred / math.sqrt(den) if den else 0.0

    return {
        "accuracy": _div(tp.sum(), n),
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "mcc": float(mcc),
        "confusion_matrix": cm.tolist(),
    }


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing their average rank (``scipy.stats.rankdata``)."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], x.shape[0]]  # exclusive
    group_rank = (starts + 1 + ends) / 2.0  # mean of the ranks starts+1 .. ends
    ranks = np.empty(x.shape[0], dtype=np.float64)
    ranks[order] = np.repeat(group_rank, ends - starts)
    return ranks


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r, or 0.0 (not NaN) when either side is constant or has under 2 rows."""
    if x.shape[0] < 2 or np.all(x == x[0]) or np.all(y == y[0]):
        return 0.0
    xc = x - x.mean()
    yc = y - y.mean()
    xn = np.linalg.norm(xc)
    yn = np.linalg.norm(yc)
    if xn == 0 or yn == 0:
        return 0.0
    return float(np.clip(np.dot(xc / xn, yc / yn), -1.0, 1.0))


def regression_metrics(
    preds: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None
) -> dict:
    """Pearson, Spearman (average ranks for ties) and MSE over a whole split.

    Rows whose weight is 0 (padding examples) are never counted, every other row counts once.
    A constant side (or fewer than 2 rows) gives a correlation of 0.0 instead of NaN; an empty
    split gives an MSE of 0.0.
    """
    preds = np.asarray(preds, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    if preds.shape != labels.shape:
        raise ValueError(f"{preds.shape[0]} predictions for {labels.shape[0]} labels")
    keep = _kept_rows(weights, labels.shape[0])
    preds, labels = preds[keep], labels[keep]
    return {
        "pearson": _pearson(preds, labels),
        "spearman": _pearson(_average_ranks(preds), _average_ranks(labels)),
        "mse": float(np.mean((preds - labels) ** 2)) if preds.size else 0.0,
    }


# --- Extractive question answering: SQuAD's official exact match and F1. ---------------------


def normalize_answer(text: str) -> str:
    """SQuAD's normalisation: lower case, no punctuation, no articles (a, an, the), single
    spaces."""
    import re
    import string

    text = "".join(c for c in text.lower() if c not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def _f1(prediction: str, truth: str) -> float:
    from collections import Counter

    pred, gold = normalize_answer(prediction).split(), normalize_answer(truth).split()
    if not pred or not gold:  # SQuAD v2: "no answer" scores 1 only against "no answer"
        return float(pred == gold)
    common = sum((Counter(pred) & Counter(gold)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(gold)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(predictions: list[str], answers: list[list[str]]) -> dict:
    """Exact match and F1 (fractions), each the best over a question's gold answers (an empty
    list: the question has none, and only an empty prediction matches), averaged."""
    em, f1 = [], []
    for pred, golds in zip(predictions, answers, strict=True):
        golds = golds or [""]
        em.append(max(float(normalize_answer(pred) == normalize_answer(g)) for g in golds))
        f1.append(max(_f1(pred, g) for g in golds))
    return {"exact_match": float(np.mean(em)), "f1": float(np.mean(f1))}
