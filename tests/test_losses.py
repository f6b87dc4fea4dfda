"""Unit tests of llmbook.losses: each checks a property the derivation predicts, not that code runs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from llmbook import losses


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


# --------------------------------------------------------------------------- BCE


def test_bce_matches_torch_including_extreme_logits():
    z = torch.tensor([-1000.0, -40.0, -3.0, 0.0, 2.5, 40.0, 1000.0], dtype=torch.float64)
    y = torch.tensor([1.0, 1.0, 0.0, 1.0, 0.3, 0.0, 0.0], dtype=torch.float64)
    ours = losses.bce_with_logits(z, y, reduction="none")
    torch.testing.assert_close(ours, F.binary_cross_entropy_with_logits(z, y, reduction="none"))
    assert ours[0].item() == pytest.approx(1000.0) and ours[-1].item() == pytest.approx(1000.0)


def test_bce_gradient_is_sigmoid_minus_target():
    z = torch.randn(20, dtype=torch.float64)
    z[0] = 0.0  # the kink of max(z, 0) and |z|: autograd must still give sigmoid(0) - y
    z.requires_grad_()
    y = torch.rand(20, dtype=torch.float64)
    losses.bce_with_logits(z, y).backward()
    torch.testing.assert_close(z.grad, losses.bce_grad_logits(z.detach(), y))
    torch.testing.assert_close(losses.bce_grad_logits(z.detach(), y, reduction="sum"), torch.sigmoid(z.detach()) - y)
    assert torch.autograd.gradcheck(lambda t: losses.bce_with_logits(t, y), (z.detach().requires_grad_(),))


def test_finite_differences_agree_with_a_known_gradient():
    x = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    fd = losses.finite_difference_grad(lambda t: (t**3).sum() + t[0] * t[1], x)
    torch.testing.assert_close(fd, 3 * x**2 + torch.tensor([x[1], x[0], 0.0], dtype=torch.float64),
                               rtol=0, atol=1e-7)
    with pytest.raises(ValueError, match="scalar"):
        losses.finite_difference_grad(lambda t: t, x)


def test_bce_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        losses.bce_with_logits(torch.zeros(3), torch.zeros(4))
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        losses.bce_with_logits(torch.zeros(2), torch.tensor([0.0, 2.0]))
    with pytest.raises(ValueError, match="reduction"):
        losses.bce_with_logits(torch.zeros(2), torch.zeros(2), reduction="avg")


# --------------------------------------------------------------------------- softmax CE


def test_logsumexp_is_stable_and_exact():
    z = torch.tensor([[1000.0, 0.0, -5.0], [-math.inf, -math.inf, -math.inf], [0.1, 0.2, 0.3]])
    out = losses.stable_logsumexp(z)
    assert out[0].item() == pytest.approx(1000.0)
    assert out[1].item() == -math.inf
    assert out[2].item() == pytest.approx(math.log(sum(math.exp(v) for v in (0.1, 0.2, 0.3))), rel=1e-6)


def test_softmax_ce_matches_torch_with_ignore_index_and_soft_targets():
    z = torch.randn(4, 6, 5, dtype=torch.float64)
    y = torch.randint(0, 5, (4, 6))
    y[0, 3:] = -100
    torch.testing.assert_close(losses.softmax_cross_entropy(z, y),
                               F.cross_entropy(z.reshape(-1, 5), y.reshape(-1), ignore_index=-100))
    q = torch.softmax(torch.randn(4, 6, 5, dtype=torch.float64), -1)
    torch.testing.assert_close(losses.softmax_cross_entropy(z, q),
                               F.cross_entropy(z.reshape(-1, 5), q.reshape(-1, 5)))


def test_softmax_ce_gradient_is_p_minus_y():
    z = torch.randn(7, 4, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 1, 2, 3, -100, 1, 0])
    losses.softmax_cross_entropy(z, y).backward()
    expected = losses.softmax_ce_grad_logits(z.detach(), y)
    torch.testing.assert_close(z.grad, expected)
    assert torch.all(expected[4] == 0), "an ignored position must get no gradient"
    assert torch.autograd.gradcheck(lambda t: losses.softmax_cross_entropy(t, y), (z.detach().requires_grad_(),))


def test_softmax_ce_rejects_bad_input():
    with pytest.raises(ValueError, match="class-index targets must have shape"):
        losses.softmax_cross_entropy(torch.zeros(3, 4), torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"class indices must lie in \[0, 3\]"):
        losses.softmax_cross_entropy(torch.zeros(2, 4), torch.tensor([0, 4]))
    with pytest.raises(ValueError, match="sum to 1"):
        losses.softmax_cross_entropy(torch.zeros(2, 4), torch.full((2, 4), 0.5))
    with pytest.raises(ValueError, match="every target equals ignore_index"):
        losses.softmax_cross_entropy(torch.zeros(2, 4), torch.tensor([-100, -100]))


# --------------------------------------------------------------------------- sequences


def test_causal_lm_token_nll_shifts_and_masks():
    logits = torch.randn(2, 5, 11)
    labels = torch.randint(0, 11, (2, 5))
    labels[1, 3:] = -100
    nll, mask = losses.causal_lm_token_nll(logits, labels)
    assert nll.shape == mask.shape == (2, 4) and mask.sum() == 4 + 2
    expected = -torch.log_softmax(logits[0, 1], -1)[labels[0, 2]]
    torch.testing.assert_close(nll[0, 1], expected)
    torch.testing.assert_close(losses.reduce_token_losses(nll, mask),
                               F.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1)))


def test_token_mean_and_sequence_mean_differ_as_derived():
    nll = torch.tensor([[1.0, 1.0, 1.0, 1.0], [3.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 0, 0, 0]]).bool()
    assert losses.reduce_token_losses(nll, mask, "tokens").item() == pytest.approx(7 / 5)
    assert losses.reduce_token_losses(nll, mask, "sequences").item() == pytest.approx((1 + 3) / 2)
    with pytest.raises(ValueError, match="over must be"):
        losses.reduce_token_losses(nll, mask, "batch")


def test_bits_per_char_is_tokenizer_independent():
    # a uniform model over 4 characters spends 2 bits per character, whatever the token size
    per_char = math.log(4)
    assert losses.bits_per_char(per_char, n_tokens=100, n_chars=100) == pytest.approx(2.0)
    assert losses.bits_per_char(3 * per_char, n_tokens=100, n_chars=300) == pytest.approx(2.0)
    assert losses.perplexity(math.log(4)) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="positive"):
        losses.bits_per_char(1.0, 0, 10)
    with pytest.raises(ValueError, match="non-negative"):
        losses.perplexity(float("nan"))


# --------------------------------------------------------------------------- soft targets


def test_label_smoothing_matches_torch_and_rejects_bad_eps():
    z = torch.randn(6, 5)
    y = torch.randint(0, 5, (6,))
    q = losses.label_smoothed_targets(y, 5, 0.1)
    torch.testing.assert_close(q.sum(1), torch.ones(6))
    assert q[0, y[0]].item() == pytest.approx(0.9 + 0.02)
    torch.testing.assert_close(F.cross_entropy(z, q), F.cross_entropy(z, y, label_smoothing=0.1))
    for eps in (-0.1, 1.0):
        with pytest.raises(ValueError, match=r"smoothing must lie in \[0, 1\)"):
            losses.label_smoothed_targets(y, 5, eps)
    with pytest.raises(ValueError, match="labels must lie"):
        losses.label_smoothed_targets(torch.tensor([5]), 5, 0.1)
    exact = losses.label_smoothed_targets(y, 5, 0.1, dtype=torch.float64)
    assert exact.dtype == torch.float64 and exact[0, y[0]].item() == 1 - 0.1 + 0.1 / 5


def test_distillation_soft_gradient_is_t_squared_invariant():
    s = torch.randn(8, 10, dtype=torch.float64)
    t = torch.randn(8, 10, dtype=torch.float64)
    scaled = []
    for temp in (200.0, 2000.0):
        x = s.clone().requires_grad_()
        losses.distillation_loss(x, t, T=temp, alpha=1.0).backward()
        scaled.append(x.grad)
    torch.testing.assert_close(scaled[0], scaled[1], rtol=0.0, atol=0.02 * scaled[1].abs().max().item())
    # the high-temperature limit: matching centred logits, divided by K and by the batch size
    limit = ((s - s.mean(1, keepdim=True)) - (t - t.mean(1, keepdim=True))) / (10 * 8)
    torch.testing.assert_close(scaled[1], limit, rtol=0.0, atol=0.005 * limit.abs().max().item())


def test_distillation_reduces_to_ce_and_checks_arguments():
    s, t = torch.randn(4, 3), torch.randn(4, 3)
    y = torch.tensor([0, 2, 1, 1])
    torch.testing.assert_close(losses.distillation_loss(s, t, y, T=3.0, alpha=0.0), F.cross_entropy(s, y))
    same = losses.distillation_loss(s, s, T=3.0, alpha=1.0)
    assert same.abs().item() < 1e-6, "KL of a distribution with itself is 0"
    with pytest.raises(ValueError, match="T must be positive"):
        losses.distillation_loss(s, t, y, T=0.0)
    with pytest.raises(ValueError, match="labels are needed"):
        losses.distillation_loss(s, t, None, alpha=0.5)
    with pytest.raises(ValueError, match="same shape"):
        losses.distillation_loss(s, t[:, :2], y)


# --------------------------------------------------------------------------- calibration


def test_ece_known_values():
    # 10 predictions at confidence 0.9 of which 6 are right: ECE = |0.6 - 0.9| = 0.3
    probs = torch.full((10,), 0.9)
    labels = torch.tensor([1] * 6 + [0] * 4)
    assert losses.expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0.3)
    # a calibrated source: labels drawn with the stated probability
    p = torch.rand(200_000, dtype=torch.float64)
    y = (torch.rand(200_000, dtype=torch.float64) < p).long()
    assert losses.expected_calibration_error(p, y) < 0.01
    with pytest.raises(ValueError, match="pass softmax"):
        losses.expected_calibration_error(torch.tensor([[2.0, -1.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"labels must be integer classes in \[0, 1\]"):
        losses.expected_calibration_error(torch.tensor([0.2, 0.9]), torch.tensor([0, 2]))
    bins = losses.calibration_bins(probs, labels, n_bins=10)
    assert bins["count"].sum() == 10 and bins["count"][8] == 10  # confidence 0.9 falls in (0.8, 0.9]


def test_fit_temperature_recovers_the_true_temperature():
    true_logits = 2.0 * torch.randn(8_000, 3, dtype=torch.float64)
    labels = torch.multinomial(torch.softmax(true_logits, -1), 1).squeeze(1)
    assert losses.fit_temperature(3.0 * true_logits, labels) == pytest.approx(3.0, rel=0.08)
    z = 1.5 * torch.randn(8_000, dtype=torch.float64)
    yb = (torch.rand(8_000, dtype=torch.float64) < torch.sigmoid(z)).long()
    assert losses.fit_temperature(0.5 * z, yb) == pytest.approx(0.5, rel=0.08)
    with pytest.raises(ValueError, match="expected logits"):
        losses.fit_temperature(torch.zeros(3, 2), torch.zeros(4, dtype=torch.long))


# --------------------------------------------------------------------------- weight decay groups


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


def test_decay_groups_exclude_bias_and_norms():
    model = Tiny()
    decay, no_decay = losses.split_decay_parameters(model)
    assert decay == ["embed.weight", "proj.weight", "head.weight"]
    assert no_decay == ["proj.bias", "ln.weight", "ln.bias", "input_layernorm.weight"]
    groups = losses.decay_parameter_groups(model, 0.1)
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
        losses.decay_parameter_groups(model, -1.0)


def test_shared_parameters_are_listed_once():
    model = Tiny()
    model.head = nn.Linear(4, 10, bias=False)
    model.head.weight = model.embed.weight  # tied, as in many language models
    decay, _ = losses.split_decay_parameters(model)
    assert decay.count("embed.weight") == 1 and "head.weight" not in decay


def test_l2_sp_gradient_pulls_toward_the_reference():
    model = nn.Linear(3, 2)
    anchor = losses.parameter_snapshot(model)
    assert losses.l2_sp_penalty(model, anchor, 0.5).item() == 0.0
    with torch.no_grad():
        model.weight.add_(1.0)
    losses.l2_sp_penalty(model, anchor, 0.5).backward()
    torch.testing.assert_close(model.weight.grad, 0.5 * (model.weight.detach() - anchor["weight"]))
    torch.testing.assert_close(model.bias.grad, torch.zeros(2))
    with pytest.raises(ValueError, match="does not have"):
        losses.l2_sp_penalty(model, {"nope": torch.zeros(1)}, 0.1)
    with pytest.raises(ValueError, match="alpha must be"):
        losses.l2_sp_penalty(model, anchor, -1)
