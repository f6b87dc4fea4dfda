"""What fine-tuning changes in a pretrained encoder, and what the encoder still knows afterwards.

Chapter 4 measures forgetting two ways, for plain fine-tuning and for each regulariser:

- :func:`weight_drift`: how far each block moved from the pretrained weights, ``||theta -
  theta_0||`` and that distance relative to ``||theta_0||``, block by block (embeddings, each
  transformer layer, pooler);
- :func:`word_features` and :func:`entity_probe`: a probe for a task the encoder was *not*
  fine-tuned on. A logistic regression on the frozen encoder's word vectors predicts whether a
  word of a WNUT-16 tweet is part of a named entity; its entity-class F1 on test says how much
  word-level knowledge the encoder kept.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from llmbook.encoding import encode_words, pad_batch
from llmbook.losses import IGNORE_INDEX

__all__ = ["block_name", "weight_drift", "word_features", "ProbeScore", "entity_probe"]

_LAYER = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


def block_name(parameter_name: str) -> str:
    """The block a parameter belongs to: ``embeddings``, ``layer i``, ``pooler`` or ``head``.

    ``head`` is everything outside the encoder body (for instance ``classifier.weight``).
    """
    if not isinstance(parameter_name, str) or not parameter_name:
        raise ValueError(f"expected a parameter name, got {parameter_name!r}")
    match = _LAYER.search(parameter_name)
    if match:
        return f"layer {int(match.group(1))}"
    if "embeddings." in parameter_name:
        return "embeddings"
    if "pooler." in parameter_name:
        return "pooler"
    return "head"


def _block_order(block: str) -> tuple[int, int]:
    if block == "embeddings":
        return (0, 0)
    if block.startswith("layer "):
        return (1, int(block.split()[1]))
    return (2, 0) if block == "pooler" else (3, 0)


def weight_drift(model: nn.Module, reference: Mapping[str, Tensor]):
    """How far the weights in ``reference`` moved, block by block.

    Returns a ``DataFrame`` indexed by block (in network order) with the columns ``parameters``
    (how many numbers), ``distance`` (``||theta - theta_0||``), ``reference norm``
    (``||theta_0||``) and ``relative`` (their ratio), plus a last row ``all`` over every
    parameter in ``reference``. Take ``reference`` with
    :func:`llmbook.regularizers.parameter_snapshot` before fine-tuning.
    """
    import pandas as pd

    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not reference:
        raise ValueError("reference is empty: take it with regularizers.parameter_snapshot(model) first")
    params = dict(model.named_parameters())
    missing = sorted(set(reference) - set(params))
    if missing:
        raise ValueError(f"reference names parameters the model does not have: {missing[:5]}")
    sums: dict[str, list[float]] = {}
    with torch.no_grad():
        for name, anchor in reference.items():
            p = params[name]
            if p.shape != anchor.shape:
                raise ValueError(f"{name}: shape {tuple(p.shape)} != reference shape {tuple(anchor.shape)}")
            diff = (p.detach().double() - anchor.to(p.device).double()).pow(2).sum().item()
            norm = anchor.double().pow(2).sum().item()
            row = sums.setdefault(block_name(name), [0, 0.0, 0.0])
            row[0] += p.numel()
            row[1] += diff
            row[2] += norm
    blocks = sorted(sums, key=_block_order)
    total = [sum(sums[b][i] for b in blocks) for i in range(3)]
    rows = [(b, *sums[b]) for b in blocks] + [("all", *total)]
    table = pd.DataFrame(rows, columns=["block", "parameters", "sq_distance", "sq_norm"]).set_index("block")
    table["distance"] = np.sqrt(table.pop("sq_distance"))
    table["reference norm"] = np.sqrt(table.pop("sq_norm"))
    table["relative"] = table["distance"] / table["reference norm"].where(table["reference norm"] > 0)
    table["parameters"] = table["parameters"].astype(int)
    return table


def _encoder_body(model: nn.Module) -> nn.Module:
    """The encoder without its task head: ``model.base_model`` for a transformers model."""
    body = getattr(model, "base_model", model)
    return body if isinstance(body, nn.Module) else model


@torch.no_grad()
def word_features(model: nn.Module, tokenizer: Any, words: Sequence[Sequence[str]], *, layer: int = -1,
                  max_length: int = 128, batch_size: int = 64) -> np.ndarray:
    """The frozen encoder's vector of every word: the hidden state of its first sub-token.

    ``model`` is an encoder or a model with a task head (its ``base_model`` is used); ``layer``
    indexes the hidden states (0: the embeddings, -1: the last layer). Returns an array of shape
    ``(total words, hidden size)``, the words of all sentences in order. A word that truncation to
    ``max_length`` tokens cut off raises ``ValueError`` rather than silently shifting the rows.
    """
    words = [list(w) for w in words]
    if not words:
        raise ValueError("no sentences to encode")
    encoded = encode_words(tokenizer, words, [[0] * len(w) for w in words], max_length=max_length)
    for i, e in enumerate(encoded):
        kept = sum(label != IGNORE_INDEX for label in e["labels"])
        if kept != e["n_words"]:
            raise ValueError(f"sentence {i}: truncation to {max_length} tokens cut off "
                             f"{e['n_words'] - kept} of its {e['n_words']} words; raise max_length")
    body = _encoder_body(model)
    device = next(body.parameters()).device
    was_training = body.training
    body.eval()
    out = []
    try:
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start:start + batch_size]
            batch = pad_batch([{"input_ids": e["input_ids"]} for e in chunk], tokenizer.pad_token_id)
            result = body(**{k: v.to(device) for k, v in batch.items()}, output_hidden_states=True)
            hidden = result.hidden_states[layer].float().cpu().numpy()
            for row, e in enumerate(chunk):
                first = np.flatnonzero(np.asarray(e["labels"]) != IGNORE_INDEX)
                out.append(hidden[row, first])
    finally:
        body.train(was_training)
    return np.concatenate(out).astype(np.float32)


@dataclass(frozen=True)
class ProbeScore:
    """The entity probe's test scores (the entity class is the positive class)."""

    f1: float
    precision: float
    recall: float
    n_words: int


