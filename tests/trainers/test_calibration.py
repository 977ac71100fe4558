"""The guarantee: exact Clopper-Pearson bounds, fixed-sequence thresholds, scope, validity."""

from __future__ import annotations

import json

import numpy as np
import pytest
from numpy.typing import NDArray
from scipy import stats

from stillroom.service.scope import nearest_distance
from stillroom.trainers.calibration import (
    Guarantee,
    check_on_test,
    clopper_pearson_upper,
    examples_needed,
    fit_guarantee,
    fit_radius,
    min_answered,
)


def exact_upper(errors: int, n: int) -> float:
    """Independent reference: the two-sided 90% exact interval's upper end."""
    return float(
        stats.binomtest(errors, n).proportion_ci(confidence_level=0.90, method="exact").high
    )


def expected_answered(correct: list[bool], target: float = 0.05) -> int:
    """Walk item by item (distinct confidences), skipping sizes where 0 errors cannot pass."""
    last, errors = 0, 0
    for n, ok in enumerate(correct, start=1):
        errors += not ok
        if exact_upper(0, n) > target:
            continue
        if exact_upper(errors, n) > target:
            break
        last = n
    return last


def test_clopper_pearson_matches_known_binomial_values() -> None:
    assert clopper_pearson_upper(0, 59) == pytest.approx(0.0495, abs=1e-4)
    assert clopper_pearson_upper(0, 59) <= 0.05 < clopper_pearson_upper(0, 58)
    assert clopper_pearson_upper(0, 58) == pytest.approx(0.0503, abs=1e-4)
    u = clopper_pearson_upper(1, 93)
    assert 0.049 < u < 0.05
    assert stats.binom.cdf(1, 93, u) == pytest.approx(0.05, abs=1e-9)
    assert clopper_pearson_upper(0, 0) == 1.0
    assert clopper_pearson_upper(7, 7) == 1.0
    assert clopper_pearson_upper(0, 20, delta=0.1) == pytest.approx(1 - 0.1 ** (1 / 20))


