"""A registered tagger version (`service.tagger`), loaded to answer: numpy only, no LLM.

Like a generative version it abstains below its calibrated confidence (the probability of
its whole labelling) or when the input is unlike anything it was trained on (the shared
encoder through llama.cpp measures that).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stillroom.registry import ModelVersion
from stillroom.service.engine import Engine
from stillroom.service.generation import Generated
from stillroom.service.guard import Prediction, guard_of, guarded
from stillroom.service.tagger import Tagger


class TaggerStudent:
    def __init__(self, version: ModelVersion, engine: Engine) -> None:
        self.version = version
        self.engine = engine
        self.guarantee, self.train_vectors = guard_of(version)
        self.tagger = Tagger.load(Path(version.path))

    def warm(self, engine: Engine) -> list[Path]:
        """Load the encoder now (for the out-of-scope check); returns its file (to pin it)."""
        encoder = engine.encoder_file()
        engine.cache.encoder(encoder)
        return [encoder]

    def forced(self, texts: Sequence[str]) -> list[Generated]:
        """The best labelling of each text written as JSON, never abstaining; its one
        "log-probability" is that of the whole labelling."""
        out = []
        for text in texts:
            started = time.perf_counter()
            answer, probability = self.tagger.answer(text)
            logprob = math.log(probability) if probability > 0 else -math.inf
            out.append(Generated(answer, [logprob], 0, time.perf_counter() - started, True))
        return out

    def answer(self, texts: Sequence[str], *_: Any, **__: Any) -> list[Prediction]:
        return guarded(self, texts)