def entity_probe(train_features: np.ndarray, train_tags: Sequence[Sequence[int]], test_features: np.ndarray,
                 test_tags: Sequence[Sequence[int]], *, outside_tag: int = 0, C: float = 1.0) -> ProbeScore:
    """Fit "is this word part of a named entity?" on frozen word vectors; score it on test.

    ``*_features`` come from :func:`word_features` for the same sentences whose tag ids are in
    ``*_tags`` (one list per sentence, ``outside_tag`` for words outside every entity). A
    logistic regression (balanced class weights, inverse regularisation ``C``) is fitted on the
    training words; the score is its F1 for the entity class on the test words.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import precision_recall_fscore_support

    def binary(tags: Sequence[Sequence[int]], features: np.ndarray, split: str) -> np.ndarray:
        y = np.array([int(t != outside_tag) for seq in tags for t in seq], dtype=np.int64)
        if len(y) != len(features):
            raise ValueError(f"{split}: {len(features)} word vectors but {len(y)} tags")
        return y

    if not C > 0:
        raise ValueError(f"C must be > 0, got {C}")
    y_train = binary(train_tags, train_features, "train")
    y_test = binary(test_tags, test_features, "test")
    if len(set(y_train.tolist())) < 2:
        raise ValueError("the training words contain only one class: no entity or no outside word")
    clf = LogisticRegression(C=C, max_iter=2000, class_weight="balanced").fit(train_features, y_train)
    precision, recall, f1, _ = precision_recall_fscore_support(y_test, clf.predict(test_features), average="binary",
                                                               zero_division=0)
    return ProbeScore(float(f1), float(precision), float(recall), int(len(y_test)))
