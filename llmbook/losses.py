"""Losses derived from maximum likelihood, and the helpers chapter 2 verifies them with.

Every loss here is written out from its formula so that the analytic gradient can be
checked against autograd, and every helper refuses input it would answer wrongly
(mismatched shapes, a temperature <= 0, smoothing outside [0, 1), ...) with a
``ValueError`` that says what was expected. This module holds losses only: parameter groups
and schedules are in :mod:`llmbook.optim`, penalties on the weights (L2-SP) in
:mod:`llmbook.regularizers`, calibration in :mod:`llmbook.evaluation`.

- :data:`IGNORE_INDEX`: the label value (-100) that cross-entropy skips; the book's only copy.
- :func:`finite_difference_grad`: the reference every analytic gradient is checked against.
- :func:`bce_with_logits`, :func:`bce_grad_logits`: binary cross-entropy from a logit,
  stable for any logit; its gradient ``sigmoid(z) - y``.
- :func:`softmax_cross_entropy`, :func:`softmax_ce_grad_logits`, :func:`stable_logsumexp`:
  softmax cross-entropy through log-sum-exp; its gradient ``softmax(z) - y``.
- :func:`causal_lm_token_nll`, :func:`reduce_token_losses`: next-token losses with
  ``ignore_index`` and the choice between a mean over tokens and a mean over sequences.
- :func:`perplexity`, :func:`bits_per_char`: converting a loss in nats.
- :func:`label_smoothed_targets`, :func:`distillation_loss`: soft targets.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100  # label value that cross-entropy skips (PyTorch and transformers convention)
REDUCTIONS = ("mean", "sum", "none")

__all__ = [
    "IGNORE_INDEX", "finite_difference_grad", "bce_with_logits", "bce_grad_logits", "stable_logsumexp",
    "softmax_cross_entropy", "softmax_ce_grad_logits", "causal_lm_token_nll", "reduce_token_losses",
    "perplexity", "bits_per_char", "label_smoothed_targets", "distillation_loss",
]


# --------------------------------------------------------------------------- input checks


def _as_tensor(x, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise TypeError(f"{name} must be a tensor or array-like, got {type(x).__name__}") from err


def _check_reduction(reduction: str) -> None:
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")


def _reduce(values: Tensor, reduction: str, count: int | None = None) -> Tensor:
    if reduction == "none":
        return values
    total = values.sum()
    if reduction == "sum":
        return total
    return total / (values.numel() if count is None else count)


def _check_probability_targets(targets: Tensor, name: str = "targets") -> None:
    if not targets.is_floating_point():
        raise TypeError(f"{name} must be floating point, got {targets.dtype}")
    if targets.numel() and (targets.min() < 0 or targets.max() > 1):
        raise ValueError(f"{name} must lie in [0, 1], got values in "
                         f"[{targets.min().item():.3g}, {targets.max().item():.3g}]")


# --------------------------------------------------------------------------- gradient checks


def finite_difference_grad(fn, x: Tensor, h: float = 1e-6) -> Tensor:
    """Central differences ``(f(x + h e_i) - f(x - h e_i)) / 2h`` of a scalar function, in float64.

    The reference an analytic gradient is checked against; its error is O(h^2) plus rounding
    of order ``eps / h``, about 1e-9 in float64 with the default ``h``.
    """
    x = _as_tensor(x, "x").detach().to(torch.float64)
    if not float(h) > 0:
        raise ValueError(f"the step h must be positive, got {h}")
    flat = x.reshape(-1)
    grad = torch.empty_like(flat)
    for i in range(flat.numel()):
        step = torch.zeros_like(flat)
        step[i] = h
        up, down = fn((flat + step).view_as(x)), fn((flat - step).view_as(x))
        if up.numel() != 1:
            raise ValueError(f"fn must return a scalar, got shape {tuple(up.shape)}")
        grad[i] = (up - down).item() / (2 * h)
    return grad.view_as(x)


# --------------------------------------------------------------------------- binary cross-entropy


def bce_with_logits(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy of ``sigmoid(logits)`` against ``targets`` in [0, 1], from the logit.

    Uses ``max(z, 0) - z*y + log1p(exp(-|z|))``, which equals ``-y log s(z) - (1-y) log(1-s(z))``
    but never evaluates ``exp`` of a large positive number nor ``log`` of a rounded-off 0 or 1.
    ``max(z, 0)`` is written ``(z + |z|) / 2`` so that autograd's subgradient at ``z = 0`` gives
    the true derivative ``sigmoid(0) - y``; ``clamp(min=0)`` would be off by 1/2 there.
    """
    logits, targets = _as_tensor(logits, "logits"), _as_tensor(targets, "targets")
    if logits.shape != targets.shape:
        raise ValueError(f"logits and targets must have the same shape, got {tuple(logits.shape)} "
                         f"and {tuple(targets.shape)}")
    _check_reduction(reduction)
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    targets = targets.to(logits.dtype)
    _check_probability_targets(targets)
    loss = 0.5 * (logits + logits.abs()) - logits * targets + torch.log1p(torch.exp(-logits.abs()))
    return _reduce(loss, reduction)


