"""Unit tests of llmbook.parameter_efficient: LoRA by hand (and against peft), adapters, selectors."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from tiny import bert_classifier

from llmbook import parameter_efficient as pe


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def batch():
    return {"input_ids": torch.tensor([[1, 7, 9, 12, 2], [1, 30, 2, 0, 0]]),
            "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])}


def test_lora_linear_starts_at_the_base_and_adds_the_scaled_low_rank_update():
    base = torch.nn.Linear(6, 5)
    lora = pe.LoRALinear(base, r=2, alpha=6.0)
    x = torch.randn(3, 6)
    torch.testing.assert_close(lora(x), base(x))
    assert not base.weight.requires_grad and lora.lora_A.requires_grad and lora.lora_B.requires_grad
    with torch.no_grad():
        lora.lora_B.normal_()
    expected = base(x) + 3.0 * x @ (lora.lora_B @ lora.lora_A).T  # alpha / r = 3
    torch.testing.assert_close(lora(x), expected)
    torch.testing.assert_close(lora.merged()(x), expected, rtol=1e-5, atol=1e-6)
    assert lora.lora_A.shape == (2, 6) and lora.lora_B.shape == (5, 2)


@pytest.mark.parametrize("kwargs, match", [({"r": 0, "alpha": 1.0}, "rank"), ({"r": 2, "alpha": 0}, "alpha"),
                                           ({"r": 2, "alpha": 1.0, "dropout": 1.0}, "dropout")])
def test_lora_linear_refuses_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pe.LoRALinear(torch.nn.Linear(3, 3), **kwargs)
    with pytest.raises(TypeError, match="nn.Linear"):
        pe.LoRALinear(torch.nn.Conv1d(3, 3, 1), r=1, alpha=1.0)


def test_apply_and_merge_lora_on_a_bert_classifier():
    model = bert_classifier().eval()
    before = model(**batch()).logits
    assert pe.apply_lora(model, ["query", "value"], r=2, alpha=4.0) == 2  # one layer: query and value
    torch.testing.assert_close(model(**batch()).logits, before)
    for layer in model.modules():
        if isinstance(layer, pe.LoRALinear):
            with torch.no_grad():
                layer.lora_B.normal_()
    changed = model(**batch()).logits
    assert not torch.allclose(changed, before)
    assert pe.merge_lora(model) == 2
    assert not any(isinstance(m, pe.LoRALinear) for m in model.modules())
    torch.testing.assert_close(model(**batch()).logits, changed, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no LoRALinear"):
        pe.merge_lora(model)


def test_apply_lora_refuses_a_name_that_matches_nothing():
    with pytest.raises(ValueError, match=r"no nn.Linear named \['qeury'\]"):
        pe.apply_lora(bert_classifier(), ["qeury", "value"])
    with pytest.raises(ValueError, match="non-empty list"):
        pe.apply_lora(bert_classifier(), "query")


def test_hand_lora_matches_peft_in_counts_and_at_initialisation():
    from peft import LoraConfig, get_peft_model

    base = bert_classifier().eval()
    ours = copy.deepcopy(base)
    pe.apply_lora(ours, ["query", "value"], r=4, alpha=8.0)
    n_ours, total = pe.count_parameters(ours, pe.selector("lora"))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        theirs = get_peft_model(copy.deepcopy(base), LoraConfig(task_type="SEQ_CLS", r=4, lora_alpha=8,
                                                                target_modules=["query", "value"]))
    n_theirs = sum(p.numel() for p in theirs.parameters() if p.requires_grad)
    assert n_ours == n_theirs
    theirs.eval()
    torch.testing.assert_close(theirs(**batch()).logits, ours(**batch()).logits)
    assert total > n_ours


def test_adapters_start_as_the_identity_and_train_only_their_own_weights():
    model = bert_classifier().eval()
    before = model(**batch()).logits
    assert pe.apply_adapters(model, bottleneck=4) == 2  # attention output and FFN output of one block
    torch.testing.assert_close(model(**batch()).logits, before)
    n, _ = pe.count_parameters(model, pe.selector("adapter"))
    hidden, head = model.config.hidden_size, sum(p.numel() for p in model.classifier.parameters())
    assert n == 2 * (hidden * 4 + 4 + 4 * hidden + hidden) + head
    with pytest.raises(ValueError, match="bottleneck"):
        pe.BottleneckAdapter(torch.nn.Linear(4, 4), 0)
    with pytest.raises(ValueError, match="no BERT-style"):
        pe.apply_adapters(torch.nn.Sequential(torch.nn.Linear(3, 3)))


def test_selectors_choose_the_documented_parameters():
    model = bert_classifier(num_hidden_layers=2)
    names = [n for n, _ in model.named_parameters()]

    def chosen(kind, **kw):
        rule = pe.selector(kind, **kw)
        return {n for n, p in model.named_parameters() if rule(n, p)}

    assert chosen("full") == set(names)
    assert chosen("head") == {"classifier.weight", "classifier.bias"}
    assert chosen("bitfit") == {n for n in names if n.endswith(".bias")} | {"classifier.weight"}
    top = chosen("top", n_layers=2, k=1)
    assert all(".layer.1." in n or "pooler." in n or n.startswith("classifier.") for n in top)
    assert any(".layer.1." in n for n in top) and not any(".layer.0." in n for n in top)
    bias_total = sum(p.numel() for n, p in model.named_parameters() if n.endswith(".bias"))
    assert pe.count_parameters(model, pe.selector("bitfit"))[0] == bias_total + model.classifier.weight.numel()
    with pytest.raises(ValueError, match="kind must be"):
        pe.selector("prefix")
    with pytest.raises(ValueError, match="1 <= k <= n_layers"):
        pe.selector("top", n_layers=2, k=3)


def test_intrinsic_dimension_starts_at_theta0_and_trains_only_z():
    model = bert_classifier().eval()
    before = model(**batch()).logits
    wrapped = pe.IntrinsicDimension(model, d=10, seed=0).eval()
    torch.testing.assert_close(wrapped(**batch()).logits, before)
    assert [n for n, p in wrapped.named_parameters() if p.requires_grad] == ["z"]
    assert pe.count_parameters(wrapped)[0] == 10
    # P has unit-norm columns: ||P z|| = ||z|| when z is one-hot
    with torch.no_grad():
        wrapped.z[3] = 2.0
    assert float(wrapped.delta().detach().norm()) == pytest.approx(2.0, rel=1e-5)
    loss = wrapped(**batch(), labels=torch.tensor([0, 1])).loss
    loss.backward()
    assert wrapped.z.grad is not None and wrapped.z.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.parameters()), "the model's own weights get no gradient"
    weights = dict(model.named_parameters())
    torch.testing.assert_close(weights["classifier.bias"], bert_classifier().classifier.bias)


def test_intrinsic_dimension_refuses_bad_d():
    with pytest.raises(ValueError, match="positive int"):
        pe.IntrinsicDimension(bert_classifier(), d=0)
    with pytest.raises(ValueError, match="exceeds"):
        pe.IntrinsicDimension(bert_classifier(), d=10**9)


def test_intrinsic_dimension_backward_matches_autograd_of_plain_indexing():
    """The scatter-add backward of P z must give the gradient that autograd gives z[index] * coef."""
    wrapped = pe.IntrinsicDimension(bert_classifier(), d=7, seed=1)
    weights = torch.randn(wrapped.D)
    fast = torch.zeros(7, requires_grad=True)
    slow = torch.zeros(7, requires_grad=True)
    with torch.no_grad():
        fast.add_(torch.randn(7))
        slow.copy_(fast)
    (pe._SketchProject.apply(fast, wrapped.index, wrapped.coef) * weights).sum().backward()
    ((slow[wrapped.index] * wrapped.coef) * weights).sum().backward()
    torch.testing.assert_close(fast.grad, slow.grad, rtol=1e-4, atol=1e-4)
    assert torch.equal(pe._SketchProject.apply(fast, wrapped.index, wrapped.coef).detach(),
                       (slow[wrapped.index] * wrapped.coef).detach())
