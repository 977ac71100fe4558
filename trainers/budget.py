"""The error budget a task spends across its versions, so that retraining keeps the promise.

Every version of a task is a fresh try at the guarantee, usually on calibration data that
overlaps the last try's. Fitted each time at the full level delta, a task retrained until
some version passes is multiple testing: a task whose student is never good enough still
passes now and then by luck. So the k-th version whose guarantee is fitted (every attempt
counts, passed or not) is fitted at delta * 6 / (pi^2 k^2). These levels sum to at most delta
(sum 1/k^2 = pi^2 / 6), and the union bound needs no independence between the tries: the
chance that ANY version the task ever serves misses its bound is at most delta, however
often calibration examples (old test splits included) are reused.

Each fit is only as good as its sample: calibration and test hold examples drawn uniformly
from live traffic, namely calls recorded before the task answered locally and the audit
sample, whose coin is flipped before the student decides. Calls forwarded because the
student abstained are the ones it found hard or unfamiliar, not a sample of what it
answers: they train, but never calibrate, or the bound describes them instead of live
traffic.
"""

from __future__ import annotations

import math

DELTA = 0.05  # a task's whole budget: 95% confidence that no version it serves misses its bound


def task_delta(attempt: int) -> float:
    """The level of a task's `attempt`-th version, out of the default budget `DELTA`."""
    return version_delta(DELTA, attempt)


def version_delta(delta: float, attempt: int) -> float:
    """The level at which to fit the `attempt`-th version (1-based) of a task with budget delta."""
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    return delta * 6.0 / (math.pi**2 * attempt**2)
