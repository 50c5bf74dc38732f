"""A TF-IDF logistic-regression baseline on a classification source, on the split ptft_jax
trains and tests on (``classify.splits``: a built-in's 80/10/10 cut, or a source's own files).

    python benchmarks/tfidf_baseline.py --source builtin:thucnews [--analyzer char --ngrams 1,3]

Character n-grams suit Chinese, which has no spaces between words (``--analyzer word`` splits
English on spaces). Features: ``TfidfVectorizer`` (sublinear term frequency) fitted on the
training texts; the classifier: ``LogisticRegression``, its ``C`` chosen from a grid by
validation accuracy, then scored once on the test split. Prints one JSON line: the chosen ``C``,
validation and test accuracy, macro F1 and the seconds taken. Needs scikit-learn.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from ptft_jax.data import classify, sources

GRID = (1.0, 3.0, 10.0, 30.0, 100.0, 300.0)


def macro_f1(truth: np.ndarray, pred: np.ndarray) -> float:
    """The unweighted mean over classes of 2TP / (2TP + FP + FN) (0 when that is 0/0)."""
    scores = []
    for c in np.unique(truth):
        tp = np.sum((pred == c) & (truth == c))
        denominator = (
            2 * tp + np.sum((pred == c) & (truth != c)) + np.sum((pred != c) & (truth == c))
        )
        scores.append(2 * tp / denominator if denominator else 0.0)
    return float(np.mean(scores))


def main() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default="builtin:thucnews")
    parser.add_argument("--text_field", default="text")
    parser.add_argument("--label_field", default="label")
    parser.add_argument("--analyzer", default="char", choices=("char", "word"))
    parser.add_argument("--ngrams", default="1,3", help="smallest,largest n-gram length")
    args = parser.parse_args()
    t0 = time.time()
    split = classify.splits(sources.load_records(args.source), (args.text_field,), args.label_field)
    data = {
        name: (
            [sources.text_of(r, args.text_field) for r in rows],
            np.array([str(r[args.label_field]) for r in rows]),
        )
        for name, rows in split.items()
    }
    low, high = (int(x) for x in args.ngrams.split(","))
    vectorizer = TfidfVectorizer(
        analyzer=args.analyzer, ngram_range=(low, high), sublinear_tf=True, min_df=1
    )
    features = {"train": vectorizer.fit_transform(data["train"][0])}
    features |= {k: vectorizer.transform(v[0]) for k, v in data.items() if k != "train"}
    best = None
    for c in GRID:
        model = LogisticRegression(C=c, max_iter=2000).fit(features["train"], data["train"][1])
        accuracy = float(np.mean(model.predict(features["validation"]) == data["validation"][1]))
        if best is None or accuracy > best[0]:
            best = (accuracy, c, model)
    val_accuracy, c, model = best
    result = {"source": args.source, "features": f"{args.analyzer} {low}-{high}-grams"}
    result |= {"vocabulary": len(vectorizer.vocabulary_), "C": c, "val_accuracy": val_accuracy}
    if "test" in data:
        pred = model.predict(features["test"])
        result["test_accuracy"] = float(np.mean(pred == data["test"][1]))
        result["test_macro_f1"] = macro_f1(data["test"][1], pred)
    result["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
