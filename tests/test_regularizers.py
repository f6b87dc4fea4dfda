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


def test_set_dropout_sets_every_dropout_layer():
    from tiny import bert_classifier

    model = bert_classifier()
    n = regularizers.set_dropout(model, 0.3)
    rates = [m.p for m in model.modules() if isinstance(m, nn.Dropout)]
    assert n == len(rates) > 3 and set(rates) == {0.3}
    with pytest.raises(ValueError, match="dropout rate"):
        regularizers.set_dropout(model, 1.0)
    with pytest.raises(ValueError, match="no nn.Dropout"):
        regularizers.set_dropout(nn.Linear(2, 2), 0.1)


def test_layerwise_lr_groups_scale_the_rate_by_depth():
    from tiny import bert_classifier

    model = bert_classifier(num_hidden_layers=3)
    groups = regularizers.layerwise_lr_groups(model, 1e-3, 0.5, n_layers=3)
    rate = {id(p): g["lr"] for g in groups for p in g["params"]}
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert rate[id(named["classifier.weight"])] == 1e-3 and rate[id(named["bert.pooler.dense.weight"])] == 1e-3
    assert rate[id(named["bert.encoder.layer.2.output.dense.weight"])] == 1e-3
    assert rate[id(named["bert.encoder.layer.0.output.dense.weight"])] == pytest.approx(1e-3 * 0.25)
    assert rate[id(named["bert.embeddings.word_embeddings.weight"])] == pytest.approx(1e-3 * 0.125)
    assert decay[id(named["bert.encoder.layer.0.output.dense.bias"])] == 0.0
    assert decay[id(named["bert.encoder.layer.0.output.dense.weight"])] == 0.01
    assert len(rate) == len(named), "every trainable parameter is in exactly one group"
    with pytest.raises(ValueError, match="xi"):
        regularizers.layerwise_lr_groups(model, 1e-3, 0.0, n_layers=3)
    with pytest.raises(ValueError, match="outside"):
        regularizers.layer_depth("bert.encoder.layer.5.output.dense.weight", 3)


def test_reinit_top_blocks_redraws_only_the_top():
    from tiny import bert_classifier

    model = bert_classifier(num_hidden_layers=2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    assert regularizers.reinit_top_blocks(model, 1) == ["layer 1", "pooler"]
    after = dict(model.named_parameters())
    assert not torch.equal(before["bert.encoder.layer.1.output.dense.weight"],
                           after["bert.encoder.layer.1.output.dense.weight"])
    assert not torch.equal(before["bert.pooler.dense.weight"], after["bert.pooler.dense.weight"])
    assert torch.equal(before["bert.encoder.layer.0.output.dense.weight"],
                       after["bert.encoder.layer.0.output.dense.weight"])
    assert torch.equal(before["classifier.weight"], after["classifier.weight"])
    std = float(after["bert.encoder.layer.1.output.dense.weight"].detach().std())
    assert abs(std - model.config.initializer_range) < 0.01, "drawn from the model's own initialiser"
    with pytest.raises(ValueError, match="k must lie"):
        regularizers.reinit_top_blocks(model, 3)


def test_reinit_top_blocks_redraws_weights_flagged_as_loaded():
    """from_pretrained flags every loaded weight as initialised, and the model's initialiser
    then skips it: re-initialising must still draw the top block afresh."""
    from tiny import bert_classifier

    model = bert_classifier(num_hidden_layers=2)
    for p in model.parameters():
        p._is_hf_initialized = True
    before = model.bert.encoder.layer[1].output.dense.weight.detach().clone()
    regularizers.reinit_top_blocks(model, 1)
    assert not torch.equal(before, model.bert.encoder.layer[1].output.dense.weight)
    with pytest.raises(ValueError, match="BERT-style"):
        regularizers.reinit_top_blocks(nn.Linear(2, 2), 1)
