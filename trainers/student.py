"""A registered classifier version, loaded to answer: confident, in scope, or it abstains."""

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

    def encode(self, texts: Sequence[str], store: Store | None = None) -> NDArray[np.float32]:
        """Embed inputs for `predict` with this version's encoder."""
        return self.encoder(store).encode(texts)

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
