"""Unit tests of llmbook.losses: each checks a property the derivation predicts, not that code runs."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

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


def test_bits_per_char_known_values():
    assert losses.bits_per_char(100 * math.log(2), 100) == pytest.approx(1.0)
    assert losses.bits_per_char(0.0, 5) == 0.0
    assert losses.bits_per_char(3 * math.log(2), 2) == pytest.approx(1.5)
    assert losses.perplexity(math.log(4)) == pytest.approx(4.0)
    with pytest.raises(ValueError, match="non-negative"):
        losses.perplexity(float("nan"))


def test_bits_per_char_is_tokenizer_independent():
    # a uniform model over 4 characters spends 2 bits per character, whatever the token size:
    # 100 one-character tokens at ln 4 nats each, or 100 three-character tokens at 3 ln 4 nats each
    per_char = math.log(4)
    for loss_per_token, n_tokens, n_chars in [(per_char, 100, 100), (3 * per_char, 100, 300),
                                              (0.5 * per_char, 600, 300)]:
        assert losses.bits_per_char(loss_per_token * n_tokens, n_chars) == pytest.approx(2.0)


@pytest.mark.parametrize("total, n_chars, match", [
    (-1.0, 10, "finite number of nats >= 0"),
    (float("nan"), 10, "finite number of nats >= 0"),
    (float("inf"), 10, "finite number of nats >= 0"),
    (1.0, 0, "positive integer"),
    (1.0, -3, "positive integer"),
    (1.0, 2.5, "positive integer"),
    (1.0, True, "positive integer"),
])
def test_bits_per_char_refuses_bad_input(total, n_chars, match):
    with pytest.raises(ValueError, match=match):
        losses.bits_per_char(total, n_chars)


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


@pytest.mark.parametrize("n_chars", [float("inf"), None, float("nan"), 3.0])
def test_bits_per_char_refuses_every_non_integer_n_chars_with_a_value_error(n_chars):
    with pytest.raises(ValueError, match="positive integer"):
        losses.bits_per_char(1.0, n_chars)


def test_cross_entropy_stays_finite_with_masked_classes():
    # a class removed from the choice (logit -inf) that is not the target contributes nothing
    logits = torch.tensor([[2.0, -math.inf, 0.5], [0.1, 0.2, -math.inf]], requires_grad=True)
    targets = torch.tensor([0, 1])
    ours = losses.softmax_cross_entropy(logits, targets)
    torch.testing.assert_close(ours, F.cross_entropy(logits, targets))
    ours.backward()
    assert torch.isfinite(logits.grad).all()
    # and a position that is ignored may hold anything
    padded = torch.tensor([[2.0, 1.0, 0.5], [-math.inf, -math.inf, -math.inf]])
    assert torch.isfinite(losses.softmax_cross_entropy(padded, torch.tensor([0, -100])))


def test_distillation_is_finite_when_the_teacher_rules_out_a_class():
    student = torch.tensor([[1.0, 0.0, -1.0]])
    teacher = torch.tensor([[2.0, 0.0, -math.inf]])
    loss = losses.distillation_loss(student, teacher, T=2.0, alpha=1.0)
    p_t = F.softmax(teacher / 2, -1)
    expected = 4 * (p_t[0, :2] * (p_t[0, :2].log() - F.log_softmax(student / 2, -1)[0, :2])).sum()
    torch.testing.assert_close(loss, expected)


def test_distillation_skips_positions_labelled_ignore_index():
    gen = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 5, 4, generator=gen), torch.randn(2, 5, 4, generator=gen)
    labels = torch.randint(0, 4, (2, 5), generator=gen)
    padded = labels.clone()
    padded[1, 3:] = -100  # two padding positions
    keep = padded != -100
    masked = losses.distillation_loss(s, t, padded, T=3.0, alpha=0.4)
    kept = losses.distillation_loss(s[keep], t[keep], labels[keep], T=3.0, alpha=0.4)
    torch.testing.assert_close(masked, kept)
    assert not torch.isclose(masked, losses.distillation_loss(s, t, labels, T=3.0, alpha=0.4))
    with pytest.raises(ValueError, match="every label equals IGNORE_INDEX"):
        losses.distillation_loss(s, t, torch.full((2, 5), -100), alpha=0.5)
