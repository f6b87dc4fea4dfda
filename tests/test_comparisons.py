"""Unit tests of llmbook.comparisons: choice on validation with a stated tie rule, paired tables."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from llmbook import comparisons, stats


def run(correct):
    correct = np.asarray(correct)
    return SimpleNamespace(correct={"test": correct}, accuracy=lambda split: float(correct.mean()))


def test_choose_on_validation_takes_the_best_mean_and_breaks_ties_by_the_stated_order():
    scores = {0.0: [0.70, 0.72], 0.1: [0.71, 0.73], 0.3: [0.73, 0.71]}
    assert comparisons.choose_on_validation(scores, tie_order=[0.1, 0.0, 0.3]) == 0.1
    assert comparisons.choose_on_validation(scores, tie_order=[0.3, 0.1, 0.0]) == 0.3, "0.1 and 0.3 tie at 0.72"
    assert comparisons.choose_on_validation({"a": [0.5], "b": [0.6]}, tie_order=["a", "b"]) == "b"


@pytest.mark.parametrize("scores, order, match", [
    ({}, [], "no settings"),
    ({"a": [0.5], "b": [0.6]}, ["a"], "does not rank"),
    ({"a": [np.nan]}, ["a"], "finite"),
    ({"a": []}, ["a"], "finite"),
])
def test_choose_on_validation_refuses_bad_input(scores, order, match):
    with pytest.raises(ValueError, match=match):
        comparisons.choose_on_validation(scores, order)


def test_paired_table_pairs_by_seed_and_by_example():
    rng = np.random.default_rng(0)
    base = {s: run(rng.random(200) < 0.7) for s in range(3)}
    better = {s: run(np.maximum(base[s].correct["test"], rng.random(200) < 0.2)) for s in range(3)}
    table = comparisons.paired_table({"plain": base, "better": better}, "plain", seeds=[0, 1, 2])
    assert list(table.index) == ["plain", "better"] and np.isnan(table.loc["plain", "minus baseline"])
    a = [better[s].accuracy("test") for s in range(3)]
    b = [base[s].accuracy("test") for s in range(3)]
    expected = stats.paired_seed_differences(a, b)
    assert table.loc["better", "minus baseline"] == pytest.approx(expected.mean)
    assert table.loc["better", "seeds low"] == pytest.approx(expected.low)
    assert table.loc["better", "examples low"] > 0, "every example is at least as right: the bootstrap sees a gain"
    assert table.loc["better", "mean"] == pytest.approx(np.mean(a))


def test_paired_table_refuses_missing_runs_and_a_single_seed():
    r = {0: run([1, 0]), 1: run([1, 1])}
    with pytest.raises(ValueError, match="baseline"):
        comparisons.paired_table({"a": r}, "b", seeds=[0, 1])
    with pytest.raises(ValueError, match="no run for seed"):
        comparisons.paired_table({"a": r, "b": {0: run([1, 0])}}, "a", seeds=[0, 1])
    with pytest.raises(ValueError, match="at least 2 seeds"):
        comparisons.paired_table({"a": r}, "a", seeds=[0])


def test_verdict_reads_the_interval():
    d = stats.PairedDifference
    assert comparisons.verdict(d(0.02, 0.01, 0.03, 5, 0.01), "plain").startswith("higher than plain")
    assert comparisons.verdict(d(-0.02, -0.03, -0.01, 5, 0.01)).startswith("lower than the baseline")
    assert comparisons.verdict(d(0.01, -0.01, 0.03, 5, 0.4)).startswith("not distinguishable")
    assert comparisons.verdict(d(0.0, 0.0, 0.0, 5, 1.0)).startswith("tied")
