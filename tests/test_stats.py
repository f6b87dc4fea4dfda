"""Unit tests of llmbook.stats: known answers, refusals, and why pairing matters."""

from __future__ import annotations

import ast
import dataclasses
import math
import subprocess
import sys

import numpy as np
import pytest

from llmbook import stats as S

# --------------------------------------------------------------------------- module boundaries


def test_stats_imports_no_other_book_module():
    code = ("import sys, llmbook.stats; "
            "print(sorted(m for m in sys.modules if m.startswith('llmbook.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert ast.literal_eval(loaded) == ["llmbook.stats"], loaded


# --------------------------------------------------------------------------- one accuracy


def test_wilson_known_values_and_symmetry():
    lo, hi = S.wilson_interval(0, 10)
    assert lo == 0.0 and math.isclose(hi, 0.27753, abs_tol=1e-4)
    lo, hi = S.wilson_interval(5, 10)
    assert math.isclose(lo, 0.23659, abs_tol=1e-4) and math.isclose(hi, 0.76341, abs_tol=1e-4)
    lo, hi = S.wilson_interval(37, 50)
    lo2, hi2 = S.wilson_interval(13, 50)
    assert math.isclose(lo, 1 - hi2, abs_tol=1e-12) and math.isclose(hi, 1 - lo2, abs_tol=1e-12)
    # for large n it approaches the normal approximation
    lo, hi = S.wilson_interval(7000, 10000)
    half = 1.959964 * math.sqrt(0.7 * 0.3 / 10000)
    assert math.isclose(hi - lo, 2 * half, rel_tol=1e-3)


def test_wilson_at_all_correct_mirrors_none_correct():
    lo, hi = S.wilson_interval(10, 10)
    assert math.isclose(hi, 1.0, abs_tol=1e-12) and math.isclose(lo, 1 - 0.27753, abs_tol=1e-4)
    # z^2 / (n + z^2): the closed form of the bound at k = 0
    z = 1.959964
    assert math.isclose(S.wilson_interval(0, 40)[1], z * z / (40 + z * z), rel_tol=1e-12)


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError):
        S.wilson_interval(11, 10)
    with pytest.raises(ValueError):
        S.wilson_interval(0, 0)
    with pytest.raises(TypeError):
        S.wilson_interval(0.5, 10)
    with pytest.raises(TypeError, match="booleans"):
        S.wilson_interval(True, 10)
    with pytest.raises(ValueError, match="z must be positive"):
        S.wilson_interval(3, 10, z=0)


def test_bootstrap_interval_agrees_with_wilson_and_keeps_rows_together():
    rng = np.random.default_rng(0)
    correct = rng.random(2000) < 0.7
    lo, hi = S.bootstrap_interval(correct, n_boot=4000)
    wlo, whi = S.wilson_interval(int(correct.sum()), len(correct))
    assert abs(lo - wlo) < 0.006 and abs(hi - whi) < 0.006
    # three identical runs carry no more information than one: the interval must not shrink
    lo3, hi3 = S.bootstrap_interval(np.stack([correct] * 3, axis=1), n_boot=4000)
    assert math.isclose(hi3 - lo3, hi - lo, rel_tol=1e-9)
    assert S.bootstrap_interval(correct, seed=1) == S.bootstrap_interval(correct, seed=1)
    with pytest.raises(ValueError):
        S.bootstrap_interval(np.ones((1, 3)))


def test_bootstrap_interval_refuses_bad_level_and_too_few_samples():
    with pytest.raises(ValueError, match="level"):
        S.bootstrap_interval(np.ones(10), level=1.0)
    with pytest.raises(ValueError, match="at least 100"):
        S.bootstrap_interval(np.ones(10), n_boot=50)


# --------------------------------------------------------------------------- paired bootstrap


def test_paired_bootstrap_excludes_zero_for_a_clear_difference():
    rng = np.random.default_rng(0)
    b = (rng.random(300) < 0.6).astype(float)
    a = b.copy()
    a[np.flatnonzero(b == 0)[:45]] = 1  # a fixes 45 of b's errors and breaks nothing
    d = S.paired_bootstrap(a, b)
    assert isinstance(d, S.PairedDifference) and d.n == 300
    assert math.isclose(d.mean, 45 / 300, rel_tol=1e-12)
    assert 0 < d.low < d.mean < d.high
    assert d.p_value == 0.0  # no resample of 300 examples loses all 45 gains
    flipped = S.paired_bootstrap(b, a)
    assert math.isclose(flipped.mean, -d.mean) and flipped.high < 0 and flipped.p_value == 0.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        d.mean = 0.0


