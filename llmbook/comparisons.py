"""Comparing training methods run on the same seeds: choose on validation, report paired on test.

Chapter 4 compares many variants of one fine-tuning recipe, and later chapters do the same;
the rules live here so that every comparison follows them:

- :func:`choose_on_validation`: the setting with the highest mean validation score, ties broken
  by an order fixed before the runs (never silently by dictionary order).
- :func:`paired_table`: each method's test accuracy (mean ± sd over seeds) and its difference
  from a baseline, paired twice: over seeds (Student t) and over test examples (bootstrap of the
  seed-averaged per-example scores).
- :func:`verdict`: the words a difference earns from its 95% interval.

A run is anything with ``accuracy(split)`` and ``correct[split]`` (a 0/1 array over the split's
examples), such as :class:`llmbook.tasks.SubsetRun`.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np

from llmbook import stats

__all__ = ["choose_on_validation", "paired_table", "verdict"]


def choose_on_validation(scores: Mapping[Hashable, Sequence[float]], tie_order: Sequence[Hashable]) -> Hashable:
    """The key of ``scores`` (setting -> validation scores, one per seed) with the highest mean.

    ``tie_order`` lists every setting in the order of preference fixed before the runs: of
    settings with exactly the highest mean, the first in ``tie_order`` wins.
    """
    if not scores:
        raise ValueError("no settings to choose from")
    missing = [k for k in scores if k not in tie_order]
    if missing:
        raise ValueError(f"tie_order does not rank {missing}: state the tie rule for every setting")
    means = {}
    for key, values in scores.items():
        values = np.asarray(values, dtype=float)
        if values.size == 0 or not np.isfinite(values).all():
            raise ValueError(f"{key!r}: need finite validation scores, got {values.tolist()}")
        means[key] = float(values.mean())
    best = max(means.values())
    return next(k for k in tie_order if k in means and means[k] == best)


def verdict(difference: stats.PairedDifference, baseline: str = "the baseline") -> str:
    """"higher than" / "lower than" ``baseline`` when the 95% interval excludes 0, else "not
    distinguishable from" it (or "tied with it on every seed" when every difference is 0)."""
    if difference.low > 0:
        return f"higher than {baseline} (the 95% interval excludes 0)"
    if difference.high < 0:
        return f"lower than {baseline} (the 95% interval excludes 0)"
    if difference.low == difference.high == 0:
        return f"tied with {baseline} on every seed"
    return f"not distinguishable from {baseline} (the 95% interval includes 0)"


def paired_table(runs: Mapping[str, Mapping[int, Any]], baseline: str, seeds: Sequence[int], *,
                 split: str = "test", n_boot: int = 2000):
    """One row per method: accuracy on ``split`` over ``seeds`` and its paired difference from ``baseline``.

    ``runs[method][seed]`` is a run with ``accuracy(split)`` and ``correct[split]``. Columns:
    ``mean``, ``sd``, ``minus baseline`` (mean per-seed difference), ``seeds low/high/p`` (paired
    t over seeds) and ``examples low/high/p`` (paired bootstrap over the examples, each example's
    correctness averaged over the seeds). The baseline's own row has no difference columns.
    """
    import pandas as pd

    if baseline not in runs:
        raise ValueError(f"the baseline {baseline!r} is not among the methods {list(runs)}")
    seeds = list(seeds)
    if len(seeds) < 2:
        raise ValueError(f"a comparison over seeds needs at least 2 seeds, got {seeds}")
    for method, by_seed in runs.items():
        missing = [s for s in seeds if s not in by_seed]
        if missing:
            raise ValueError(f"{method!r} has no run for seed(s) {missing}: a paired comparison needs every seed")

    def acc(method):
        return [runs[method][s].accuracy(split) for s in seeds]

    def correct(method):
        return np.stack([np.asarray(runs[method][s].correct[split], dtype=float) for s in seeds], 1)

    rows = []
    for method in runs:
        mean, sd = stats.mean_sd(acc(method))
        row: dict[str, Any] = {"method": method, "mean": mean, "sd": sd}
        if method != baseline:
            by_seed = stats.paired_seed_differences(acc(method), acc(baseline))
            by_example = stats.paired_bootstrap(correct(method), correct(baseline), n_boot=n_boot)
            row |= {"minus baseline": by_seed.mean, "seeds low": by_seed.low, "seeds high": by_seed.high,
                    "seeds p": by_seed.p_value, "examples low": by_example.low, "examples high": by_example.high,
                    "examples p": by_example.p_value}
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")
