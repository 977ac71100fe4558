"""Binomial tails in pure Python, for the daemon (which does not load scipy)."""

from __future__ import annotations

import math


def upper_tail(errors: int, n: int, rate: float) -> float:
    """P(X >= errors) for X ~ Binomial(n, rate): small means `errors` is too many for `rate`."""
    if errors <= 0:
        return 1.0
    if rate <= 0.0:
        return 0.0
    if rate >= 1.0:
        return 1.0
    log_p, log_q = math.log(rate), math.log1p(-rate)
    total = 0.0
    for k in range(errors, n + 1):
        log_term = (
            math.lgamma(n + 1)
            - math.lgamma(k + 1)
            - math.lgamma(n - k + 1)
            + k * log_p
            + (n - k) * log_q
        )
        total += math.exp(log_term)
    return min(1.0, total)


def breaks_bound(errors: int, n: int, bound: float, delta: float = 0.05) -> bool:
    """Whether live errors show, at confidence 1 - delta, an error rate above `bound`."""
    return n > 0 and upper_tail(errors, n, bound) < delta
