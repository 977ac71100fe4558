"""The guarantee a student must meet before it may act: a threshold proven on held-out data.

Learn-then-Test on the calibration split: walk confidence thresholds from the most confident
down, bound the error among answered inputs with a one-sided Clopper-Pearson bound, and stop
at the first threshold whose bound exceeds the target. Inputs far from every training input
(cosine distance beyond a radius) are out of scope and never answered.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

RADIUS_SLACK = 1.1
MAX_DISTANCE = 2.0  # cosine distance between opposite unit vectors
NEEDED_SHARES = (0.5, 0.25, 0.1)  # confident shares examples_needed extrapolates from
LOW_COVERAGE = 0.25  # below this the guarantee is too narrow to be useful: say what would help
_CHUNK_CELLS = 1 << 22  # similarity cells per chunk in nearest_distance (32 MiB of float64)
_FEW_ROWS = 64  # queries this small run their matrix product on one BLAS thread


def clopper_pearson_upper(errors: int, n: int, delta: float = 0.05) -> float:
    """One-sided (1 - delta) upper confidence bound on a binomial error rate."""
    return float(_cp_upper(np.array([errors]), np.array([n]), delta)[0])


def _cp_upper(errors: NDArray[Any], n: NDArray[Any], delta: float) -> NDArray[np.float64]:
    """Vectorised Clopper-Pearson upper bounds; real-valued `errors` are allowed."""
    errors = np.asarray(errors, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    out = np.ones(errors.shape, dtype=np.float64)  # n == 0 or errors == n: nothing is known
    ok = (n > 0) & (errors < n)
    # The exact bound u solves P(Binomial(n, u) <= errors) = delta, i.e. the (1 - delta)
    # quantile of Beta(errors + 1, n - errors); it never undercovers, unlike a normal bound.
    out[ok] = stats.beta.ppf(1.0 - delta, errors[ok] + 1.0, n[ok] - errors[ok])
    return out


def min_answered(target: float, delta: float = 0.05) -> int:
    """Fewest answered items for which zero errors gives a bound <= target (59 for 5%/95%)."""
    if not 0.0 < target < 1.0 or not 0.0 < delta < 1.0:
        raise ValueError(f"target and delta must lie in (0, 1), got {target} and {delta}")
    # With zero errors the bound is 1 - delta**(1/n), so n >= log(delta) / log(1 - target);
    # the loops only correct floating-point rounding at the boundary.
    n = max(1, math.ceil(math.log(delta) / math.log1p(-target)))
    while n > 1 and clopper_pearson_upper(0, n - 1, delta) <= target:
        n -= 1
    while clopper_pearson_upper(0, n, delta) > target:
        n += 1
    return n


@dataclass(frozen=True)
class SplitCheck:
    """How the guarantee fared on the test split, which played no part in choosing it."""

    test_size: int
    answered: int
    errors: int
    coverage: float
    error_rate: float | None  # None when nothing was answered
    bound: float  # Clopper-Pearson upper bound on the test error among answered
    holds: bool  # error_rate <= the calibration bound, or nothing answered


@dataclass(frozen=True)
class Guarantee:
    """A threshold and scope radius, and the evidence on calibration (and test) behind them."""

    target: float
    delta: float
    threshold: float | None  # None: no threshold passed, the student always abstains
    radius: float | None  # out-of-scope cosine-distance limit; None: no scope check
    calibration_size: int
    answered: int
    errors: int
    bound: float
    coverage: float
    test: SplitCheck | None = None
    needed: int | None = None  # about how many more labelled examples would help

    def passed(self, min_coverage: float) -> bool:
        """True when a threshold holds and answers at least `min_coverage` of calibration."""
        return self.threshold is not None and self.coverage >= min_coverage

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values, `test` as a nested dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Guarantee:
        """The inverse of `to_dict`."""
        fields = dict(data)
        test = fields.pop("test", None)
        return cls(**fields, test=SplitCheck(**test) if test is not None else None)


def fit_guarantee(
    confidence: ArrayLike,
    correct: ArrayLike,
    *,
    target: float = 0.05,
    delta: float = 0.05,
    distance: ArrayLike | None = None,
    radius: float | None = None,
    calibration_share: float = 0.25,
) -> Guarantee:
    """Choose the threshold on the calibration split by fixed-sequence testing."""
    conf, right, scope = _inputs(confidence, correct, distance, radius)
    size = len(conf)
    order = np.argsort(-conf[scope], kind="stable")
    conf_sorted, wrong_sorted = conf[scope][order], ~right[scope][order]
    # Candidate thresholds are the distinct confidences; ties are answered together, so each
    # candidate's counts are taken at the last item of its tie group.
    last = np.flatnonzero(np.diff(conf_sorted, append=-np.inf))
    answered = last + 1
    errors = np.cumsum(wrong_sorted)[last]
    # Thresholds answering fewer than min_answered items cannot pass even with zero errors:
    # they are untestable at this sample size, not failed. Which thresholds those are depends
    # only on the confidences, not on correctness, so the sequence is still fixed in advance.
    testable = answered >= min_answered(target, delta)
    answered, errors, thresholds = answered[testable], errors[testable], conf_sorted[last][testable]
    bounds = _cp_upper(errors, answered, delta)
    # Fixed sequence: the first failing threshold ends the walk (the bounds are computed at
    # once only for speed). Lower thresholds count for nothing, even where one would pass
    # again: keeping the best of a scan is not a valid bound.
    failed = np.flatnonzero(bounds > target)
    k = (int(failed[0]) if len(failed) else len(bounds)) - 1  # last that passed; -1: none
    if k < 0:
        # Nothing passed: the student always abstains, so nothing counts as answered.
        guarantee = Guarantee(target, delta, None, radius, size, 0, 0, 1.0, 0.0)
    else:
        guarantee = Guarantee(
            target=target,
            delta=delta,
            threshold=float(thresholds[k]),
            radius=radius,
            calibration_size=size,
            answered=int(answered[k]),
            errors=int(errors[k]),
            bound=float(bounds[k]),
            coverage=int(answered[k]) / size,
        )
    if guarantee.threshold is None or guarantee.coverage < LOW_COVERAGE:
        needed = examples_needed(
            confidence,
            correct,
            target=target,
            delta=delta,
            distance=distance,
            radius=radius,
            calibration_share=calibration_share,
        )
        guarantee = replace(guarantee, needed=needed)
    return guarantee


def check_on_test(
    guarantee: Guarantee,
    confidence: ArrayLike,
    correct: ArrayLike,
    distance: ArrayLike | None = None,
) -> Guarantee:
    """Apply the guarantee to the test split; returns a copy with `test` filled."""
    conf, right, scope = _inputs(confidence, correct, distance, guarantee.radius)
    if guarantee.threshold is None:
        answer = np.zeros(len(conf), dtype=bool)
    else:
        answer = scope & (conf >= guarantee.threshold)
    answered, errors = int(answer.sum()), int((answer & ~right).sum())
    rate = errors / answered if answered else None
    check = SplitCheck(
        test_size=len(conf),
        answered=answered,
        errors=errors,
        coverage=answered / len(conf) if len(conf) else 0.0,
        error_rate=rate,
        bound=clopper_pearson_upper(errors, answered, guarantee.delta),
        holds=rate is None or rate <= guarantee.bound,
    )
    return replace(guarantee, test=check)


def examples_needed(
    confidence: ArrayLike,
    correct: ArrayLike,
    *,
    target: float = 0.05,
    delta: float = 0.05,
    distance: ArrayLike | None = None,
    radius: float | None = None,
    calibration_share: float = 0.25,
) -> int | None:
    """Estimate how many more labelled examples the task needs; None if it never will.

    A rough estimate, not a promise: for the most confident half, quarter and tenth of the
    in-scope calibration items it assumes their error rate stays as observed (a clean share
    needs the zero-error minimum) and that the student keeps answering that share, and
    returns the smallest total. None means even the most confident tenth errs at or above
    the target, so more data of the same kind will not help.
    """
    conf, right, scope = _inputs(confidence, correct, distance, radius)
    size = len(conf)
    wrong = ~right[scope][np.argsort(-conf[scope], kind="stable")]
    in_scope = float(scope.mean()) if scope.any() else 1.0
    have = size / calibration_share
    estimates = []
    for share in NEEDED_SHARES:
        top = wrong[: math.ceil(len(wrong) * share)]
        errors = int(top.sum())
        rate = errors / len(top) if len(top) else 0.0
        if rate >= target:
            continue
        # With no errors so far the answer is the zero-error minimum; otherwise the smallest
        # sample at which the observed rate would pass.
        answered = min_answered(target, delta) if errors == 0 else _smallest_n(rate, target, delta)
        # Answered items are that share of the in-scope part of calibration, which is one
        # share of the labelled data; what the task already has counts against that.
        total = answered / (share * in_scope) / calibration_share
        estimates.append(max(1, math.ceil(total - have)))
    return min(estimates) if estimates else None


def _smallest_n(rate: float, target: float, delta: float) -> int:
    """Smallest n whose bound at `rate * n` errors (real-valued) is <= target; rate < target."""

    def ok(n: int) -> bool:
        return bool(_cp_upper(np.array([rate * n]), np.array([n]), delta)[0] <= target)

    low, high = 1, 2
    while not ok(high):  # the bound falls towards `rate` as n grows, so this terminates
        low, high = high, high * 2
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if ok(mid) else (mid, high)
    return high


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


def fit_radius(train_vectors: ArrayLike, cal_vectors: ArrayLike, quantile: float = 0.99) -> float:
    """The out-of-scope radius: a high quantile of calibration distances, with some slack."""
    distance = nearest_distance(train_vectors, cal_vectors)
    distance = distance[np.isfinite(distance)]
    if len(distance) == 0:
        return MAX_DISTANCE  # nothing to measure normal inputs by: keep everything in scope
    # The quantile of a few hundred calibration distances is itself noisy, so new inputs
    # like them would still land just past it; 10% slack keeps those in scope, while inputs
    # unlike anything trained on sit far beyond it.
    return float(min(np.quantile(distance, quantile) * RADIUS_SLACK, MAX_DISTANCE))


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


def _inputs(
    confidence: ArrayLike, correct: ArrayLike, distance: ArrayLike | None, radius: float | None
) -> tuple[NDArray[np.float64], NDArray[np.bool_], NDArray[np.bool_]]:
    """Confidence, correctness and the in-scope mask as checked arrays of one length."""
    conf = np.asarray(confidence, dtype=np.float64).reshape(-1)
    right = np.asarray(correct, dtype=bool).reshape(-1)
    if len(right) != len(conf):
        raise ValueError(f"{len(conf)} confidences but {len(right)} correctness flags")
    scope = np.ones(len(conf), dtype=bool)
    if distance is not None and radius is not None:
        far = np.asarray(distance, dtype=np.float64).reshape(-1)
        if len(far) != len(conf):
            raise ValueError(f"{len(conf)} confidences but {len(far)} distances")
        scope = far <= radius
    return conf, right, scope