def bce_grad_logits(logits: Tensor, targets: Tensor, reduction: str = "mean") -> Tensor:
    """Analytic gradient of :func:`bce_with_logits` with respect to the logits: ``sigmoid(z) - y``.

    With ``reduction="mean"`` every entry is divided by the number of elements.
    """
    logits, targets = _as_tensor(logits, "logits"), _as_tensor(targets, "targets")
    if logits.shape != targets.shape:
        raise ValueError(f"logits and targets must have the same shape, got {tuple(logits.shape)} "
                         f"and {tuple(targets.shape)}")
    _check_reduction(reduction)
    grad = torch.sigmoid(logits) - targets.to(logits.dtype)
    return grad / logits.numel() if reduction == "mean" else grad


# --------------------------------------------------------------------------- softmax cross-entropy


def stable_logsumexp(logits: Tensor, dim: int = -1) -> Tensor:
    """``log(sum(exp(z)))`` along ``dim``, computed as ``m + log(sum(exp(z - m)))`` with ``m = max z``.

    Subtracting the maximum makes the largest exponent exactly 0, so nothing overflows;
    a row that is entirely ``-inf`` gives ``-inf`` rather than ``nan``.
    """
    logits = _as_tensor(logits, "logits")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be floating point, got {logits.dtype}")
    m = logits.amax(dim=dim, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m)).detach()
    return (m + torch.log(torch.exp(logits - m).sum(dim=dim, keepdim=True))).squeeze(dim)


def _ce_targets(logits: Tensor, targets: Tensor, ignore_index: int) -> tuple[Tensor, Tensor]:
    """Targets as probability vectors (..., K) plus a mask of the positions that count."""
    if logits.dim() < 1:
        raise ValueError("logits need a class dimension (the last one)")
    num_classes = logits.shape[-1]
    if targets.is_floating_point():
        if targets.shape != logits.shape:
            raise ValueError(f"probability targets must have the shape of the logits {tuple(logits.shape)}, "
                             f"got {tuple(targets.shape)}")
        _check_probability_targets(targets)
        if not torch.allclose(targets.sum(-1), torch.ones((), dtype=targets.dtype), atol=1e-4):
            raise ValueError("probability targets must sum to 1 over the last dimension")
        return targets.to(logits.dtype), torch.ones(targets.shape[:-1], dtype=torch.bool, device=targets.device)
    if targets.shape != logits.shape[:-1]:
        raise ValueError(f"class-index targets must have shape {tuple(logits.shape[:-1])} (the logits without "
                         f"the class dimension), got {tuple(targets.shape)}")
    mask = targets != ignore_index
    valid = targets[mask]
    if valid.numel() and (valid.min() < 0 or valid.max() >= num_classes):
        raise ValueError(f"class indices must lie in [0, {num_classes - 1}] or equal ignore_index={ignore_index}, "
                         f"got values in [{valid.min().item()}, {valid.max().item()}]")
    onehot = F.one_hot((targets.long().clamp(min=0) * mask), num_classes).to(logits.dtype)
    return onehot * mask.unsqueeze(-1), mask


def softmax_cross_entropy(logits: Tensor, targets: Tensor, *, ignore_index: int = IGNORE_INDEX,
                          reduction: str = "mean") -> Tensor:
    """Cross-entropy of ``softmax(logits)`` against class indices or probability vectors.

    ``loss = logsumexp(z) - sum_k y_k z_k`` for each position. Positions whose class index is
    ``ignore_index`` contribute nothing, and ``"mean"`` divides by the number of positions that
    count, as ``torch.nn.functional.cross_entropy`` does.
    """
    logits, targets = _as_tensor(logits, "logits"), _as_tensor(targets, "targets")
    _check_reduction(reduction)
    y, mask = _ce_targets(logits, targets, ignore_index)
    # a class with target probability 0 contributes nothing, even where its logit is -inf (masked)
    target_term = torch.where(y > 0, y * logits, torch.zeros((), dtype=logits.dtype)).sum(-1)
    loss = torch.where(mask, stable_logsumexp(logits) - target_term, torch.zeros((), dtype=logits.dtype))
    count = int(mask.sum())
    if reduction == "mean" and count == 0:
        raise ValueError(f"every target equals ignore_index={ignore_index}: the mean loss is undefined")
    return _reduce(loss, reduction, count)