@pytest.mark.parametrize("n", [1, 5, 30, 59, 200, 1000])
def test_clopper_pearson_agrees_with_scipy_exact_interval(n: int) -> None:
    for errors in sorted({0, 1, 2, n // 10, n // 2, n - 1} & set(range(n))):
        assert clopper_pearson_upper(errors, n) == pytest.approx(exact_upper(errors, n), abs=1e-9)
        assert stats.binom.cdf(errors, n, clopper_pearson_upper(errors, n)) == pytest.approx(0.05)


def test_min_answered() -> None:
    assert min_answered(0.05) == 59
    assert min_answered(0.10) == 29
    assert min_answered(0.01) == 299
    with pytest.raises(ValueError):
        min_answered(0.0)


def test_threshold_stops_where_the_bound_first_exceeds_the_target() -> None:
    confidence = np.linspace(1.0, 0.01, 200)
    correct = [True] * 100 + [i % 4 != 0 for i in range(100)]
    g = fit_guarantee(confidence, correct, target=0.05, walk="every")
    n = expected_answered(correct)
    assert 100 < n < 200
    assert g.answered == n
    assert g.threshold == confidence[n - 1]
    assert g.errors == n - sum(correct[:n])
    assert g.bound == pytest.approx(exact_upper(g.errors, n), abs=1e-9)
    assert g.bound <= 0.05 < exact_upper(n + 1 - sum(correct[: n + 1]), n + 1)
    assert g.coverage == n / 200
    assert g.passed(0.5) and not g.passed(0.6)


def test_fixed_sequence_stops_at_the_first_failure_even_if_a_lower_threshold_passes() -> None:
    correct = [True] * 100 + [False] * 3 + [True] * 200
    confidence = np.linspace(0.99, 0.5, len(correct))
    assert exact_upper(3, 303) <= 0.05  # answering everything would pass on its own
    g = fit_guarantee(confidence, correct, target=0.05)
    assert g.answered == expected_answered(correct) == 101
    assert g.errors == 1
    assert g.threshold == confidence[100]


def test_tied_confidences_are_answered_together() -> None:
    # 70 distinct confident items, then 30 tied at 0.8 whose last two are wrong. Answering
    # "the first 98 of them" is impossible: at 0.8 all 30 are answered, with 2 errors.
    confidence = np.r_[np.linspace(0.99, 0.9, 70), np.full(30, 0.8)]
    correct = [True] * 98 + [False] * 2
    assert exact_upper(2, 100) > 0.05
    g = fit_guarantee(confidence, correct)
    assert g.answered == 70
    assert g.threshold == confidence[69]


def test_the_walk_starts_at_the_smallest_testable_size() -> None:
    g = fit_guarantee(np.linspace(1.0, 0.5, 59), [True] * 59)
    assert g.threshold == 0.5
    assert g.answered == 59
    assert g.bound == pytest.approx(0.0495, abs=1e-4)
    assert fit_guarantee(np.linspace(1.0, 0.5, 58), [True] * 58).threshold is None
    # One error among the first 59 fails the first testable threshold: the walk ends there.
    g = fit_guarantee(np.linspace(1.0, 0.5, 300), [False] + [True] * 299)
    assert g.threshold is None


def test_too_few_examples_waits_and_says_how_many_more() -> None:
    g = fit_guarantee(np.linspace(1.0, 0.5, 50), [True] * 50)
    assert g.threshold is None
    assert (g.answered, g.errors, g.coverage, g.bound) == (0, 0, 0.0, 1.0)
    assert g.needed is not None and g.needed > 0
    assert not g.passed(0.0)
    empty = fit_guarantee([], [])
    assert (empty.threshold, empty.calibration_size) == (None, 0)
    assert empty.needed is not None and empty.needed > 0


def test_an_always_wrong_student_never_passes_and_more_data_would_not_help() -> None:
    g = fit_guarantee(np.linspace(1.0, 0.5, 300), [False] * 300)
    assert g.threshold is None
    assert g.needed is None


def test_examples_needed_grows_with_errors_and_stops_at_the_target() -> None:
    confidence = np.linspace(1.0, 0.5, 100)
    clean = examples_needed(confidence, [True] * 100)
    one_error = examples_needed(confidence, [False] + [True] * 99)
    assert clean is not None and one_error is not None
    assert 0 < clean < one_error
    # 3 errors in the top 50 is 7% > 5%: no amount of the same data will do.
    assert examples_needed(confidence, [False] * 3 + [True] * 97) is None
    assert examples_needed(confidence, [False] * 3 + [True] * 97, target=0.2) is not None
    # Errors only past the most confident tenth: more data will let that tenth be answered.
    tail = examples_needed(confidence, [True] * 10 + [False, True, True] * 30)
    assert tail is not None and tail > clean
    # A larger calibration share of the split means fewer labelled examples in all.
    larger_share = examples_needed(confidence, [True] * 100, calibration_share=0.5)
    assert larger_share is not None and larger_share < clean


def test_out_of_scope_inputs_are_never_answered() -> None:
    rng = np.random.default_rng(0)
    far = np.r_[np.full(100, 0.9), rng.uniform(0.0, 0.3, 100)]
    confidence = np.r_[np.ones(100), rng.uniform(0.5, 0.9, 100)]
    correct = np.r_[np.zeros(100, bool), np.ones(100, bool)]  # wrong if they were answered
    g = fit_guarantee(confidence, correct, distance=far, radius=0.5)
    assert g.calibration_size == 200
    assert g.answered == 100 and g.errors == 0
    assert g.coverage == 0.5
    assert g.threshold == pytest.approx(confidence[100:].min())
    tested = check_on_test(g, confidence, correct, far)
    assert tested.test is not None
    assert (tested.test.answered, tested.test.errors, tested.test.holds) == (100, 0, True)
    # Without the scope check the confident, far-off items would have sunk the guarantee.
    assert fit_guarantee(confidence, correct).threshold is None


def test_check_on_test_counts_errors_among_answered() -> None:
    g = fit_guarantee(np.linspace(1.0, 0.5, 100), [True] * 100)
    confidence = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    t = check_on_test(g, confidence, [False, False, True, False, False]).test
    assert t is not None
    assert (t.test_size, t.answered, t.errors) == (5, 3, 2)
    assert t.coverage == 0.6
    assert t.error_rate == pytest.approx(2 / 3)
    assert t.bound == pytest.approx(exact_upper(2, 3), abs=1e-9)
    assert not t.holds  # 2 errors in 3 prove a rate above the 3% calibration bound
    # One error in three is above the bound too, but chance does that to a sound version.
    once = check_on_test(g, confidence, [True, False, True, False, False]).test
    assert once is not None and (once.errors, once.holds) == (1, True)
    never = check_on_test(fit_guarantee([0.9], [True]), confidence, [True] * 5).test
    assert never is not None
    assert (never.answered, never.error_rate, never.holds) == (0, None, True)


def test_guarantee_round_trips_through_json() -> None:
    rng = np.random.default_rng(1)
    confidence = rng.uniform(0.5, 1.0, 400)
    correct = rng.uniform(size=400) > (1 - confidence) / 4
    distance = rng.uniform(0.0, 0.4, 400)
    g = fit_guarantee(confidence, correct, target=0.1, distance=distance, radius=0.35)
    g = check_on_test(g, confidence, correct, distance)
    assert g.threshold is not None and g.test is not None
    again = Guarantee.from_dict(json.loads(json.dumps(g.to_dict())))
    assert again == g
    none = fit_guarantee([0.9], [True])
    assert Guarantee.from_dict(json.loads(json.dumps(none.to_dict()))) == none


def unit(rows: NDArray[np.float64]) -> NDArray[np.float64]:
    out: NDArray[np.float64] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def test_nearest_distance_matches_brute_force_across_chunks() -> None:
    rng = np.random.default_rng(2)
    train = unit(rng.normal(size=(3000, 16))).astype(np.float32)
    query = unit(rng.normal(size=(3500, 16))).astype(np.float32)
    expected = 1.0 - (query.astype(np.float64) @ train.T.astype(np.float64)).max(axis=1)
    got = nearest_distance(train, query)
    assert got.shape == (3500,)
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert nearest_distance(train, train[:5]) == pytest.approx(np.zeros(5), abs=1e-6)


def test_radius_keeps_normal_inputs_in_scope_and_far_ones_out() -> None:
    rng = np.random.default_rng(3)
    centres = unit(rng.normal(size=(5, 128)))

    def near(n: int) -> NDArray[np.float64]:
        return unit(centres[rng.integers(0, 5, n)] + 0.06 * rng.normal(size=(n, 128)))

    train, cal, test = near(500), near(300), near(1000)
    radius = fit_radius(train, cal)
    assert 0.0 < radius < 1.0
    assert np.mean(nearest_distance(train, test) <= radius) >= 0.98
    far = unit(rng.normal(size=(200, 128)))
    assert np.all(nearest_distance(train, far) > radius)
    assert fit_radius(train, np.zeros((0, 128))) == 2.0


def test_guarantee_is_statistically_valid() -> None:
    """Across repetitions, the chosen threshold's true error exceeds the target <= delta."""
    # Confidence ~ U(0, 1); below 0.5 an answer is wrong with probability 0.3, above it never.
    # Among answered (c >= t) the true error is then 0.3 (0.5 - t) / (1 - t) for t < 0.5,
    # which crosses the 10% target at t = 0.25, so every walk reaches the boundary.
    rng = np.random.default_rng(4)
    target, delta, size, reps = 0.1, 0.05, 500, 1000

    def true_error(t: float) -> float:
        return 0.3 * max(0.5 - t, 0.0) / (1.0 - t)

    violations = naive_violations = 0
    for _ in range(reps):
        confidence = rng.uniform(0.0, 1.0, size)
        correct = ~((confidence < 0.5) & (rng.uniform(size=size) < 0.3))
        g = fit_guarantee(confidence, correct, target=target, delta=delta)
        violations += g.threshold is not None and true_error(g.threshold) > target
        # The naive rule, lowest threshold whose observed error <= target, shows the check bites.
        order = np.argsort(-confidence)
        observed = np.cumsum(~correct[order]) / np.arange(1, size + 1)
        naive = confidence[order][np.flatnonzero(observed <= target)[-1]]
        naive_violations += true_error(float(naive)) > target
    assert violations / reps <= 0.08
    assert naive_violations / reps > 0.3


# -- the planned walk: which thresholds to test, fixed before any label is read -------------


def fewest_answered(errors: int, target: float = 0.05) -> int:
    """Independent reference: the fewest answered items at which `errors` errors pass."""
    n = errors + 1
    while stats.beta.ppf(0.95, errors + 1, n - errors) > target:
        n += 1
    return n


def test_the_ladder_tests_only_where_one_more_error_is_allowed() -> None:
    assert [fewest_answered(e) for e in range(4)] == [59, 93, 124, 153]
    confidence = np.linspace(1.0, 0.5, 300)
    correct = np.ones(300, dtype=bool)
    correct[[69, 99]] = False  # the 70th and 100th most confident answers are wrong
    # Every threshold: 70 answered with one error fails (one error needs 93 answered).
    every = fit_guarantee(confidence, correct, walk="every")
    assert (every.answered, every.errors) == (69, 0)
    # The ladder tests 59, 93, 124, 153, ... answered and finally all 300: each rung allows
    # one more error than the last, so neither error ends the walk.
    ladder = fit_guarantee(confidence, correct, walk="ladder")
    assert (ladder.answered, ladder.errors, ladder.threshold) == (300, 2, 0.5)
    assert ladder.bound == pytest.approx(exact_upper(2, 300), abs=1e-9)
    # A rung fails like any threshold: a third error before the 124th item ends the walk at 93.
    correct[110] = False
    assert fit_guarantee(confidence, correct, walk="ladder").answered == 93


def test_a_rung_inside_a_tie_group_answers_the_whole_group() -> None:
    confidence = np.r_[np.ones(100), np.linspace(0.9, 0.5, 100)]
    correct = np.ones(200, dtype=bool)
    correct[[5, 109]] = False
    # The first rung (59) lands inside the 100 tied answers: it tests all 100, one error.
    assert fit_guarantee(confidence, correct, walk="every").answered == 109
    g = fit_guarantee(confidence, correct, walk="ladder")
    assert (g.answered, g.errors) == (200, 2)


def test_the_planned_walk_states_a_bound_where_the_old_one_could_not() -> None:
    """The 200-example extraction task: 100 calibration items, one error near the top, from
    a student right about 98% of the time that says so."""
    confidence = np.linspace(0.985, 0.975, 100)
    correct = np.ones(100, dtype=bool)
    correct[3] = False
    old = fit_guarantee(confidence, correct, walk="every")
    assert old.threshold is None  # one error among the first 59 ended the walk
    g = fit_guarantee(confidence, correct)
    assert (g.answered, g.errors, g.threshold) == (100, 1, 0.975)
    assert g.bound == pytest.approx(exact_upper(1, 100), abs=1e-9)
    assert g.bound <= 0.05 < exact_upper(1, 60)  # with 60 items, as before, no bound exists
    assert fit_guarantee(confidence, correct) == g  # the plan's simulation is seeded


def test_a_reference_from_training_data_corrects_underconfident_scores() -> None:
    # A head that says 50-60% but is right 99% of the time, like MiniLM's with many labels.
    confidence = np.linspace(0.6, 0.5, 200)
    correct = np.ones(200, dtype=bool)
    correct[[10, 70]] = False
    # Taken at its word the student errs often: the plan expects nothing to pass, so it
    # walks from the lowest rung, which the 11th item's error fails.
    assert fit_guarantee(confidence, correct).threshold is None
    rng = np.random.default_rng(5)
    seen = rng.uniform(0.5, 0.6, 400)  # held-out training inputs: right 99% of the time
    g = fit_guarantee(confidence, correct, reference=(seen, rng.uniform(size=400) > 0.01))
    assert (g.answered, g.errors) == (200, 2)


class Model:
    """Rank quantile q ~ U(0, 1), 0 the most confident; wrong with probability w(q)."""

    def __init__(self, base: float, rise: float, overconfidence: float = 1.0) -> None:
        self.base, self.rise, self.overconfidence = base, rise, overconfidence

    def wrong(self, q: NDArray[np.float64]) -> NDArray[np.float64]:
        out: NDArray[np.float64] = self.base + 3 * self.rise * q**2
        return out

    def error_among_top(self, q0: float) -> float:
        return self.base + self.rise * q0**2  # the mean of wrong(q) over [0, q0]


@pytest.mark.parametrize(
    ("model", "size"),
    [
        (Model(0.01, 0.05), 600),  # calibrated; the error among answered crosses 5% at q = 0.89
        (Model(0.01, 0.05, overconfidence=3.0), 600),  # it says 1% where it errs 3%
        (Model(0.051, 0.0), 500),  # flat just above the target: any answer at all violates
    ],
)
def test_the_planned_walk_is_statistically_valid(model: Model, size: int) -> None:
    """Over simulated calibration sets, the true error among answered exceeds the target (or
    the stated bound) in at most delta of them, up to simulation noise."""
    rng = np.random.default_rng(6)
    reps, delta = 400, 0.05
    over_target = over_bound = answered = 0
    for _ in range(reps):
        q = rng.uniform(size=size)
        correct = rng.uniform(size=size) >= model.wrong(q)
        if model.rise:
            confidence = 1.0 - model.wrong(q) / model.overconfidence
        else:  # confidences that look informative but are not
            confidence = rng.uniform(0.9, 1.0, size)
        g = fit_guarantee(confidence, correct, target=0.05, delta=delta)
        if g.threshold is None:
            continue
        answered += g.answered
        q0 = float(q[confidence >= g.threshold].max()) if model.rise else 1.0
        error = model.error_among_top(q0)
        over_target += error > 0.05
        over_bound += error > g.bound
    allowance = stats.binom.ppf(0.999, reps, delta)  # 1 in 1,000 to fail by chance at delta
    assert over_target <= allowance
    assert over_bound <= allowance
    if model.rise:  # and the walk does answer: the check is not vacuous
        assert answered / (reps * size) > 0.3
