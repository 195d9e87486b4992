"""Statistics of paired differences: mean ± std, the exact sign test and a bootstrap interval.

The claims experiment compares two models trained with the same seed and scored at the same code
length, so each (seed, length) gives one paired difference. With 3 seeds x 5 lengths there are 15
pairs per loss: too few for a normal approximation, hence an exact sign test (no assumption on the
shape of the differences) and a percentile bootstrap of their mean (an interval in mAP points).
Pairs at different lengths of one seed are not independent; the interval and the p-value treat
them as if they were, which makes them somewhat optimistic: read them as a guide, not a proof.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

TIE_TOLERANCE = 1e-12  # |difference| at most this counts as a tie (dropped by the sign test)


def mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """(mean, sample standard deviation with ddof=1); (None, None) when empty, std None for one value."""
    data = np.asarray(list(values), dtype=float)
    if data.size == 0:
        return None, None
    return float(data.mean()), (float(data.std(ddof=1)) if data.size > 1 else None)


@dataclass(frozen=True)
class SignTest:
    """Two-sided exact sign test: `wins` positive, `losses` negative, `ties` dropped."""

    wins: int
    losses: int
    ties: int
    p_value: float


def sign_test(differences: Sequence[float]) -> SignTest:
    """Exact two-sided sign test of "positive and negative differences are equally likely".

    p = min(1, 2 * sum_{i <= min(wins, losses)} C(n, i) / 2^n) with n = wins + losses; computed
    with exact fractions so it stays right for hundreds of pairs. No pairs (or only ties): p = 1.
    """
    data = [float(d) for d in differences]
    if any(not math.isfinite(d) for d in data):
        raise ValueError("sign_test: differences must be finite numbers")
    wins = sum(d > TIE_TOLERANCE for d in data)
    losses = sum(d < -TIE_TOLERANCE for d in data)
    n = wins + losses
    tail = sum(math.comb(n, i) for i in range(min(wins, losses) + 1))
    p = min(Fraction(1), 2 * Fraction(tail, 2**n)) if n else Fraction(1)
    return SignTest(wins, losses, len(data) - n, float(p))


def bootstrap_mean_ci(
    differences: Sequence[float], confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of the mean of `differences` (pairs resampled with replacement).

    Reproducible: the same `seed` gives the same interval. Empty input gives (None, None); one
    value gives (value, value), as every resample is that value.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"bootstrap: confidence must be in (0, 1), got {confidence!r}")
    if isinstance(resamples, bool) or not isinstance(resamples, int) or resamples < 1:
        raise ValueError(f"bootstrap: resamples must be a positive integer, got {resamples!r}")
    data = np.asarray(list(differences), dtype=float)
    if data.size == 0:
        return None, None
    if not np.isfinite(data).all():
        raise ValueError("bootstrap: differences must be finite numbers")
    rng = np.random.default_rng(seed)
    means = data[rng.integers(0, data.size, size=(resamples, data.size))].mean(axis=1)
    alpha = 1.0 - confidence
    low, high = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(low), float(high)


@dataclass(frozen=True)
class PairedSummary:
    """What the report says about one set of paired differences (all in the caller's unit)."""

    n: int
    mean: float | None
    std: float | None
    ci_low: float | None
    ci_high: float | None
    wins: int
    losses: int
    ties: int
    p_value: float

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "n": self.n,
            "mean": self.mean,
            "std": self.std,
            "ci_low": self.ci_low,
            "ci_high": self.ci_high,
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
            "p_value": self.p_value,
        }


def summarise(
    differences: Sequence[float], confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> PairedSummary:
    """Mean ± std, bootstrap interval and sign test of paired differences."""
    data = [float(d) for d in differences]
    mean, std = mean_std(data)
    low, high = bootstrap_mean_ci(data, confidence, resamples, seed)
    test = sign_test(data)
    return PairedSummary(len(data), mean, std, low, high, test.wins, test.losses, test.ties, test.p_value)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in input order: a family of tests (e.g. one per sweep
    value) whose adjusted p < alpha keeps the chance of any false "holds" at most alpha.

    Sorted ascending, the i-th smallest p (i from 0) becomes max over j <= i of min(1, (m - j) p_j).
    """
    data = [float(p) for p in p_values]
    if any(not 0 <= p <= 1 for p in data):
        raise ValueError("holm: p-values must lie in [0, 1]")
    m, adjusted, running = len(data), [0.0] * len(data), 0.0
    for rank, i in enumerate(sorted(range(m), key=lambda i: data[i])):
        running = max(running, min(1.0, (m - rank) * data[i]))
        adjusted[i] = running
    return adjusted
