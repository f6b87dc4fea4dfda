"""Scoring a trained model: predictions in input order, accuracy, word-level tags, calibration.

Defined in chapters 2 and 3 and used by every chapter that reports a score:

- :func:`predict_logits`, :func:`predict_labels`: batched by length for speed, returned in the
  order of the input, with dropout off.
- :func:`accuracy`: the share of correct predictions, refusing mismatched lengths.
- :func:`word_level_tags`: one predicted and one gold tag per word from first-sub-token
  predictions, refusing to drop words that truncation cut off.
- :func:`calibration_bins`, :func:`expected_calibration_error`, :func:`fit_temperature`:
  reliability diagrams, ECE and temperature scaling.

Intervals and paired comparisons of scores are in :mod:`llmbook.stats`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from llmbook import hardware
from llmbook.encoding import length_order, pad_batch
from llmbook.losses import IGNORE_INDEX, _as_tensor, bce_with_logits, softmax_cross_entropy

__all__ = [
    "predict_logits", "predict_labels", "accuracy", "word_level_tags", "calibration_bins",
    "expected_calibration_error", "fit_temperature",
]

TRUNCATION_POLICIES = ("raise", "warn")


# --------------------------------------------------------------------------- predictions


@torch.no_grad()
def predict_logits(model: nn.Module, examples: Sequence[Mapping[str, Any]], *, pad_token_id: int,
                   batch_size: int = 128, bf16: bool = False, train_mode: bool = False) -> list[np.ndarray]:
    """Logits for each example, in the order given: shape (classes,) or (tokens, classes) each.

    Examples are batched by length for speed and put back in input order. The model is put in
    eval mode (dropout off) unless ``train_mode=True``, which exists only to show what
    forgetting ``model.eval()`` does.
    """
    if len(examples) == 0:
        return []
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    device = next(model.parameters()).device
    was_training = model.training
    model.train(train_mode)
    lengths = np.array([len(e["input_ids"]) for e in examples])
    order = length_order(lengths, descending=True)
    out: list[np.ndarray | None] = [None] * len(examples)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = pad_batch([{"input_ids": examples[i]["input_ids"]} for i in idx], pad_token_id)
            with hardware.autocast(device, bf16):
                logits = model(**{k: v.to(device) for k, v in batch.items()}).logits.float().cpu().numpy()
            for row, i in enumerate(idx):
                out[i] = logits[row] if logits.ndim == 2 else logits[row, :lengths[i]]
    finally:
        model.train(was_training)
    return out  # type: ignore[return-value]


def predict_labels(model: nn.Module, examples: Sequence[Mapping[str, Any]], **kwargs) -> list[np.ndarray] | np.ndarray:
    """Arg-max predictions: an array (sentence tasks) or one array per example (token tasks)."""
    logits = predict_logits(model, examples, **kwargs)
    preds = [x.argmax(-1) for x in logits]
    return np.array(preds) if preds and np.ndim(preds[0]) == 0 else preds


def accuracy(predictions: Sequence[int], labels: Sequence[int]) -> float:
    """Share of predictions equal to the labels."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if predictions.shape != labels.shape:
        raise ValueError(f"{predictions.shape[0] if predictions.ndim else 0} predictions for "
                         f"{labels.shape[0] if labels.ndim else 0} labels")
    if predictions.size == 0:
        raise ValueError("accuracy of no predictions is undefined")
    return float(np.mean(predictions == labels))


def word_level_tags(token_predictions: Sequence[Sequence[int]], token_labels: Sequence[Sequence[int]],
                    id2label: Mapping[int, str] | Sequence[str], *, n_words: Sequence[int] | None,
                    on_truncation: str = "raise") -> tuple[list[list[str]], list[list[str]]]:
    """Keep only the tokens that carry a label (not -100) and turn ids into tag names.

    With first-sub-token labelling this gives one predicted and one gold tag per word, the
    input that entity-level scoring (seqeval) expects. ``n_words`` is each sentence's number of
    words before truncation (``encoding.encode_words`` stores it as ``"n_words"``). A sentence
    with fewer labelled tokens than words lost words to truncation, and its entities would
    silently leave the score: ``on_truncation="raise"`` (the default) refuses, naming how many
    words were lost; ``"warn"`` scores the words that remain and warns with the same count.
    Pass ``n_words=None`` only for labels that were never truncated (the caller vouches for it).
    """
    if on_truncation not in TRUNCATION_POLICIES:
        raise ValueError(f"on_truncation must be one of {TRUNCATION_POLICIES}, got {on_truncation!r}")
    if len(token_predictions) != len(token_labels):
        raise ValueError(f"{len(token_predictions)} predicted sequences for {len(token_labels)} label sequences")
    if n_words is not None and len(n_words) != len(token_labels):
        raise ValueError(f"{len(n_words)} word counts for {len(token_labels)} label sequences")
    preds, golds = [], []
    lost_words, lost_sentences = 0, 0
    for i, (p, y) in enumerate(zip(token_predictions, token_labels, strict=True)):
        p, y = np.asarray(p), np.asarray(y)
        if p.shape != y.shape:
            raise ValueError(f"sequence {i}: {p.shape[0]} predictions for {y.shape[0]} labels")
        keep = y != IGNORE_INDEX
        if n_words is not None:
            missing = int(n_words[i]) - int(keep.sum())
            if missing < 0:
                raise ValueError(f"sequence {i}: {int(keep.sum())} labelled tokens for {n_words[i]} words "
                                 "(label every sub-token, or score with first-sub-token labels)")
            lost_words += missing
            lost_sentences += missing > 0
        preds.append([id2label[int(t)] for t in p[keep]])
        golds.append([id2label[int(t)] for t in y[keep]])
    if lost_words:
        message = (f"truncation cut {lost_words} words off {lost_sentences} of {len(token_labels)} sentences; "
                   "their entities are not scored (encode with a longer max_length)")
        if on_truncation == "raise":
            raise ValueError(message)
        warnings.warn(message, stacklevel=2)
    return preds, golds


# --------------------------------------------------------------------------- calibration


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
