"""Statistics for reporting results: intervals of accuracies, paired comparisons, mean ± sd.

Every chapter that reports a number reports its uncertainty with these functions:

- :func:`wilson_interval`: the 95% interval of one accuracy ``k / n``.
- :func:`bootstrap_interval`: the interval of an accuracy averaged over several runs (seeds,
  orders) on the same examples, resampling whole examples.
- :func:`paired_bootstrap`: the difference between two methods scored on the *same* examples,
  with its interval and a two-sided bootstrap p-value. Pairing removes the variation that
  both methods share (easy and hard examples), so a difference can be clear while the two
  accuracies' own intervals overlap.
- :func:`paired_seed_differences`: the difference between two methods run with the same
  seeds, one score per seed, with a Student-t interval and the paired t-test.
- :func:`mean_sd`, :func:`format_mean_sd`: the mean and sample standard deviation of a few
  runs, and their printed form ("0.796 ± 0.010").

Each returned difference is a :class:`PairedDifference` (mean of ``a - b``, interval, n, p-value).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PairedDifference",
    "bootstrap_interval",
    "format_mean_sd",
    "mean_sd",
    "paired_bootstrap",
    "paired_seed_differences",
    "wilson_interval",
]


# --------------------------------------------------------------------------- one accuracy


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a proportion ``k / n`` (95% by default).

    Unlike the normal approximation ``p ± z sqrt(p(1-p)/n)`` it stays inside [0, 1] and is
    sensible at ``k = 0`` or ``k = n``.
    """
    if isinstance(k, bool) or isinstance(n, bool):
        raise TypeError("wilson_interval takes counts, not booleans")
    if int(k) != k or int(n) != n:
        raise TypeError(f"wilson_interval takes integer counts, got k={k!r}, n={n!r}")
    k, n = int(k), int(n)
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, n={n}], got {k}")
    if z <= 0:
        raise ValueError(f"z must be positive, got {z}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(correct, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``correct`` (n,) or (n, runs), resampling the n examples.

    With several runs (seeds, orders) on the *same* examples the runs are not independent
    samples; resampling whole rows keeps each example's runs together.
    """
    values = np.asarray(correct, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[0] < 2 or values.shape[1] < 1:
        raise ValueError(f"correct must be (n,) or (n, runs) with n >= 2 and runs >= 1, got shape {np.shape(correct)}")
    if not np.isfinite(values).all():
        raise ValueError("correct must be finite (no NaN or inf): score every example")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_boot < 100:
        raise ValueError(f"use at least 100 bootstrap samples, got {n_boot}")
    rng = np.random.default_rng(seed)
    rows = values.mean(1)
    means = rows[rng.integers(0, len(rows), size=(n_boot, len(rows)))].mean(1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


# --------------------------------------------------------------------------- two methods


@dataclass(frozen=True)
class PairedDifference:
    """Method a minus method b on the same examples (or seeds).

    ``mean`` is the mean of ``a - b``; ``[low, high]`` its interval at the requested level;
    ``n`` the number of pairs (examples or seeds); ``p_value`` the two-sided p-value of
    "no difference".
    """

    mean: float
    low: float
    high: float
    n: int
    p_value: float


def _check_level(level: float) -> None:
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")


def _paired_arrays(a, b, name: str, *, allow_runs: bool) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    shapes = "(n,) or (n, runs)" if allow_runs else "(n,)"
    if a.shape != b.shape:
        raise ValueError(f"{name}: a and b must score the same examples with the same shape, "
                         f"got {a.shape} and {b.shape}")
    if a.ndim not in ((1, 2) if allow_runs else (1,)):
        raise ValueError(f"{name}: scores must have shape {shapes}, got {a.shape}")
    if a.shape[0] < 2:
        raise ValueError(f"{name}: need at least 2 pairs, got {a.shape[0]}")
    if a.ndim == 2 and a.shape[1] < 1:
        raise ValueError(f"{name}: need at least one run per example, got shape {a.shape}")
    if np.isnan(a).any() or np.isnan(b).any():
        raise ValueError(f"{name}: scores contain NaN; drop or fill the missing scores first")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError(f"{name}: scores must be finite")
    return a, b


def paired_bootstrap(a, b, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> PairedDifference:
    """Difference of two methods scored on the same examples, by resampling the examples jointly.

    ``a`` and ``b`` are per-example scores (for instance 1 if correct, else 0) of shape (n,),
    or (n, runs) for several runs per example; row i of both is the same example. Each
    example's difference is ``mean(a[i]) - mean(b[i])``; every bootstrap sample draws n
    examples with replacement and keeps both methods' scores of a drawn example together.

    ``mean`` is the observed mean difference, ``[low, high]`` the percentile interval of the
    ``n_boot`` resampled mean differences. ``p_value`` is two-sided: the share of resampled
    differences on the other side of 0 from the observed one (a resampled difference of 0
    counts as the other side), doubled and capped at 1; it is 1 when the observed difference
    is 0. "0" allows for rounding: within ``1e-12`` times the largest per-example difference
    (at least ``1e-12``). The p-value's resolution is ``1 / n_boot``: 0 means below that.
    """
    a, b = _paired_arrays(a, b, "paired_bootstrap", allow_runs=True)
    _check_level(level)
    if n_boot < 100:
        raise ValueError(f"use at least 100 bootstrap samples, got {n_boot}")
    diff = (a - b).reshape(len(a), -1).mean(1)
    rng = np.random.default_rng(seed)
    boots = diff[rng.integers(0, len(diff), size=(n_boot, len(diff)))].mean(1)
    observed = float(diff.mean())
    tol = 1e-12 * max(1.0, float(np.abs(diff).max()))  # rounding: (a - b) averaged over runs is inexact
    if observed > tol:
        other_side = float(np.mean(boots <= tol))
    elif observed < -tol:
        other_side = float(np.mean(boots >= -tol))
    else:
        other_side = 0.5
    alpha = (1 - level) / 2
    return PairedDifference(mean=observed, low=float(np.quantile(boots, alpha)),
                            high=float(np.quantile(boots, 1 - alpha)), n=len(diff),
                            p_value=min(1.0, 2 * other_side))


def paired_seed_differences(a, b, *, level: float = 0.95) -> PairedDifference:
    """Difference of two methods run with the same seeds: one score per seed and method.

    ``a[i]`` and ``b[i]`` come from seed i. With ``d = a - b``, ``mean`` is the mean of d and
    ``[low, high]`` the Student-t interval ``mean ± t(n-1) * sd(d) / sqrt(n)`` (sample sd);
    ``p_value`` is that of the two-sided paired t-test. If every seed gives the same
    difference the interval is that difference and the p-value 1 (no difference) or 0.
    """
    a, b = _paired_arrays(a, b, "paired_seed_differences", allow_runs=False)
    _check_level(level)
    d = a - b
    n = len(d)
    mean = float(d.mean())
    se = float(d.std(ddof=1)) / math.sqrt(n)
    if se == 0:
        return PairedDifference(mean=mean, low=mean, high=mean, n=n, p_value=1.0 if mean == 0 else 0.0)
    half = _t_quantile((1 + level) / 2, n - 1) * se
    return PairedDifference(mean=mean, low=mean - half, high=mean + half, n=n,
                            p_value=_t_two_sided_p(mean / se, n - 1))


def _t_quantile(q: float, df: int) -> float:
    from scipy import stats as scipy_stats  # scipy comes with scikit-learn, a dependency of the book

    return float(scipy_stats.t.ppf(q, df))


def _t_two_sided_p(t: float, df: int) -> float:
    from scipy import stats as scipy_stats

    return float(2 * scipy_stats.t.sf(abs(t), df))


# --------------------------------------------------------------------------- several runs


def mean_sd(values: Iterable[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``) of a few runs' scores."""
    x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=np.float64).ravel()
    if len(x) < 2:
        raise ValueError(f"mean_sd needs at least 2 values for a standard deviation, got {len(x)}")
    if not np.isfinite(x).all():
        raise ValueError("mean_sd: values must be finite (no NaN or inf)")
    return float(x.mean()), float(x.std(ddof=1))


def format_mean_sd(values: Iterable[float], digits: int = 3) -> str:
    """``"mean ± sd"`` of ``values`` with ``digits`` decimals, such as ``"0.796 ± 0.010"``."""
    if digits < 0:
        raise ValueError(f"digits must be non-negative, got {digits}")
    mean, sd = mean_sd(values)
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"
