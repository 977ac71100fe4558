"""Fit the classifier student's head: logistic regression on frozen embeddings.

The head's format and its use in answering live with the served student
(`service.classifier`); this is the training half.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from stillroom.service.classifier import ClassifierHead

if TYPE_CHECKING:
    from numpy.typing import NDArray


def train_head(
    vectors: NDArray[np.float32], labels: list[str], c: float = 10.0, seed: int = 0
) -> ClassifierHead:
    """Fit multinomial logistic regression (sklearn, lbfgs) on frozen embeddings."""
    names = sorted(set(labels))
    if len(names) == 1:
        weights = np.zeros((1, vectors.shape[1]), dtype=np.float32)
        return ClassifierHead(names, weights, np.zeros(1, dtype=np.float32), vectors)
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    model.fit(vectors, labels)
    weights, bias = model.coef_.astype(np.float32), model.intercept_.astype(np.float32)
    if len(names) == 2:  # sklearn keeps one row for two classes: make it a softmax pair
        weights = np.vstack([-weights / 2, weights / 2])
        bias = np.array([-bias[0] / 2, bias[0] / 2], dtype=np.float32)
    return ClassifierHead([str(n) for n in model.classes_], weights, bias, vectors)
