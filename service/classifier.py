"""A registered classify version, loaded to answer: confident, in scope, or it abstains.

The student is a logistic-regression head over a sentence encoder, stored as safetensors
(weights, bias, the training inputs' embeddings for the out-of-scope check, in float16) plus
JSON (labels); never pickle. Inputs are embedded by the encoder as GGUF through llama.cpp
(an Engine) where one is given, else by sentence-transformers. Distillation calibrates this
very class, loaded from the version folder it has just written.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stillroom.errors import ModelError
from stillroom.manifest import read_manifest
from stillroom.registry import ModelVersion
from stillroom.service.encoder import Encoder
from stillroom.service.guard import Guard, Prediction
from stillroom.service.scope import nearest_distance
from stillroom.store import Store

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from stillroom.config import RuntimeConfig
    from stillroom.service.engine import Engine

HEAD_WEIGHTS = "head.safetensors"
HEAD_CONFIG = "head.json"
STUDENT = "minilm-logreg"
ENCODER_DIR = "encoder"  # a version's own (SetFit-tuned) encoder, beside its head


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


@dataclass(frozen=True)
class Scores:
    """What the student makes of each input before its guarantee decides: the label it would
    give, that label's probability, and the distance to its nearest training input."""

    best: list[str]
    confidence: NDArray[np.float32]
    distance: NDArray[np.float64]


def embedding_engine(engine: Engine, runtime: RuntimeConfig) -> Engine | None:
    """What classifier inputs are embedded by under `runtime`: the engine (the encoder as
    GGUF through llama.cpp), or None for sentence-transformers."""
    return engine if runtime.encoder == "llama.cpp" else None


class ClassifierStudent:
    """Applies the version's guarantee: below its threshold or out of scope, it abstains.

    Its inputs must be embedded by its own encoder: `encode` (or `encoder`) picks the
    version's fine-tuned one where it carries one, else the shared MiniLM.
    """

    def __init__(self, version: ModelVersion) -> None:
        folder = Path(version.path)
        # Raises ModelError when a file is missing, changed, or added to the encoder folder.
        manifest = read_manifest(folder)
        self.version = version
        self.head = ClassifierHead.load(folder)
        self.guarantee = Guard.of(version.guarantee)
        self.encoder_path: Path | None = None  # None: the shared MiniLM
        if manifest.get("encoder") == "own":
            if f"{ENCODER_DIR}/model.safetensors" not in manifest.get("files", {}):
                raise ModelError(f"{folder}: its own encoder is not listed in the manifest")
            self.encoder_path = folder / ENCODER_DIR

    def encoder(self, store: Store | None = None) -> Encoder:
        """The encoder this version's head was trained on; `store` caches its embeddings
        (keyed by encoder, so a tuned encoder's never mix with the shared one's)."""
        return Encoder(self.encoder_path, store=store)

    def encode(
        self, texts: Sequence[str], store: Store | None = None, engine: Engine | None = None
    ) -> NDArray[np.float32]:
        """Embed inputs for `predict` with this version's encoder: through llama.cpp when an
        engine is given (no torch), else sentence-transformers."""
        if engine is not None:
            return engine.embed(texts, self.encoder_path)
        return self.encoder(store).encode(texts)

    def answer(
        self, texts: Sequence[str], store: Store | None = None, engine: Engine | None = None
    ) -> list[Prediction]:
        return self.predict(self.encode(texts, store, engine))

    def warm(self, engine: Engine) -> list[Path]:
        """Load the models it answers with now; returns their files (to pin them)."""
        encoder = engine.encoder_file(self.encoder_path)
        engine.cache.encoder(encoder)
        return [encoder]

    def scores(self, vectors: NDArray[np.float32]) -> Scores:
        """Its best label, confidence and out-of-scope distance for each embedded input."""
        probs = self.head.probabilities(vectors)
        best = probs.argmax(axis=1) if len(probs) else np.zeros(0, dtype=int)
        confidence = probs.max(axis=1) if len(probs) else np.zeros(0, dtype=np.float32)
        return Scores(
            [self.head.labels[int(j)] for j in best],
            confidence,
            nearest_distance(self.head.train_vectors, vectors),
        )

    def predict(self, vectors: NDArray[np.float32]) -> list[Prediction]:
        scores = self.scores(vectors)
        out = []
        for best, confidence, distance in zip(
            scores.best, scores.confidence.tolist(), scores.distance.tolist(), strict=True
        ):
            if self.guarantee is None:
                reason: str | None = "not calibrated yet"
            else:
                reason = self.guarantee.refusal(confidence, distance)
            answer = None if reason else best
            out.append(Prediction(answer, confidence, bool(reason), reason, best, distance))
        return out
