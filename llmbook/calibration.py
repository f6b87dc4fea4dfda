"""Calibration: whether a model's confidence matches how often it is right, and how to fix it.

Derived in chapter 2 and used wherever a chapter reports probabilities:

- :func:`calibration_bins`: equal-width confidence bins, the points of a reliability diagram.
- :func:`expected_calibration_error`: ECE, the count-weighted gap between accuracy and confidence.
- :func:`fit_temperature`: temperature scaling, one scalar fitted by NLL on held-out data.

Contextual calibration of prompted label words is in :mod:`llmbook.prompting`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from llmbook.losses import _as_tensor, bce_with_logits, softmax_cross_entropy

__all__ = ["calibration_bins", "expected_calibration_error", "fit_temperature"]


def _confidences(probs: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Top-label confidence and correctness; 1-D ``probs`` are P(class 1) of a binary classifier."""
    probs, labels = _as_tensor(probs, "probs").double(), _as_tensor(labels, "labels")
    if probs.dim() == 1:
        probs = torch.stack([1 - probs, probs], dim=1)
    if probs.dim() != 2:
        raise ValueError(f"probs must be (N,) binary probabilities or (N, K), got {tuple(probs.shape)}")
    if labels.shape != probs.shape[:1]:
        raise ValueError(f"labels must have shape ({probs.shape[0]},), got {tuple(labels.shape)}")
    if probs.numel() == 0:
        raise ValueError("no examples")
    if probs.min() < 0 or probs.max() > 1 or not torch.allclose(probs.sum(1), torch.ones(1, dtype=probs.dtype),
                                                                atol=1e-4):
        raise ValueError("probs must be probabilities in [0, 1] that sum to 1 per row "
                         "(pass softmax(logits), not logits)")
    if labels.is_floating_point() or labels.min() < 0 or labels.max() >= probs.shape[1]:
        raise ValueError(f"labels must be integer classes in [0, {probs.shape[1] - 1}]")
    confidence, prediction = probs.max(1)
    return confidence, (prediction == labels.long()).double()


def calibration_bins(probs: Tensor, labels: Tensor, n_bins: int = 15) -> dict[str, Tensor]:
    """Equal-width confidence bins: per bin the mean confidence, the accuracy and the count.

    Bin i holds confidences in ``(i/n, (i+1)/n]`` (the first also holds 0). Empty bins get ``nan``
    for confidence and accuracy and a count of 0. These are the points of a reliability diagram.
    """
    if int(n_bins) < 1:
        raise ValueError(f"n_bins must be at least 1, got {n_bins}")
    confidence, correct = _confidences(probs, labels)
    edges = torch.linspace(0, 1, int(n_bins) + 1, dtype=torch.float64)
    index = (torch.bucketize(confidence, edges[1:-1], right=False)).clamp(max=int(n_bins) - 1)
    count = torch.bincount(index, minlength=int(n_bins)).double()
    conf_sum = torch.bincount(index, weights=confidence, minlength=int(n_bins))
    acc_sum = torch.bincount(index, weights=correct, minlength=int(n_bins))
    nan = torch.full_like(count, float("nan"))
    return {"confidence": torch.where(count > 0, conf_sum / count.clamp(min=1), nan),
            "accuracy": torch.where(count > 0, acc_sum / count.clamp(min=1), nan),
            "count": count, "edges": edges}


def expected_calibration_error(probs: Tensor, labels: Tensor, n_bins: int = 15) -> float:
    """ECE: the count-weighted mean of ``|accuracy - confidence|`` over equal-width confidence bins."""
    bins = calibration_bins(probs, labels, n_bins)
    used = bins["count"] > 0
    gap = (bins["accuracy"][used] - bins["confidence"][used]).abs()
    return float((bins["count"][used] * gap).sum() / bins["count"].sum())


def fit_temperature(logits: Tensor, labels: Tensor, *, max_iter: int = 200) -> float:
    """The temperature ``T > 0`` that minimises the NLL of ``logits / T`` on held-out data.

    1-D ``logits`` are binary logits (probability ``sigmoid(z / T)``); 2-D are (N, K) class
    logits. Fit it on a validation split, never on the test split you report.
    """
    logits, labels = _as_tensor(logits, "logits").detach().double(), _as_tensor(labels, "labels")
    if logits.dim() not in (1, 2) or labels.shape != logits.shape[:1]:
        raise ValueError(f"expected logits (N,) or (N, K) and labels (N,), got {tuple(logits.shape)} "
                         f"and {tuple(labels.shape)}")
    if logits.shape[0] == 0:
        raise ValueError("no examples")
    if not torch.isfinite(logits).all():
        raise ValueError("logits must be finite")
    if logits.dim() == 1:
        def nll(scaled: Tensor) -> Tensor:
            return bce_with_logits(scaled, labels.double())
    else:
        def nll(scaled: Tensor) -> Tensor:
            return softmax_cross_entropy(scaled, labels.long())
    nll(logits)  # validates the labels once, with a clear message
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.5, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        opt.zero_grad()
        loss = nll(logits / log_t.exp())
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp())
