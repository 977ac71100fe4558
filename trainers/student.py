"""A registered classifier version, loaded to answer: confident, in scope, or it abstains."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stillroom.manifest import read_manifest
from stillroom.registry import ModelVersion
from stillroom.trainers.calibration import Guarantee, nearest_distance
from stillroom.trainers.classifier import ClassifierHead, Prediction

if TYPE_CHECKING:
    from numpy.typing import NDArray


class ClassifierStudent:
    """Applies the version's guarantee: below its threshold or out of scope, it abstains."""

    def __init__(self, version: ModelVersion) -> None:
        folder = Path(version.path)
        read_manifest(folder)  # raises ModelError when a file is missing or changed
        self.version = version
        self.head = ClassifierHead.load(folder)
        self.guarantee = Guarantee.from_dict(version.guarantee)

    def predict(self, vectors: NDArray[np.float32]) -> list[Prediction]:
        probs = self.head.probabilities(vectors)
        distance = nearest_distance(self.head.train_vectors, vectors)
        g = self.guarantee
        out = []
        for row, far in zip(probs, distance, strict=True):
            best, confidence = self.head.labels[int(row.argmax())], float(row.max())
            if g.threshold is None:
                more = f"; needs about {g.needed} more examples" if g.needed else ""
                reason = "no guarantee holds yet" + more
            elif g.radius is not None and far > g.radius:
                reason = "unlike anything it was trained on"
            elif confidence < g.threshold:
                reason = f"unsure (confidence below {g.threshold:.2f})"
            else:
                out.append(Prediction(best, confidence, False, None, best))
                continue
            out.append(Prediction(None, confidence, True, reason, best))
        return out
