"""Unit tests of llmbook.regularizers: the L2-SP anchor, penalty and fit hook."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from llmbook import regularizers


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def test_l2_sp_gradient_pulls_toward_the_reference():
    model = nn.Linear(3, 2)
    anchor = regularizers.parameter_snapshot(model)
    assert regularizers.l2_sp_penalty(model, anchor, 0.5).item() == 0.0
    with torch.no_grad():
        model.weight.add_(1.0)
    regularizers.l2_sp_penalty(model, anchor, 0.5).backward()
    torch.testing.assert_close(model.weight.grad, 0.5 * (model.weight.detach() - anchor["weight"]))
    torch.testing.assert_close(model.bias.grad, torch.zeros(2))
    with pytest.raises(ValueError, match="does not have"):
        regularizers.l2_sp_penalty(model, {"nope": torch.zeros(1)}, 0.1)
    with pytest.raises(ValueError, match="alpha must be"):
        regularizers.l2_sp_penalty(model, anchor, -1)


def test_parameter_snapshot_copies_only_trainable_weights():
    model = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))
    model[0].requires_grad_(False)
    anchor = regularizers.parameter_snapshot(model)
    assert sorted(anchor) == ["1.bias", "1.weight"]
    assert all(not t.requires_grad for t in anchor.values())
    with torch.no_grad():
        model[1].weight.add_(1.0)
    assert not torch.equal(anchor["1.weight"], model[1].weight), "a copy, not a view of the weights"
    with pytest.raises(TypeError, match="torch.nn.Module"):
        regularizers.parameter_snapshot({"w": torch.zeros(1)})


def test_l2_sp_penalty_value_and_shape_check():
    model = nn.Linear(2, 1)
    anchor = {n: torch.zeros_like(p) for n, p in model.named_parameters()}
    expected = 0.5 * 3.0 * sum(float(p.detach().pow(2).sum()) for p in model.parameters())
    assert regularizers.l2_sp_penalty(model, anchor, 3.0).item() == pytest.approx(expected)
    with pytest.raises(ValueError, match="reference shape"):
        regularizers.l2_sp_penalty(model, {"weight": torch.zeros(2, 1)}, 1.0)
    with pytest.raises(ValueError, match="reference is empty"):
        regularizers.l2_sp_penalty(model, {}, 1.0)


def test_l2_sp_extra_loss_is_the_penalty_as_a_hook():
    model = nn.Linear(3, 2)
    anchor = regularizers.parameter_snapshot(model)
    hook = regularizers.l2_sp_extra_loss(anchor, 0.2)
    with torch.no_grad():
        model.weight.mul_(2.0)
    term = hook(model, {"input_ids": torch.zeros(1, 1)}, None)
    assert term.dim() == 0 and term.requires_grad
    torch.testing.assert_close(term, regularizers.l2_sp_penalty(model, anchor, 0.2))
    with pytest.raises(ValueError, match="alpha must be"):
        regularizers.l2_sp_extra_loss(anchor, float("nan"))
    with pytest.raises(ValueError, match="reference is empty"):
        regularizers.l2_sp_extra_loss({}, 0.1)


def test_parameter_snapshot_can_leave_out_a_new_head():
    model = nn.Sequential(nn.Linear(3, 4), nn.Linear(4, 2))  # "1." plays the new head
    snapshot = regularizers.parameter_snapshot(model, exclude=lambda name: name.startswith("1."))
    assert sorted(snapshot) == ["0.bias", "0.weight"]
    with torch.no_grad():
        model[1].weight.add_(5.0)  # the head moves: L2-SP does not pull it back
    assert float(regularizers.l2_sp_penalty(model, snapshot, 1.0).detach()) == 0.0
    with pytest.raises(ValueError, match="no trainable parameter is left"):
        regularizers.parameter_snapshot(model, exclude=lambda name: True)
