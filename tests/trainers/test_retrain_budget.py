"""Retrains keep the promise: the per-version budget and uniform-only calibration, simulated.

Many task histories are replayed. In each, live calls arrive between retrains; before a
version is active every call is labelled by the teacher, afterwards only the calls it
forwards (it abstained) and an audit sample of 10%. Every retrain draws a new student of
the task's quality and fits its guarantee with the real `fit_guarantee`; a passing version
goes live. A history breaks the promise when any version it activated errs on more than the
target share of the live calls it answers (computed exactly from the student model). Under
the rule in `trainers/budget.py` that happens in at most delta of histories; under naive
re-calibration (full delta every time, on every labelled call, or on the same set until a
version passes) it does not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import special, stats

from stillroom.trainers.budget import version_delta
from stillroom.trainers.calibration import fit_guarantee

TARGET = 0.05
DELTA = 0.05
RETRAINS = 8  # versions fitted per history
BACKLOG = 200  # calibration-split calls labelled before the first fit
PERIOD = 150  # calibration-split live calls between two retrains
AUDIT = 0.1  # share of live calls audited, coin flipped before the student decides
UNFAMILIAR = 0.35  # share of live calls of a kind the first versions never learned
NOISE = 0.7  # confidence noise (logit scale)
GOOD = 0.25  # share of tasks whose student meets the target; the rest sit just above it
MARGINAL = (0.05, 0.054)  # routine error floor of the others
HISTORIES = 150
SEED = 16
GRID = (np.arange(4000) + 0.5) / 4000  # difficulty quadrature for the exact live risk


@dataclass(frozen=True)
class Student:
    """One version. Routine calls have a latent difficulty d, uniform in [0, 1]: the error
    grows and the confidence falls with d. Unfamiliar calls it only knows once it has been
    trained on forwarded ones (`learned`); a retrain fitted to that mostly-forwarded data is
    then sure of them and right, but has lost some routine skill (`level` includes the loss).
    That is when a pool skewed towards forwarded calls flatters it."""

    level: float  # routine error floor
    learned: bool

    def logit(self, unfamiliar: NDArray[np.bool_], d: NDArray[np.float64]) -> NDArray[np.float64]:
        """Mean confidence logit; the confidence is sigmoid(logit + NOISE * N(0, 1))."""
        return np.where(unfamiliar, 6.0 if self.learned else -1.0, 4.0 - 3.0 * d)

    def error(self, unfamiliar: NDArray[np.bool_], d: NDArray[np.float64]) -> NDArray[np.float64]:
        """Probability of a wrong answer, independent of the confidence noise."""
        return np.where(unfamiliar, 0.01 if self.learned else 0.4, self.level + 0.3 * d**6)

    def live_risk(self, threshold: float) -> float:
        """Exact error rate among answered (confidence >= threshold) on live traffic."""
        wrong = answered = 0.0
        for share, unfamiliar in ((1.0 - UNFAMILIAR, False), (UNFAMILIAR, True)):
            kind = np.full(len(GRID), unfamiliar)
            answer = stats.norm.sf((special.logit(threshold) - self.logit(kind, GRID)) / NOISE)
            wrong += share * float(np.mean(answer * self.error(kind, GRID)))
            answered += share * float(np.mean(answer))
        return wrong / answered


class History:
    """One task: its live calls and the students its retrains would draw, fixed up front so
    that every calibration policy replays the same world."""

    def __init__(self, rng: np.random.Generator) -> None:
        n = BACKLOG + (RETRAINS - 1) * PERIOD
        self.windows = [np.arange(BACKLOG)] + [
            np.arange(BACKLOG + i * PERIOD, BACKLOG + (i + 1) * PERIOD) for i in range(RETRAINS - 1)
        ]
        self.unfamiliar = rng.random(n) < UNFAMILIAR
        self.difficulty = rng.random(n)
        self.audited = rng.random(n) < AUDIT
        # A student just above the target passes one fit only by luck (a chance of at most
        # delta), which is exactly what retrying multiplies.
        good = rng.random() < GOOD
        level = rng.uniform(0.0, 0.005) if good else rng.uniform(*MARGINAL)
        self.levels = np.clip(level + rng.normal(0.0, 0.005, RETRAINS), 0.0, None)
        self.forgotten = rng.uniform(0.04, 0.1, RETRAINS)
        self.noise = rng.normal(size=(RETRAINS, n))
        self.draws = rng.random((RETRAINS, n))

    def student(self, version: int, learned: bool) -> Student:
        """The student the `version`-th retrain (0-based) produces."""
        lost = float(self.forgotten[version]) if learned else 0.0
        return Student(float(self.levels[version]) + lost, learned)

    def answers(
        self, version: int, learned: bool, calls: NDArray[np.int64]
    ) -> tuple[Student, NDArray[np.float64], NDArray[np.bool_]]:
        """That student, its confidence on `calls` and whether it answers them correctly."""
        student = self.student(version, learned)
        kind, d = self.unfamiliar[calls], self.difficulty[calls]
        confidence = special.expit(student.logit(kind, d) + NOISE * self.noise[version, calls])
        correct = self.draws[version, calls] >= student.error(kind, d)
        return student, confidence, correct


def replay(history: History, *, budgeted: bool, uniform_only: bool) -> bool:
    """Retrain after every window, activating what passes; True if the promise broke."""
    size = len(history.unfamiliar)
    labelled, uniform = np.zeros(size, dtype=bool), np.zeros(size, dtype=bool)
    active: tuple[int, bool, float] | None = None  # version, learned, threshold
    learned = False
    for version, calls in enumerate(history.windows):
        if active is None:
            labelled[calls] = uniform[calls] = True
        else:
            _, confidence, _ = history.answers(active[0], active[1], calls)
            uniform[calls] = history.audited[calls]
            labelled[calls] = history.audited[calls] | (confidence < active[2])
            learned = True  # forwarded calls now reach the training split
        pool = np.flatnonzero(uniform if uniform_only else labelled)
        student, confidence, correct = history.answers(version, learned, pool)
        delta = version_delta(DELTA, version + 1) if budgeted else DELTA
        guarantee = fit_guarantee(confidence, correct, target=TARGET, delta=delta)
        if guarantee.threshold is not None:
            if student.live_risk(guarantee.threshold) > TARGET:
                return True  # later versions cannot mend it
            active = (version, learned, guarantee.threshold)
    return False


def retry_same_set(history: History) -> bool:
    """Refit new students on the first calibration set at full delta until one passes."""
    for version in range(RETRAINS):
        student, confidence, correct = history.answers(version, False, history.windows[0])
        guarantee = fit_guarantee(confidence, correct, target=TARGET, delta=DELTA)
        if guarantee.threshold is not None:
            return student.live_risk(guarantee.threshold) > TARGET
    return False


POLICIES: dict[str, Callable[[History], bool]] = {
    "ours": lambda h: replay(h, budgeted=True, uniform_only=True),
    "naive": lambda h: replay(h, budgeted=False, uniform_only=False),
    "naive_retry": retry_same_set,
}


def violation_counts(histories: int, seed: int) -> dict[str, int]:
    """How many simulated histories broke the promise under each policy."""
    rng = np.random.default_rng(seed)
    counts = dict.fromkeys(POLICIES, 0)
    for _ in range(histories):
        history = History(rng)
        for name, policy in POLICIES.items():
            counts[name] += policy(history)
    return counts


@pytest.fixture(scope="module")
def counts() -> dict[str, int]:
    return violation_counts(HISTORIES, SEED)


def cp_lower(count: int, n: int, level: float = 0.01) -> float:
    """One-sided 99% Clopper-Pearson lower bound on a rate seen `count` times in n."""
    return float(stats.beta.ppf(level, count, n - count + 1)) if count else 0.0


def test_version_delta_first_attempt_and_decay() -> None:
    assert version_delta(0.05, 1) == pytest.approx(0.05 * 0.6079, rel=1e-4)
    assert version_delta(0.05, 2) == pytest.approx(version_delta(0.05, 1) / 4)
    assert version_delta(0.1, 3) == pytest.approx(2 * version_delta(0.05, 3))


def test_version_deltas_sum_below_the_budget() -> None:
    total = sum(version_delta(0.05, k) for k in range(1, 100_001))
    assert 0.0499 < total < 0.05


@pytest.mark.parametrize("attempt", [0, -1])
def test_version_delta_rejects_attempts_before_the_first(attempt: int) -> None:
    with pytest.raises(ValueError, match="attempt"):
        version_delta(0.05, attempt)


@pytest.mark.parametrize("delta", [0.0, 1.0, -0.1])
def test_version_delta_rejects_levels_outside_the_unit_interval(delta: float) -> None:
    with pytest.raises(ValueError, match="delta"):
        version_delta(delta, 1)


@pytest.mark.slow
def test_budgeted_uniform_calibration_keeps_the_promise(counts: dict[str, int]) -> None:
    rate = counts["ours"] / HISTORIES
    assert rate <= DELTA + 3 * (DELTA * (1 - DELTA) / HISTORIES) ** 0.5, counts


@pytest.mark.slow
def test_retrying_on_the_same_calibration_set_breaks_the_promise(counts: dict[str, int]) -> None:
    assert cp_lower(counts["naive_retry"], HISTORIES) > DELTA, counts


@pytest.mark.slow
def test_full_delta_recalibration_on_the_skewed_pool_breaks_the_promise(
    counts: dict[str, int],
) -> None:
    assert cp_lower(counts["naive"], HISTORIES) > DELTA, counts
