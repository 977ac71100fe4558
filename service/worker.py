"""A child process that answers with students, so the daemon never holds their models.

Protocol: one JSON object per line on stdin, one line back per request, or `{"error": MESSAGE}`:
- `{"version": ID, "inputs": [TEXT, ...]}` -> `{"predictions": [{"answer", "confidence",
  "abstained", "reason", "best", "distance"}, ...]}`;
- `{"embed": [TEXT, ...]}` -> `{"vectors": [[FLOAT, ...], ...]}`: unit-length embeddings by
  the shared MiniLM (how the gateway tells paraphrased instructions apart);
- `{"stats": true}` -> the model cache: what is loaded, loads, hits, swaps.
With the runtime's encoder "llama.cpp" (the default) every model runs in llama.cpp and torch
is never imported; "sentence-transformers" embeds classifier inputs with torch instead.
`python -m stillroom.service.worker`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

from stillroom.config import Config
from stillroom.config_files import load_config
from stillroom.errors import StillroomError
from stillroom.paths import Paths
from stillroom.registry import Registry
from stillroom.service.classifier import ClassifierStudent, embedding_engine
from stillroom.service.encoder import Encoder
from stillroom.service.engine import Engine
from stillroom.service.student_models import load_student
from stillroom.store import Store


def serve(store: Store, config: Config, paths: Paths) -> None:
    registry = Registry(store)
    engine = Engine(paths, config.runtime)
    encoder = embedding_engine(engine, config.runtime)
    students: dict[int, Any] = {}
    for name in config.runtime.pinned:  # hot tasks: loaded now, never unloaded
        try:
            version = registry.serving_version(registry.task(name))
            if version is not None:
                students[version.id] = load_student(version, engine)
                for path in students[version.id].warm(engine):
                    engine.cache.pin(path)
        except StillroomError as exc:
            print(f"pinned task {name}: {exc}", file=sys.stderr, flush=True)
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        try:
            request: dict[str, Any] = json.loads(line)
            reply: dict[str, Any]
            if "embed" in request:
                texts = [str(t) for t in request["embed"]]
                vectors = engine.embed(texts) if encoder else Encoder(store=store).encode(texts)
                reply = {"vectors": vectors.tolist()}
            elif "stats" in request:
                reply = engine.describe()
            else:
                version_id = int(request["version"])
                if version_id not in students:
                    students[version_id] = load_student(registry.version(version_id), engine)
                student = students[version_id]
                texts = [str(t) for t in request["inputs"]]
                if isinstance(student, ClassifierStudent):
                    predictions = student.answer(texts, store, encoder)
                else:
                    predictions = student.answer(texts)
                reply = {"predictions": [asdict(p) for p in predictions]}
            engine.cache.expire()
        except (StillroomError, KeyError, TypeError, ValueError) as exc:
            reply = {"error": str(exc) or type(exc).__name__}
        print(json.dumps(reply), flush=True)
    engine.close()


def main() -> None:
    paths = Paths.resolve().ensure()
    config, _ = load_config()
    with Store(paths.database) as store:
        serve(store, config, paths)


if __name__ == "__main__":
    main()
