"""Scoring a trained model: predictions in input order, accuracy, word-level tags.

Defined in chapter 3 and used by every chapter that reports a score:

- :func:`predict_logits`, :func:`predict_labels`: batched by length for speed, returned in the
  order of the input, with dropout off.
- :func:`accuracy`: the share of correct predictions, refusing mismatched lengths.
- :func:`word_level_tags`: one predicted and one gold tag per word from first-sub-token
  predictions, refusing to drop words that truncation cut off.
Intervals and paired comparisons of scores are in :mod:`llmbook.stats`, calibration (ECE,
temperature scaling) in :mod:`llmbook.calibration`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from llmbook import hardware
from llmbook.encoding import length_order, pad_batch
from llmbook.losses import IGNORE_INDEX

__all__ = ["predict_logits", "predict_labels", "accuracy", "word_level_tags"]

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
    words were lost; ``"warn"`` scores the words that remain and warns with the same count (the
    tags of such a sentence are then shorter than its gold words). A word that tokenises to
    nothing (a control character) counts as lost too.
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
                raise ValueError(f"sequence {i}: {int(keep.sum())} labelled tokens for {n_words[i]} words; "
                                 "word-level tags need exactly one labelled token per word (first sub-token "
                                 "labels, not every sub-token)")
            lost_words += missing
            lost_sentences += missing > 0
        preds.append([id2label[int(t)] for t in p[keep]])
        golds.append([id2label[int(t)] for t in y[keep]])
    if lost_words:
        message = (f"{lost_words} words of {lost_sentences} of {len(token_labels)} sentences have no labelled "
                   "token: truncation cut them off (encode with a longer max_length), or they tokenise to "
                   "nothing; their entities are not scored")
        if on_truncation == "raise":
            raise ValueError(message)
        warnings.warn(message, stacklevel=2)
    return preds, golds
