"""A child process that answers with classifier students, so the daemon never imports torch.

Protocol: one JSON object per line on stdin, one line back per request, or `{"error": MESSAGE}`:
- `{"version": ID, "inputs": [TEXT, ...]}` -> `{"predictions": [{"answer", "confidence",
  "abstained", "reason", "best"}, ...]}`;
- `{"embed": [TEXT, ...]}` -> `{"vectors": [[FLOAT, ...], ...]}`: unit-length embeddings by
  the shared MiniLM (how the gateway tells paraphrased instructions apart).
`python -m stillroom.trainers.worker`.
"""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from typing import Any

from stillroom.errors import StillroomError
from stillroom.paths import Paths
from stillroom.registry import Registry
from stillroom.store import Store
from stillroom.trainers.encoder import Encoder
from stillroom.trainers.student import ClassifierStudent


def serve(store: Store) -> None:
    registry = Registry(store)
    students: dict[int, ClassifierStudent] = {}
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        try:
            request: dict[str, Any] = json.loads(line)
            if "embed" in request:
                texts = [str(t) for t in request["embed"]]
                reply: dict[str, Any] = {"vectors": Encoder(store=store).encode(texts).tolist()}
                print(json.dumps(reply), flush=True)
                continue
            version_id = int(request["version"])
            if version_id not in students:
                students[version_id] = ClassifierStudent(registry.version(version_id))
            student = students[version_id]
            predictions = student.predict(student.encode(list(request["inputs"]), store))
            reply = {"predictions": [asdict(p) for p in predictions]}
        except (StillroomError, KeyError, TypeError, ValueError) as exc:
            reply = {"error": str(exc) or type(exc).__name__}
        print(json.dumps(reply), flush=True)


def main() -> None:
    with Store(Paths.resolve().ensure().database) as store:
        serve(store)


if __name__ == "__main__":
    main()