def test_paired_bootstrap_includes_zero_for_identical_inputs():
    rng = np.random.default_rng(1)
    a = (rng.random(200) < 0.7).astype(float)
    d = S.paired_bootstrap(a, a.copy())
    assert d.mean == d.low == d.high == 0.0 and d.p_value == 1.0
    # no real difference, only noise that swaps a few answers both ways: the interval covers 0
    b = a.copy()
    swap = rng.choice(200, size=20, replace=False)
    b[swap] = 1 - b[swap]
    d = S.paired_bootstrap(a, b)
    assert d.low < 0 < d.high and d.p_value > 0.05


def test_paired_bootstrap_p_value_is_the_doubled_share_on_the_other_side():
    a = np.array([1, 1, 1, 0, 1, 0, 1, 1, 0, 1], dtype=float)
    b = np.array([0, 1, 0, 1, 1, 0, 0, 1, 0, 1], dtype=float)
    d = S.paired_bootstrap(a, b, n_boot=5000, seed=3)
    diff = a - b
    rng = np.random.default_rng(3)
    boots = diff[rng.integers(0, 10, size=(5000, 10))].mean(1)
    assert d.mean == pytest.approx(0.2)
    assert d.p_value == pytest.approx(min(1.0, 2 * float(np.mean(boots <= 0))))
    assert (d.low, d.high) == (pytest.approx(np.quantile(boots, 0.025)), pytest.approx(np.quantile(boots, 0.975)))


def test_paired_bootstrap_averages_runs_per_example():
    rng = np.random.default_rng(2)
    a = (rng.random((100, 3)) < 0.7).astype(float)
    b = (rng.random((100, 3)) < 0.7).astype(float)
    two_d = S.paired_bootstrap(a, b, seed=5)
    one_d = S.paired_bootstrap(a.mean(1), b.mean(1), seed=5)
    assert two_d.n == one_d.n == 100 and two_d.p_value == one_d.p_value
    for field in ("mean", "low", "high"):
        assert getattr(two_d, field) == pytest.approx(getattr(one_d, field), abs=1e-12)
    # per-example differences 0.1, 0.2, -0.3 (ten runs each) sum to 5.6e-17 in floating point: still no difference
    a, b = np.zeros((3, 10)), np.zeros((3, 10))
    a[0, :1], a[1, :2], b[2, :3] = 1, 1, 1
    tie = S.paired_bootstrap(a, b)
    assert tie.mean == pytest.approx(0, abs=1e-12) and tie.p_value == 1.0


def test_pairing_matters_when_the_marginal_intervals_overlap():
    # 400 examples; b is right on 240, a on the same 240 and on 24 more (a never loses one)
    b = np.zeros(400)
    b[:240] = 1
    a = b.copy()
    a[240:264] = 1
    a_lo, a_hi = S.wilson_interval(int(a.sum()), 400)
    b_lo, b_hi = S.wilson_interval(int(b.sum()), 400)
    assert a_lo < b_hi, "the two accuracies' own intervals overlap"
    boot_a, boot_b = S.bootstrap_interval(a), S.bootstrap_interval(b)
    assert boot_a[0] < boot_b[1]
    paired = S.paired_bootstrap(a, b)
    assert paired.low > 0, "paired on the same examples, the difference is clear"
    unpaired = S.paired_bootstrap(a, np.random.default_rng(0).permutation(b))  # the pairing destroyed
    assert unpaired.low < 0 < unpaired.high


