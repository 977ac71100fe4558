"""The classifier student: a logistic-regression head on the frozen shared encoder.

Stored as safetensors (weights, bias, the training inputs' embeddings for the out-of-scope
check) plus JSON (labels); never pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stillroom.errors import ModelError

if TYPE_CHECKING:
    from numpy.typing import NDArray

HEAD_WEIGHTS = "head.safetensors"
HEAD_CONFIG = "head.json"
STUDENT = "minilm-logreg"


@dataclass(frozen=True)
class Prediction:
    """A student's answer, or its abstention and why."""

    answer: str | None
    confidence: float
    abstained: bool
    reason: str | None = None
    best: str | None = None  # what it would have said, even when abstaining


@dataclass
class ClassifierHead:
    """Softmax over `labels` from an embedding: weights (k, d), bias (k)."""

    labels: list[str]
    weights: NDArray[np.float32]
    bias: NDArray[np.float32]
    train_vectors: NDArray[np.float32]

    def probabilities(self, vectors: NDArray[np.float32]) -> NDArray[np.float32]:
        logits = vectors @ self.weights.T + self.bias
        if len(self.labels) == 1:
            return np.ones((len(vectors), 1), dtype=np.float32)
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        probs: NDArray[np.float32] = (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)
        return probs

    def save(self, folder: Path, extra: dict[str, Any] | None = None) -> None:
        from safetensors.numpy import save_file

        save_file(
            {
                "weights": np.ascontiguousarray(self.weights, dtype=np.float32),
                "bias": np.ascontiguousarray(self.bias, dtype=np.float32),
                "train_vectors": np.ascontiguousarray(self.train_vectors, dtype=np.float16),
            },
            str(folder / HEAD_WEIGHTS),
        )
        config = {"labels": self.labels, "student": STUDENT, **(extra or {})}
        (folder / HEAD_CONFIG).write_text(json.dumps(config, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> ClassifierHead:
        from safetensors.numpy import load_file

        try:
            tensors = load_file(str(folder / HEAD_WEIGHTS))
            config = json.loads((folder / HEAD_CONFIG).read_text())
        except (OSError, ValueError) as exc:
            raise ModelError(f"{folder}: cannot read the classifier head ({exc})") from exc
        return cls(
            labels=list(config["labels"]),
            weights=tensors["weights"].astype(np.float32),
            bias=tensors["bias"].astype(np.float32),
            train_vectors=tensors["train_vectors"].astype(np.float32),
        )


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
