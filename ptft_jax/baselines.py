"""The TF-IDF baseline every suite report carries: TF-IDF features and a linear model
(scikit-learn), fitted on a task's training split, its regularisation chosen on validation; a
tagging task's is the word dictionary (CoNLL's baseline: each word's most frequent training
tag, ``O`` for words never seen), scored by seqeval as the taggers are; a reading task's (SQuAD)
is sentence overlap: the context sentence sharing most words with the question, less those
words.

Classification fits a logistic regression, regression a ridge regression. A text pair is
vectorized one side at a time with one vocabulary and the features are ``[a, b, a * b,
cos(a, b)]`` (the product marks the n-grams the two share and the cosine sums them, which is
most of what a bag of n-grams knows about a pair). Scores come from ``scores.py``, the functions
that score the fine-tuned models, so the numbers compare. Deterministic: one fit per task.
"""

from __future__ import annotations

import numpy as np

from ptft_jax import errors, scores

STRENGTHS = (0.01, 0.1, 1.0, 10.0, 100.0)  # logistic C (ridge alpha = 1 / C), chosen on validation


def check():
    """scikit-learn's parts the baseline uses, or one sentence saying how to install it."""
    try:
        from scipy import sparse
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression, Ridge
    except ImportError:
        raise errors.UserError(
            "the TF-IDF baseline needs scikit-learn; install it with pip install -e "
            '".[suite]", or leave it out with --baselines random.'
        ) from None
    return sparse, TfidfVectorizer, LogisticRegression, Ridge


def _features(rows_by_split: dict, analyzer: str):
    sparse, TfidfVectorizer, _, _ = check()
    if analyzer == "char":  # no spaces between words: n-grams of characters
        vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    else:
        vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2)
    train = rows_by_split["train"]
    pair = "text_pair" in train[0]
    vec.fit([r["text"] for r in train] + ([r["text_pair"] for r in train] if pair else []))
    out = {}
    for split, rows in rows_by_split.items():
        a = vec.transform([r["text"] for r in rows])
        if pair:
            b = vec.transform([r["text_pair"] for r in rows])
            both = a.multiply(b)
            cosine = sparse.csr_matrix(both.sum(axis=1))  # rows are unit length
            a = sparse.hstack([a, b, both, cosine]).tocsr()
        out[split] = a
    return out


def _metrics(regression: bool, num_labels: int, preds: np.ndarray, labels: np.ndarray) -> dict:
    if regression:
        return scores.regression_metrics(preds, labels)
    metrics = scores.classification_metrics(preds, labels, num_labels)
    return {k: v for k, v in metrics.items() if k != "confusion_matrix"}


def tfidf(rows_by_split: dict, regression: bool, num_labels: int, metric, analyzer="word"):
    """``{"strength": C, split: metrics, ...}`` of the TF-IDF baseline on ``rows_by_split``
    (``{"train", "validation"[, "test"]}`` of ``suite_data.load_task`` rows). Class labels may
    be names (sorted, they number the classes, as the fine-tuned classifier numbers them)."""
    _, _, LogisticRegression, Ridge = check()
    x = _features(rows_by_split, analyzer)
    raw = {split: [r["label"] for r in rows] for split, rows in rows_by_split.items()}
    if regression:
        y = {s: np.asarray(v, np.float64) for s, v in raw.items()}
    else:
        names = sorted({str(v) for v in raw["train"]}) if isinstance(raw["train"][0], str) else None
        index = {n: i for i, n in enumerate(names)} if names else None
        y = {
            s: np.asarray([index[str(v)] if index else int(v) for v in vs]) for s, vs in raw.items()
        }
    best = None
    for strength in STRENGTHS:
        if regression:
            model = Ridge(alpha=1.0 / strength)
        else:
            model = LogisticRegression(C=strength, max_iter=2000)
        model.fit(x["train"], y["train"])
        result = {"strength": strength}
        for split in x:
            if split != "train":
                preds = model.predict(x[split])
                result[split] = _metrics(regression, num_labels, preds, y[split])
        chosen = float(np.mean([result["validation"][m] for m in metric]))
        if best is None or chosen > best[0]:
            best = (chosen, result)
    return best[1]


def dictionary(rows_by_split: dict) -> dict:
    """``{"strength": None, split: metrics, ...}`` of the word-dictionary tagger on tagging rows
    (``{"tokens", "tags"}``): each word gets its most frequent training tag (ties: the first
    seen), then ``I-`` tags that cannot continue become ``B-`` (seqeval reads them so anyway)."""
    from collections import Counter

    from seqeval import metrics as seqeval

    counts: dict[str, Counter] = {}
    for row in rows_by_split["train"]:
        for word, tag in zip(row["tokens"], row["tags"], strict=True):
            counts.setdefault(word, Counter())[tag] += 1
    best = {word: c.most_common(1)[0][0] for word, c in counts.items()}
    result = {"strength": None}
    for split, rows in rows_by_split.items():
        if split == "train":
            continue
        gold = [r["tags"] for r in rows]
        pred = [[best.get(w, "O") for w in r["tokens"]] for r in rows]
        result[split] = {
            "f1": seqeval.f1_score(gold, pred, zero_division=0),
            "precision": seqeval.precision_score(gold, pred, zero_division=0),
            "recall": seqeval.recall_score(gold, pred, zero_division=0),
            "accuracy": seqeval.accuracy_score(gold, pred),
        }
    return result


def overlap(rows_by_split: dict) -> dict:
    """``{"strength": None, split: metrics}`` of the sentence-overlap reader on question
    answering rows (``{"question", "context", "answers"}``): the answer is the context sentence
    with the most words of the question (the first on ties), without the question's words."""
    import re

    def answer(row) -> str:
        asked = set(scores.normalize_answer(row["question"]).split())
        sentences = [x for x in re.split(r"(?<=[.!?])\s+", row["context"]) if x.strip()]
        best = max(sentences, key=lambda x: len(asked & set(scores.normalize_answer(x).split())))
        return " ".join(w for w in best.split() if scores.normalize_answer(w) not in asked)

    result = {"strength": None}
    for split, rows in rows_by_split.items():
        if split != "train":
            gold = [r["answers"]["text"] for r in rows]
            result[split] = scores.squad_metrics([answer(r) for r in rows], gold)
    return result
