"""The guarantee a student must meet before it may act: a threshold proven on held-out data.

Learn-then-Test on the calibration split: walk confidence thresholds from the most confident
down, bound the error among answered inputs with a one-sided Clopper-Pearson bound, and stop
at the first threshold whose bound exceeds the target. Which thresholds the walk tests, and
from where, is planned before any calibration label is read (from the confidences, or from
held-out training data), so the walk stays a fixed sequence. Inputs far from every training
input (cosine distance beyond a radius) are out of scope and never answered.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from stillroom.binomial import breaks_bound
from stillroom.service.scope import MAX_DISTANCE, nearest_distance

RADIUS_SLACK = 1.1
NEEDED_SHARES = (0.5, 0.25, 0.1)  # confident shares examples_needed extrapolates from
LOW_COVERAGE = 0.25  # below this the guarantee is too narrow to be useful: say what would help
PLAN_SCALES = (1.0, 2.0, 4.0)  # the walk is planned as if errors were this many times likelier
PLAN_RUNS = (50, 100)  # simulated calibration sets when planning: at least, at most
PLAN_CELLS = 250_000  # simulated items when planning (bounds its memory to ~4 MB)
PLATT_STEPS, PLATT_RIDGE = 25, 1e-3


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
    reference: tuple[ArrayLike, ArrayLike] | None = None,
    walk: Literal["planned", "ladder", "every"] = "planned",
) -> Guarantee:
    """Choose the threshold on the calibration split by fixed-sequence testing.

    `reference`: (confidence, correct) of held-out TRAINING inputs (out-of-fold), if any;
    it only helps plan which thresholds to test, and never sees a calibration label.
    `walk` fixes the sequence instead of planning it: "every" threshold from the first
    testable one (the walk before 2026-12-03), or the whole "ladder" from its lowest rung.
    """
    conf, right, scope = _inputs(confidence, correct, distance, radius)
    size = len(conf)
    order = np.argsort(-conf[scope], kind="stable")
    conf_sorted, wrong_sorted = conf[scope][order], ~right[scope][order]
    # Candidate thresholds are the distinct confidences; ties are answered together, so each
    # candidate's counts are taken at the last item of its tie group. The sequence to test is
    # planned from confidences (and the reference) alone, never from correctness, so it is
    # still fixed in advance of the labels it is tested on.
    last = _plan(conf_sorted, _allowed_errors(len(conf_sorted), target, delta), reference, walk)
    answered = last + 1
    errors = np.cumsum(wrong_sorted)[last]
    thresholds = conf_sorted[last]
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


def _allowed_errors(n_max: int, target: float, delta: float) -> NDArray[np.int64]:
    """For 0..n_max answered items, the most errors whose bound is <= target (-1: none)."""
    return _allowed_table(max(64, 1 << n_max.bit_length()), target, delta)[: n_max + 1]


@functools.cache
def _allowed_table(n_max: int, target: float, delta: float) -> NDArray[np.int64]:
    n = np.arange(n_max + 1)
    # P(Binomial(n, target) <= e) <= delta exactly when the bound at e errors is <= target;
    # the binomial quantile lands on that e or one above it.
    most = stats.binom.ppf(delta, n, target)
    too_many = _cp_upper(most, n, delta) > target
    table: NDArray[np.int64] = (most - too_many).astype(np.int64)
    table.flags.writeable = False  # shared by every later call
    return table


def _plan(
    conf_sorted: NDArray[np.float64],
    allowed: NDArray[np.int64],
    reference: tuple[ArrayLike, ArrayLike] | None,
    walk: str = "planned",
) -> NDArray[np.intp]:
    """The tie-group ends to test, in order: every threshold from the first testable one, or
    a ladder that tests only where one more error becomes allowed (a local cluster of errors
    then costs one rung, not the walk), from whichever rung a simulation expects to answer
    the most. The simulation draws correctness from the confidences' error estimate, as is
    and two and four times over (overconfident scores should not lure it too far down)."""
    ends = np.flatnonzero(np.diff(conf_sorted, append=-np.inf))
    # Thresholds answering fewer than min_answered items cannot pass even with zero errors:
    # they are untestable at this sample size, not failed.
    steps = ends[allowed[ends + 1] >= 0]
    if len(steps) == 0 or walk == "every":
        return steps
    # Rung e: the first threshold answering enough items for e errors to pass; the last rung
    # answers every in-scope item.
    fewest = np.searchsorted(allowed, np.arange(int(allowed[-1]) + 1))
    first_ends = np.r_[np.searchsorted(ends + 1, fewest), len(ends) - 1]
    rungs: NDArray[np.intp] = ends[np.unique(first_ends)]
    if walk == "ladder":
        return rungs
    p_wrong = _error_estimate(conf_sorted, reference)
    runs = int(np.clip(PLAN_CELLS // len(conf_sorted), PLAN_RUNS[0], PLAN_RUNS[1]))
    draws = np.random.default_rng(0).random((runs, len(conf_sorted)))  # seeded: reproducible
    ladder, every = np.zeros(len(rungs)), 0.0
    for scale in PLAN_SCALES:
        errors = np.cumsum(draws < np.minimum(1.0, scale * p_wrong), axis=1, dtype=np.int32)
        ladder += _expected_answered(errors[:, rungs] <= allowed[rungs + 1], rungs)
        first = _expected_answered(errors[:, steps] <= allowed[steps + 1], steps, start_only=True)
        every += first[0]
    start = int(np.argmax(ladder))  # the first of equals: with no evidence, the lowest rung
    return steps if every > ladder[start] else rungs[start:]


def _expected_answered(
    passes: NDArray[np.bool_], sequence: NDArray[np.intp], start_only: bool = False
) -> NDArray[np.float64]:
    """Mean items answered over simulated runs (rows: which steps of `sequence` pass) when
    the walk starts at each step of `sequence` (or only at its first)."""
    steps = np.arange(len(sequence))
    failed = np.where(passes, len(sequence), steps)
    if start_only:
        next_failure = failed.min(axis=1, keepdims=True)
        steps = steps[:1]
    else:  # for each start, the first failure at or after it
        next_failure = np.minimum.accumulate(failed[:, ::-1], axis=1)[:, ::-1]
    reached = np.where(next_failure > steps, sequence[np.maximum(next_failure - 1, 0)] + 1, 0)
    mean: NDArray[np.float64] = reached.mean(axis=0)
    return mean


def _error_estimate(
    conf_sorted: NDArray[np.float64], reference: tuple[ArrayLike, ArrayLike] | None
) -> NDArray[np.float64]:
    """Each item's chance of being wrong: 1 - confidence, or with `reference`, a logistic
    fit of correctness on the logit of confidence there (Platt scaling)."""
    if reference is None:
        return np.clip(1.0 - conf_sorted, 0.0, 1.0)
    ref_conf, ref_right, _ = _inputs(reference[0], reference[1], None, None)
    if len(ref_right) == 0 or ref_right.all() or not ref_right.any():
        rate = (np.sum(~ref_right) + 0.5) / (len(ref_right) + 1.0)  # Jeffreys: never 0 or 1
        return np.full(len(conf_sorted), rate)
    x, y = _logit(ref_conf), ref_right.astype(np.float64)
    a, b = 1.0, 0.0
    for _ in range(PLATT_STEPS):  # Newton's method; a little ridge keeps it finite if separable
        p = 1.0 / (1.0 + np.exp(-(a * x + b)))
        w = p * (1.0 - p)
        grad = np.array([np.dot(p - y, x) + PLATT_RIDGE * a, np.sum(p - y) + PLATT_RIDGE * b])
        hess = np.array([[np.dot(w, x * x), np.dot(w, x)], [np.dot(w, x), np.sum(w)]])
        step = np.linalg.solve(hess + PLATT_RIDGE * np.eye(2), grad)
        a, b = a - step[0], b - step[1]
    wrong: NDArray[np.float64] = 1.0 / (1.0 + np.exp(a * _logit(conf_sorted) + b))
    return wrong


def _logit(p: NDArray[np.float64]) -> NDArray[np.float64]:
    q = np.clip(p, 1e-6, 1.0 - 1e-6)
    out: NDArray[np.float64] = np.log(q / (1.0 - q))
    return out


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
        # Only a test split that proves the bound wrong (at 95%) fails it: a point estimate
        # above the bound on a few dozen answers is what chance does to a sound version.
        holds=not breaks_bound(errors, answered, guarantee.bound),
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
