"""Unit tests of llmbook.calibration: reliability bins, ECE and temperature scaling."""

from __future__ import annotations

import pytest
import torch

from llmbook import calibration


def test_ece_known_values():
    torch.manual_seed(0)
    # 10 predictions at confidence 0.9 of which 6 are right: ECE = |0.6 - 0.9| = 0.3
    probs = torch.full((10,), 0.9)
    labels = torch.tensor([1] * 6 + [0] * 4)
    assert calibration.expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.3)
    # a calibrated source: labels drawn with the stated probability
    p = torch.rand(200_000, dtype=torch.float64)
    y = (torch.rand(200_000, dtype=torch.float64) < p).long()
    assert calibration.expected_calibration_error(p, y) < 0.01
    with pytest.raises(ValueError, match="pass softmax"):
        calibration.expected_calibration_error(torch.tensor([[2.0, -1.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"labels must be integer classes in \[0, 1\]"):
        calibration.expected_calibration_error(torch.tensor([0.2, 0.9]), torch.tensor([0, 2]))
    bins = calibration.calibration_bins(probs, labels, n_bins=10)
    assert bins["count"].sum() == 10 and bins["count"][8] == 10  # confidence 0.9 falls in (0.8, 0.9]


def test_fit_temperature_recovers_the_true_temperature():
    torch.manual_seed(0)
    true_logits = 2.0 * torch.randn(8_000, 3, dtype=torch.float64)
    labels = torch.multinomial(torch.softmax(true_logits, -1), 1).squeeze(1)
    assert calibration.fit_temperature(3.0 * true_logits, labels) == pytest.approx(3.0, rel=0.08)
    z = 1.5 * torch.randn(8_000, dtype=torch.float64)
    yb = (torch.rand(8_000, dtype=torch.float64) < torch.sigmoid(z)).long()
    assert calibration.fit_temperature(0.5 * z, yb) == pytest.approx(0.5, rel=0.08)
    with pytest.raises(ValueError, match="expected logits"):
        calibration.fit_temperature(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))
