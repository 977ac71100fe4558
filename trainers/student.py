"""A registered version, loaded to answer: confident, in scope, or it abstains.

Classifier inputs are embedded by the encoder as GGUF through llama.cpp (an Engine) where one
is given, else by sentence-transformers; `load_student` picks the student class by version.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stillroom.errors import ModelError
from stillroom.manifest import read_manifest
from stillroom.registry import ModelVersion
from stillroom.store import Store
from stillroom.trainers.calibration import Guarantee, nearest_distance
from stillroom.trainers.classifier import ClassifierHead, Prediction
from stillroom.trainers.encoder import Encoder
from stillroom.trainers.setfit import ENCODER_DIR

if TYPE_CHECKING:
    from numpy.typing import NDArray

    from stillroom.service.engine import Engine
    from stillroom.trainers.generator import GenerativeStudent
    from stillroom.trainers.tagger_student import TaggerStudent


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
        self.guarantee = Guarantee.from_dict(version.guarantee)
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


def load_student(
    version: ModelVersion, engine: Engine | None
) -> ClassifierStudent | GenerativeStudent | TaggerStudent:
    """The student class a version was trained as; extraction and free-text ones need the
    engine."""
    from stillroom.trainers.generator import STUDENT as GENERATIVE
    from stillroom.trainers.generator import GenerativeStudent
    from stillroom.trainers.tagger import STUDENT as TAGGER
    from stillroom.trainers.tagger_student import TaggerStudent

    if version.student in (GENERATIVE, TAGGER):
        if engine is None:
            raise ModelError(f"version {version.version} writes text: it needs llama.cpp")
        if version.student == TAGGER:
            return TaggerStudent(version, engine)
        return GenerativeStudent(version, engine)
    return ClassifierStudent(version)
