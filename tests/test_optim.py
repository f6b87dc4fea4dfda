"""Unit tests of llmbook.optim: what weight decay applies to, the AdamW it builds, and the schedules."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import BertConfig, BertForSequenceClassification

from llmbook import gpt, optim


def tiny_classifier(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=32,
                                                    max_position_embeddings=32, num_labels=2))


class TinyRMSNorm(nn.Module):  # stands for model-specific classes such as LlamaRMSNorm
    def __init__(self, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.proj = nn.Linear(4, 4)
        self.ln = nn.LayerNorm(4)
        self.input_layernorm = TinyRMSNorm(4)
        self.head = nn.Linear(4, 2, bias=False)
        self.frozen = nn.Linear(4, 4)
        self.frozen.requires_grad_(False)


# --------------------------------------------------------------------------- parameter groups


def test_decay_groups_exclude_bias_and_norms():
    model = Tiny()
    decay, no_decay = optim.split_decay_parameters(model)
    assert decay == ["embed.weight", "proj.weight", "head.weight"]
    assert no_decay == ["proj.bias", "ln.weight", "ln.bias", "input_layernorm.weight"]
    groups = optim.decay_parameter_groups(model, 0.1)
    assert [g["weight_decay"] for g in groups] == [0.1, 0.0]
    # with zero gradients, AdamW must shrink exactly the decayed group
    opt = torch.optim.AdamW(groups, lr=0.1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    after = dict(model.named_parameters())
    for name in decay:
        torch.testing.assert_close(after[name].detach(), before[name] * (1 - 0.1 * 0.1))
    for name in no_decay + ["frozen.weight"]:
        torch.testing.assert_close(after[name].detach(), before[name])
    with pytest.raises(ValueError, match="weight_decay must be"):
        optim.decay_parameter_groups(model, -1.0)


def test_shared_parameters_are_listed_once():
    model = Tiny()
    model.head = nn.Linear(4, 10, bias=False)
    model.head.weight = model.embed.weight  # tied, as in many language models
    decay, _ = optim.split_decay_parameters(model)
    assert decay.count("embed.weight") == 1 and "head.weight" not in decay


def test_norm_modules_are_recognised_by_type_and_by_name():
    assert optim.is_norm_module(nn.LayerNorm(3)) and optim.is_norm_module(nn.BatchNorm1d(3))
    assert optim.is_norm_module(TinyRMSNorm(3))
    assert not optim.is_norm_module(nn.Linear(3, 3)) and not optim.is_norm_module(nn.Embedding(3, 3))


def test_optimizer_does_not_decay_biases_or_layernorm():
    model = tiny_classifier()
    opt = optim.make_optimizer(model, 1e-3, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        group_names = [names[id(p)] for p in group["params"]]
        if group["weight_decay"] == 0:
            assert all(n.endswith("bias") or "LayerNorm" in n for n in group_names)
        else:
            assert group["weight_decay"] == 0.1
            assert not any(n.endswith("bias") or "LayerNorm" in n for n in group_names)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_make_optimizer_on_a_gpt_decays_exactly_the_matrices_and_skips_frozen_parameters():
    torch.manual_seed(0)
    model = gpt.GPT(gpt.GPTConfig(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=16))
    opt = optim.make_optimizer(model, 1e-3, 0.1, betas=(0.9, 0.99))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    undecayed = {id(p) for g in opt.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    # chapter 1's rule: every tensor with 2 or more dimensions decays, every other does not
    assert decayed == {id(p) for p in model.parameters() if p.dim() >= 2}
    assert undecayed == {id(p) for p in model.parameters() if p.dim() < 2}
    assert id(model.lm_head.weight) in decayed  # the tied matrix, once
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
    # frozen parameters are left out of both groups
    model.wpe.requires_grad_(False)
    model.ln_f.requires_grad_(False)
    opt = optim.make_optimizer(model, 1e-3, 0.1)
    kept = {id(p) for g in opt.param_groups for p in g["params"]}
    assert kept == {id(p) for p in model.parameters() if p.requires_grad}
    assert not {id(model.wpe.weight), id(model.ln_f.weight), id(model.ln_f.bias)} & kept
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameter"):
        optim.make_optimizer(model, 1e-3, 0.1)


def test_make_optimizer_betas_fused_and_refusals():
    model = tiny_classifier()
    opt = optim.make_optimizer(model, 2e-3, 0.0, betas=(0.8, 0.95))
    assert isinstance(opt, torch.optim.AdamW)
    assert opt.defaults["betas"] == (0.8, 0.95) and opt.defaults["lr"] == 2e-3
    assert opt.defaults["fused"] is True  # CPU float parameters: torch has a fused kernel
    assert not optim.make_optimizer(model, 1e-3, fused=False).defaults["fused"]
    assert optim.make_optimizer(model, 1e-3, fused=True).defaults["fused"] is True
    assert optim.make_optimizer(model, 1e-3).defaults["betas"] == (0.9, 0.999)
    for lr in (0.0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="learning rate must be > 0"):
            optim.make_optimizer(model, lr)
    for betas in ((0.9,), (0.9, 1.0), (-0.1, 0.99), (0.9, 0.99, 0.999)):
        with pytest.raises(ValueError, match="betas must be"):
            optim.make_optimizer(model, 1e-3, betas=betas)


# --------------------------------------------------------------------------- schedules


def test_warmup_then_linear_decay_values():
    f = [optim.warmup_linear_factor(s, 10, 110) for s in (0, 5, 10, 60, 110, 200)]
    assert f == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0, 0.0])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = optim.lambda_schedule(opt, lambda s: optim.warmup_linear_factor(s, 4, 12))
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])
    assert lrs[-1] == pytest.approx(2.0 / 8) and max(lrs) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="warmup_steps <= total_steps"):
        optim.warmup_linear_factor(0, 20, 10)


def test_lambda_schedule_scales_every_group_and_checks_the_factor_at_once():
    a, b = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 0.1}], lr=1.0)
    sched = optim.lambda_schedule(opt, lambda s: 0.5 ** s)
    assert isinstance(sched, torch.optim.lr_scheduler.LambdaLR)
    seen = []
    for _ in range(4):
        seen.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert [lr for pair in seen for lr in pair] == pytest.approx([1.0, 0.1, 0.5, 0.05, 0.25, 0.025, 0.125, 0.0125])
    # a factor with invalid settings fails when the scheduler is built, not at the first step
    with pytest.raises(ValueError, match="warmup_steps <= total_steps"):
        optim.lambda_schedule(torch.optim.SGD([a], lr=1.0), lambda s: optim.warmup_linear_factor(s, 20, 10))


def test_warmup_cosine_lr_shape():
    kw = {"max_lr": 1.0, "min_lr": 0.1, "warmup_steps": 10, "total_steps": 110}
    assert optim.warmup_cosine_lr(0, **kw) == pytest.approx(0.1)
    assert optim.warmup_cosine_lr(9, **kw) == pytest.approx(1.0)
    assert optim.warmup_cosine_lr(10, **kw) == pytest.approx(1.0)
    assert optim.warmup_cosine_lr(60, **kw) == pytest.approx(0.55)  # halfway through the cosine: the mean of max and min
    assert optim.warmup_cosine_lr(110, **kw) == pytest.approx(0.1)
    assert optim.warmup_cosine_lr(500, **kw) == pytest.approx(0.1)
    decay = [optim.warmup_cosine_lr(s, **kw) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(decay[:-1], decay[1:], strict=True))
    with pytest.raises(ValueError):
        optim.warmup_cosine_lr(0, max_lr=1.0, min_lr=0.1, warmup_steps=20, total_steps=10)


def test_warmup_cosine_lr_refusals_and_no_warmup():
    assert optim.warmup_cosine_lr(0, max_lr=1.0, min_lr=0.0, warmup_steps=0, total_steps=4) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="non-negative"):
        optim.warmup_cosine_lr(-1, max_lr=1.0, min_lr=0.1, warmup_steps=2, total_steps=10)
    with pytest.raises(ValueError, match="min_lr <= max_lr"):
        optim.warmup_cosine_lr(0, max_lr=0.1, min_lr=1.0, warmup_steps=2, total_steps=10)
    with pytest.raises(ValueError, match="total_steps >= 1"):
        optim.warmup_cosine_lr(0, max_lr=1.0, min_lr=0.1, warmup_steps=0, total_steps=0)


def test_warmup_linear_factor_refuses_a_negative_step():
    with pytest.raises(ValueError, match="non-negative"):
        optim.warmup_linear_factor(-1, 10, 100)


def test_decoupled_decay_factor_matches_adamw_with_zero_gradients():
    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.AdamW([w], lr=0.1, weight_decay=0.5)
    sched = optim.lambda_schedule(opt, lambda s: optim.warmup_linear_factor(s, 2, 8))
    lrs = []
    for _ in range(8):
        lrs.append(opt.param_groups[0]["lr"])
        w.grad = torch.zeros(3)  # Adam's own step is 0: only the decay moves the weight
        opt.step()
        sched.step()
    assert optim.decoupled_decay_factor(lrs, 0.5) == pytest.approx(float(w.detach()[0]), rel=1e-6)
    assert optim.decoupled_decay_factor(lrs, 0.0) == 1.0
    assert optim.decoupled_decay_factor([1e-4] * 100, 0.01) == pytest.approx((1 - 1e-6) ** 100)
    with pytest.raises(ValueError, match="no learning rates"):
        optim.decoupled_decay_factor([], 0.1)
    with pytest.raises(ValueError, match="weight_decay"):
        optim.decoupled_decay_factor([0.1], -1)
    with pytest.raises(ValueError, match="zero or flip"):
        optim.decoupled_decay_factor([0.5], 2.0)
