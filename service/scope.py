"""How far an input lies from everything a student was trained on: the out-of-scope check.

The distance is the cosine distance to the nearest training input; a version's calibrated
radius (`trainers.calibration.fit_radius`, fitted on these very distances) bounds it.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

MAX_DISTANCE = 2.0  # cosine distance between opposite unit vectors
_CHUNK_CELLS = 1 << 22  # similarity cells per chunk in nearest_distance (32 MiB of float64)
_FEW_ROWS = 64  # queries this small run their matrix product on one BLAS thread


def nearest_distance(train_vectors: ArrayLike, vectors: ArrayLike) -> NDArray[np.float64]:
    """Cosine distance (1 - max similarity) from each row of `vectors` to any training row."""
    train, query = _unit_rows(train_vectors), _unit_rows(vectors)
    out = np.full(len(query), np.inf)  # with no training rows everything is out of scope
    if len(train) == 0:
        return out
    step = max(1, _CHUNK_CELLS // len(train))  # bounds memory: 10k x 10k never sits in RAM
    with _one_blas_thread() if len(query) <= _FEW_ROWS else contextlib.nullcontext():
        for start in range(0, len(query), step):
            similarity = query[start : start + step] @ train.T
            out[start : start + step] = 1.0 - similarity.max(axis=1)
    clipped: NDArray[np.float64] = np.clip(out, 0.0, MAX_DISTANCE)  # rounding can leave [0, 2]
    return clipped


@functools.cache
def _blas_controller() -> Any:
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()  # scanning the loaded libraries costs a few ms: once


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """A one-input product is too small to split, and with torch's threads already busy in
    the same process, BLAS threads waking for it turned a 11 ms answer into a 90 ms p95."""
    with _blas_controller().limit(limits=1, user_api="blas"):
        yield


def _unit_rows(vectors: ArrayLike) -> NDArray[np.float64]:
    rows = np.asarray(vectors, dtype=np.float64)
    if rows.ndim == 1:  # one vector, or an empty list
        rows = rows.reshape(1, -1) if rows.size else rows.reshape(0, 0)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    out: NDArray[np.float64] = rows / np.where(norms > 0, norms, 1.0)
    return out