def test_paired_bootstrap_refusals():
    with pytest.raises(ValueError, match="same shape"):
        S.paired_bootstrap(np.ones(10), np.ones(9))
    with pytest.raises(ValueError, match="same shape"):
        S.paired_bootstrap(np.ones((10, 2)), np.ones((10, 3)))
    with pytest.raises(ValueError, match="at least 2"):
        S.paired_bootstrap([1.0], [0.0])
    with pytest.raises(ValueError, match="NaN"):
        S.paired_bootstrap([1.0, np.nan, 0.0], [1.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="NaN"):
        S.paired_bootstrap([1.0, 1.0, 0.0], [1.0, np.nan, 0.0])
    with pytest.raises(ValueError, match="shape"):
        S.paired_bootstrap(np.ones((4, 2, 2)), np.ones((4, 2, 2)))
    with pytest.raises(ValueError, match="level"):
        S.paired_bootstrap(np.ones(10), np.ones(10), level=0)
    with pytest.raises(ValueError, match="at least 100"):
        S.paired_bootstrap(np.ones(10), np.ones(10), n_boot=10)


# --------------------------------------------------------------------------- paired seeds


def test_paired_seed_differences_matches_a_hand_computed_t_interval():
    a, b = [0.80, 0.82, 0.79], [0.78, 0.79, 0.78]
    d = S.paired_seed_differences(a, b)
    # d = (0.02, 0.03, 0.01): mean 0.02, sd 0.01, se 0.01 / sqrt(3); t(0.975, 2) = 4.302653
    half = 4.302652729911275 * 0.01 / math.sqrt(3)
    assert d.n == 3 and d.mean == pytest.approx(0.02, abs=1e-12)
    assert d.low == pytest.approx(0.02 - half, abs=1e-9) and d.high == pytest.approx(0.02 + half, abs=1e-9)
    # with 2 degrees of freedom P(|T| > t) = 1 - t / sqrt(2 + t^2); here t = sqrt(12)
    assert d.p_value == pytest.approx(1 - math.sqrt(12) / math.sqrt(14), abs=1e-9)
    assert d.low < 0 < d.high  # three seeds are too few to call 0.02 a difference
    narrow = S.paired_seed_differences(a, b, level=0.5)
    assert d.low < narrow.low < narrow.high < d.high


def test_paired_seed_differences_agrees_with_scipy_ttest_rel():
    from scipy import stats as scipy_stats

    rng = np.random.default_rng(4)
    b = rng.normal(0.78, 0.01, size=5)
    a = b + rng.normal(0.01, 0.005, size=5)
    d = S.paired_seed_differences(a, b, level=0.9)
    assert d.p_value == pytest.approx(scipy_stats.ttest_rel(a, b).pvalue, rel=1e-9)
    ci = scipy_stats.ttest_rel(a, b).confidence_interval(0.9)
    assert (d.low, d.high) == (pytest.approx(ci.low, rel=1e-9), pytest.approx(ci.high, rel=1e-9))


def test_paired_seed_differences_with_a_constant_difference():
    d = S.paired_seed_differences([0.8, 0.7, 0.9], [0.8, 0.7, 0.9])
    assert (d.mean, d.low, d.high, d.p_value) == (0.0, 0.0, 0.0, 1.0)
    d = S.paired_seed_differences([0.5, 0.75], [0.25, 0.5])
    assert (d.mean, d.low, d.high, d.p_value) == (0.25, 0.25, 0.25, 0.0)


def test_paired_seed_differences_refusals():
    with pytest.raises(ValueError, match="at least 2"):
        S.paired_seed_differences([0.8], [0.7])
    with pytest.raises(ValueError, match="same shape"):
        S.paired_seed_differences([0.8, 0.7, 0.9], [0.7, 0.6])
    with pytest.raises(ValueError, match=r"shape \(n,\)"):
        S.paired_seed_differences(np.ones((3, 2)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="NaN"):
        S.paired_seed_differences([0.8, np.nan], [0.7, 0.6])
    with pytest.raises(ValueError, match="level"):
        S.paired_seed_differences([0.8, 0.7], [0.7, 0.6], level=95)


# --------------------------------------------------------------------------- several runs


def test_mean_sd_and_its_printed_form():
    mean, sd = S.mean_sd([0.786, 0.796, 0.806])
    assert mean == pytest.approx(0.796) and sd == pytest.approx(0.010)  # sample sd, ddof = 1
    assert S.mean_sd(np.array([1.0, 3.0])) == (2.0, pytest.approx(math.sqrt(2)))
    assert S.mean_sd(iter([1.0, 3.0]))[0] == 2.0
    assert S.format_mean_sd([0.786, 0.796, 0.806]) == "0.796 ± 0.010"
    assert S.format_mean_sd([0.786, 0.796, 0.806], digits=2) == "0.80 ± 0.01"


def test_mean_sd_refusals():
    with pytest.raises(ValueError, match="at least 2 values"):
        S.mean_sd([0.8])
    with pytest.raises(ValueError, match="at least 2 values"):
        S.mean_sd([])
    with pytest.raises(ValueError, match="at least 2 values"):
        S.format_mean_sd([0.8])
    with pytest.raises(ValueError, match="finite"):
        S.mean_sd([0.8, float("nan")])
    with pytest.raises(ValueError, match="digits"):
        S.format_mean_sd([0.8, 0.9], digits=-1)


@pytest.mark.parametrize("bad", [[1.0, float("nan"), 0.0], [1.0, float("inf"), 0.0], np.zeros((3, 0))])
def test_bootstrap_interval_refuses_missing_scores_and_empty_runs(bad):
    with pytest.raises(ValueError):
        S.bootstrap_interval(bad)


def test_paired_bootstrap_refuses_examples_without_runs():
    with pytest.raises(ValueError, match="at least one run"):
        S.paired_bootstrap(np.zeros((4, 0)), np.zeros((4, 0)))