def softmax_ce_grad_logits(logits: Tensor, targets: Tensor, *, ignore_index: int = IGNORE_INDEX,
                           reduction: str = "mean") -> Tensor:
    """Analytic gradient of :func:`softmax_cross_entropy` with respect to the logits: ``softmax(z) - y``.

    Ignored positions get a zero gradient; ``"mean"`` divides by the number of positions that count.
    """
    logits, targets = _as_tensor(logits, "logits"), _as_tensor(targets, "targets")
    _check_reduction(reduction)
    y, mask = _ce_targets(logits, targets, ignore_index)
    grad = (torch.softmax(logits, dim=-1) - y) * mask.unsqueeze(-1)
    if reduction == "mean":
        count = int(mask.sum())
        if count == 0:
            raise ValueError(f"every target equals ignore_index={ignore_index}: the mean loss is undefined")
        grad = grad / count
    return grad


# --------------------------------------------------------------------------- sequence losses


def causal_lm_token_nll(logits: Tensor, labels: Tensor, *, ignore_index: int = IGNORE_INDEX) -> tuple[Tensor, Tensor]:
    """Per-token negative log-likelihood of a causal LM, with the one-position shift done here.

    ``logits`` (B, T, V) at position t predict ``labels`` at t + 1. Returns ``(nll, mask)``, both
    (B, T - 1): the loss of every predicted token (0 where the label is ``ignore_index``) and the
    mask of the positions that count.
    """
    logits, labels = _as_tensor(logits, "logits"), _as_tensor(labels, "labels")
    if logits.dim() != 3 or labels.shape != logits.shape[:2]:
        raise ValueError(f"expected logits (B, T, V) and labels (B, T), got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    if labels.is_floating_point():
        raise TypeError("labels must be integer token ids")
    shifted_logits, shifted_labels = logits[:, :-1], labels[:, 1:]
    mask = shifted_labels != ignore_index
    nll = F.cross_entropy(shifted_logits.reshape(-1, logits.shape[-1]).float(), shifted_labels.reshape(-1),
                          ignore_index=ignore_index, reduction="none").view(shifted_labels.shape)
    return nll * mask, mask


def reduce_token_losses(nll: Tensor, mask: Tensor, over: str = "tokens") -> Tensor:
    """Average per-token losses (B, T) over all counted tokens or, per sequence first, over sequences.

    ``over="tokens"`` weights every token equally (the maximum-likelihood estimate for a corpus,
    and what ``ignore_index`` with a mean reduction gives); ``over="sequences"`` weights every
    sequence equally, whatever its length.
    """
    nll, mask = _as_tensor(nll, "nll"), _as_tensor(mask, "mask").bool()
    if nll.shape != mask.shape or nll.dim() != 2:
        raise ValueError(f"nll and mask must both be (B, T), got {tuple(nll.shape)} and {tuple(mask.shape)}")
    per_sequence_count = mask.sum(1)
    if over == "tokens":
        if per_sequence_count.sum() == 0:
            raise ValueError("no token counts (every label is ignore_index)")
        return (nll * mask).sum() / per_sequence_count.sum()
    if over == "sequences":
        if (per_sequence_count == 0).any():
            raise ValueError("a sequence has no counted token, so its mean is undefined")
        return ((nll * mask).sum(1) / per_sequence_count).mean()
    raise ValueError(f"over must be 'tokens' or 'sequences', got {over!r}")


def perplexity(loss_nats_per_token: float) -> float:
    """Perplexity ``exp(loss)`` of a mean cross-entropy in nats per token."""
    loss = float(loss_nats_per_token)
    if not math.isfinite(loss) or loss < 0:
        raise ValueError(f"a cross-entropy is a finite, non-negative number of nats, got {loss}")
    return math.exp(loss)




def bits_per_char(total_nats: float, n_chars: int) -> float:
    """Bits per character from a summed negative log-likelihood in nats: ``total / (n_chars ln 2)``.

    The total code length of a text does not depend on how it was cut into tokens; dividing it
    by the characters (and converting nats to bits) makes models with different tokenizers
    comparable. From a mean loss per token, pass ``loss * n_tokens``.
    """
    total = float(total_nats)
    if not math.isfinite(total) or total < 0:
        raise ValueError(f"a negative log-likelihood is a finite number of nats >= 0, got {total_nats}")
    if isinstance(n_chars, bool) or not isinstance(n_chars, (int, np.integer)) or n_chars <= 0:
        raise ValueError(f"n_chars must be a positive integer, got {n_chars!r}")
    return total / (int(n_chars) * math.log(2))


# --------------------------------------------------------------------------- soft targets


def label_smoothed_targets(labels: Tensor, num_classes: int, smoothing: float,
                           dtype: torch.dtype | None = None) -> Tensor:
    """Targets ``(1 - eps) * onehot(y) + eps / K``: what ``cross_entropy(label_smoothing=eps)`` trains toward.

    The uniform share ``eps / K`` also goes to the true class, so the true class gets
    ``1 - eps + eps / K``. ``dtype`` defaults to torch's default float type.
    """
    labels = _as_tensor(labels, "labels")
    if labels.is_floating_point():
        raise TypeError("labels must be integer class indices")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be at least 2, got {num_classes}")
    if not 0.0 <= float(smoothing) < 1.0:
        raise ValueError(f"smoothing must lie in [0, 1), got {smoothing}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], got values in "
                         f"[{labels.min().item()}, {labels.max().item()}]")
    onehot = F.one_hot(labels.long(), int(num_classes)).to(dtype or torch.get_default_dtype())
    return (1.0 - smoothing) * onehot + smoothing / num_classes


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, labels: Tensor | None = None, *,
                      T: float = 2.0, alpha: float = 0.5) -> Tensor:
    """Knowledge-distillation loss of Hinton et al. (2015), averaged over examples.

    ``alpha * T**2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, labels)``.
    The soft term's gradient shrinks like ``1/T**2`` for large ``T``; the ``T**2`` factor keeps its
    weight relative to the hard term the same whatever temperature is chosen. The teacher is a
    constant (no gradient flows into it). ``labels`` may be omitted only when ``alpha == 1``;
    when given, positions labelled ``IGNORE_INDEX`` (padding) count in neither term. A class the
    teacher gives probability 0 (a ``-inf`` logit) contributes 0 to the KL term.
    """
    s, t = _as_tensor(student_logits, "student_logits"), _as_tensor(teacher_logits, "teacher_logits")
    if s.shape != t.shape:
        raise ValueError(f"student and teacher logits must have the same shape, got {tuple(s.shape)} "
                         f"and {tuple(t.shape)}")
    if s.dim() < 1 or s.shape[-1] < 2:
        raise ValueError("logits need a class dimension (the last one) with at least 2 classes")
    if not float(T) > 0:
        raise ValueError(f"the temperature T must be positive, got {T}")
    if not 0.0 <= float(alpha) <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    s2, t2 = s.reshape(-1, s.shape[-1]), t.detach().reshape(-1, t.shape[-1]).to(s.dtype)
    log_p_student = F.log_softmax(s2 / T, dim=-1)
    log_p_teacher = F.log_softmax(t2 / T, dim=-1)
    p_teacher = log_p_teacher.exp()
    per_row = torch.where(p_teacher > 0, p_teacher * (log_p_teacher - log_p_student),
                          torch.zeros((), dtype=s2.dtype)).sum(-1)
    if labels is None and alpha < 1.0:
        raise ValueError("labels are needed unless alpha == 1 (pure soft-target distillation)")
    if labels is not None:
        labels = _as_tensor(labels, "labels")
        if labels.shape != s.shape[:-1]:
            raise ValueError(f"labels must have shape {tuple(s.shape[:-1])}, got {tuple(labels.shape)}")
        counted = labels.reshape(-1) != IGNORE_INDEX
        if not bool(counted.any()):
            raise ValueError("every label equals IGNORE_INDEX: the mean loss is undefined")
        per_row = per_row[counted]
    loss = alpha * T**2 * per_row.mean()
    if alpha < 1.0:
        loss = loss + (1.0 - alpha) * softmax_cross_entropy(s2, labels.reshape(-1))
    return loss
