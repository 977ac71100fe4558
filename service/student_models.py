"""The students a registered version can be served as, by the name it was trained as.

`load_student` builds the one a version needs (for the worker and `stillroom run`);
distillation calibrates a new version through these same classes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from stillroom.errors import ModelError
from stillroom.registry import ModelVersion
from stillroom.service.classifier import ClassifierStudent

if TYPE_CHECKING:
    from stillroom.service.engine import Engine
    from stillroom.service.generator import GenerativeStudent
    from stillroom.service.tagger_student import TaggerStudent


def load_student(
    version: ModelVersion, engine: Engine | None
) -> ClassifierStudent | GenerativeStudent | TaggerStudent:
    """The student class a version was trained as; extraction and free-text ones need the
    engine."""
    # Imported here: a process that only classifies never loads the generative parts.
    from stillroom.service.generator import STUDENT as GENERATIVE
    from stillroom.service.generator import GenerativeStudent
    from stillroom.service.tagger import STUDENT as TAGGER
    from stillroom.service.tagger_student import TaggerStudent

    if version.student in (GENERATIVE, TAGGER):
        if engine is None:
            raise ModelError(f"version {version.version} writes text: it needs llama.cpp")
        if version.student == TAGGER:
            return TaggerStudent(version, engine)
        return GenerativeStudent(version, engine)
    return ClassifierStudent(version)
