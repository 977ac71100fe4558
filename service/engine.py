"""The local models a process answers with: one model cache, the encoder, the bases.

What the student worker, `stillroom run` and distillation's evaluation share: embeddings from
the encoder as GGUF (no torch) and greedy generation on a base with a task's adapter.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from stillroom.config import RuntimeConfig
from stillroom.paths import Paths
from stillroom.service.generation import Generated, generate
from stillroom.service.runtime import ModelCache

if TYPE_CHECKING:
    from numpy.typing import NDArray


class Engine:
    """Embeddings and generations through a ModelCache; every model file loads on demand."""

    def __init__(self, paths: Paths, config: RuntimeConfig | None = None) -> None:
        config = config or RuntimeConfig()
        self.paths = paths
        self.config = config
        self.cache = ModelCache(
            budget_bytes=int(config.memory_budget_mb * 1e6),
            keep_alive=config.keep_alive_seconds,
            threads=config.threads,
        )
        self._encoders: dict[str, Path] = {}

    def encoder_file(self, source: Path | None = None) -> Path:
        """The GGUF of a sentence-transformers folder (default: the shared MiniLM), converted
        once and kept in the cache folder."""
        from stillroom.service.encoder import encoder_path
        from stillroom.service.gguf_encoder import encoder_gguf

        folder = Path(source) if source else encoder_path()
        key = str(folder)
        if key not in self._encoders:
            self._encoders[key] = encoder_gguf(folder, self.paths.cache_dir / "encoders")
        return self._encoders[key]

    def embed(self, texts: Sequence[str], source: Path | None = None) -> NDArray[np.float32]:
        """Unit-length embeddings by llama.cpp, truncated as sentence-transformers truncates."""
        from stillroom.service.embedding import embed, max_tokens_of

        llm = self.cache.encoder(self.encoder_file(source))
        return embed(llm, list(texts), max_tokens_of(llm))

    def generate(
        self,
        base: Path,
        adapter: Path | None,
        prompt: str,
        *,
        max_tokens: int = 256,
        grammar: str | None = None,
    ) -> Generated:
        """A greedy answer by the base with the adapter swapped in."""
        llm = self.cache.generator(base, adapter)
        return generate(llm, prompt, max_tokens=max_tokens, grammar=grammar)

    def describe(self) -> dict[str, Any]:
        return self.cache.describe()

    def close(self) -> None:
        self.cache.close()
