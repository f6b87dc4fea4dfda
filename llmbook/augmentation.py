"""Training on perturbed inputs: the sentences changed as text, as embeddings, or through dropout.

Chapter 4 measures each against plain fine-tuning:

- :func:`random_swap`, :func:`random_deletion`, :func:`random_insertion` and :func:`eda_variants`:
  the EDA operations that need no external resource (Wei and Zou 2019 also replace words by
  WordNet synonyms, which this book does not ship); insertion draws from a given vocabulary
  (the words of the labelled sentences), so no word outside the data appears;
- :class:`FGM`: an ``extra_loss`` hook for :func:`llmbook.training.fit` that adds the loss at
  the word embeddings moved by ``epsilon`` along the gradient of the loss, normalised per
  sentence (the fast gradient method of Goodfellow et al., used on embeddings by Miyato et al.
  2017);
- :func:`rdrop_extra_loss`: a second forward pass with fresh dropout, its cross-entropy and the
  symmetric KL divergence between the two passes' predictions (R-Drop, Liang et al. 2021).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["random_swap", "random_deletion", "random_insertion", "eda_variants", "EDA_OPERATIONS", "FGM",
           "rdrop_extra_loss"]

EDA_OPERATIONS = ("swap", "delete", "insert")


def _check_words(words: Sequence[str]) -> list[str]:
    if isinstance(words, str):
        raise TypeError("pass the sentence as a list of words (e.g. sentence.split()), not a string")
    words = list(words)
    if not words:
        raise ValueError("cannot augment an empty sentence")
    return words


def _check_count(n: int) -> None:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"the number of changes must be an int >= 0, got {n!r}")


def random_swap(words: Sequence[str], n: int, rng: np.random.Generator) -> list[str]:
    """Swap two randomly chosen positions, ``n`` times (a one-word sentence is returned unchanged)."""
    words = _check_words(words)
    _check_count(n)
    out = list(words)
    if len(out) < 2:
        return out
    for _ in range(n):
        i, j = rng.choice(len(out), size=2, replace=False)
        out[i], out[j] = out[j], out[i]
    return out


def random_deletion(words: Sequence[str], p: float, rng: np.random.Generator) -> list[str]:
    """Drop each word with probability ``p``; at least one word is always kept."""
    words = _check_words(words)
    if not 0 <= p < 1:
        raise ValueError(f"a deletion probability lies in [0, 1), got {p}")
    keep = rng.random(len(words)) >= p
    if not keep.any():
        keep[rng.integers(len(words))] = True
    return [w for w, k in zip(words, keep, strict=True) if k]


def random_insertion(words: Sequence[str], n: int, vocabulary: Sequence[str],
                     rng: np.random.Generator) -> list[str]:
    """Insert ``n`` words drawn from ``vocabulary`` at random positions."""
    words = _check_words(words)
    _check_count(n)
    vocabulary = list(vocabulary)
    if not vocabulary:
        raise ValueError("random_insertion needs a non-empty vocabulary to draw from")
    out = list(words)
    for _ in range(n):
        out.insert(int(rng.integers(len(out) + 1)), vocabulary[int(rng.integers(len(vocabulary)))])
    return out


def eda_variants(sentence: str, n_aug: int, *, rate: float, vocabulary: Sequence[str], seed: int,
                 operations: Sequence[str] = EDA_OPERATIONS) -> list[str]:
    """``n_aug`` perturbed copies of a whitespace-tokenised ``sentence``, cycling through ``operations``.

    Each copy applies one operation: swap or insert ``max(1, round(rate * len(words)))`` words,
    or delete each word with probability ``rate``. The same ``seed`` gives the same copies.
    """
    if isinstance(n_aug, bool) or not isinstance(n_aug, (int, np.integer)) or n_aug < 1:
        raise ValueError(f"n_aug must be a positive int, got {n_aug!r}")
    if not 0 < rate < 1:
        raise ValueError(f"rate must lie in (0, 1), got {rate}")
    unknown = sorted(set(operations) - set(EDA_OPERATIONS))
    if unknown or not operations:
        raise ValueError(f"operations must be some of {EDA_OPERATIONS}, got {list(operations)}")
    words = _check_words(sentence.split())
    rng = np.random.default_rng(seed)
    n = max(1, round(rate * len(words)))
    out = []
    for i in range(n_aug):
        op = operations[i % len(operations)]
        if op == "swap":
            new = random_swap(words, n, rng)
        elif op == "delete":
            new = random_deletion(words, rate, rng)
        else:
            new = random_insertion(words, n, vocabulary, rng)
        out.append(" ".join(new))
    return out


class FGM:
    """Adversarial training on the word embeddings: an ``extra_loss(model, batch, outputs)`` hook.

    At each step the clean loss's gradient ``g`` with respect to the word-embedding output is
    taken (from the forward pass ``fit`` already made), and the loss is computed once more with
    the embeddings moved by ``r = epsilon * g / ||g||`` (the norm over each sentence's real
    tokens; padding is not moved). The hook returns that adversarial loss, so the step
    minimises ``L(x) + L(x + r)``. Construct it on the model before training (it registers a
    forward hook on ``model.get_input_embeddings()``); :meth:`remove` takes the hook off.
    """

    def __init__(self, model: nn.Module, epsilon: float) -> None:
        if not epsilon > 0:
            raise ValueError(f"epsilon must be > 0, got {epsilon}")
        self.epsilon = float(epsilon)
        self._saved: Tensor | None = None
        self._delta: Tensor | None = None
        self._handle = model.get_input_embeddings().register_forward_hook(self._hook)

    def _hook(self, module: nn.Module, inputs, output: Tensor):
        if self._delta is not None:
            return output + self._delta
        if torch.is_grad_enabled() and module.training:
            self._saved = output
        return None

    def perturbation(self, embeddings: Tensor, loss: Tensor, attention_mask: Tensor) -> Tensor:
        """``epsilon * g / ||g||`` per sentence, with ``g`` the gradient of ``loss`` at ``embeddings``."""
        (grad,) = torch.autograd.grad(loss, embeddings, retain_graph=True)
        grad = grad * attention_mask.unsqueeze(-1).to(grad.dtype)
        norm = grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, *([1] * (grad.dim() - 1)))
        return (self.epsilon * grad / norm).detach()

    def __call__(self, model: nn.Module, batch: Mapping[str, Tensor], outputs) -> Tensor:
        if self._saved is None:
            raise RuntimeError("FGM saw no embedding output: build it on the model before training, in train mode")
        embeddings, self._saved = self._saved, None
        self._delta = self.perturbation(embeddings, outputs.loss, batch["attention_mask"])
        try:
            adversarial = model(**batch).loss
        finally:
            self._delta = None
        self._saved = None  # the adversarial pass saves nothing
        return adversarial

    def remove(self) -> None:
        self._handle.remove()


def rdrop_extra_loss(alpha: float) -> Callable[[nn.Module, Mapping[str, Tensor], object], Tensor]:
    """R-Drop as an ``extra_loss`` hook: a second forward pass (new dropout masks) of the same batch.

    Returns ``CE_2 + alpha / 2 * (KL(p_1 || p_2) + KL(p_2 || p_1))``, so that with the task loss
    ``CE_1`` the step minimises Liang et al.'s objective. The model must be in train mode
    (otherwise both passes are identical and the term is just ``CE_1``); the hook refuses eval mode.
    """
    if not alpha >= 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")

    def extra_loss(model: nn.Module, batch: Mapping[str, Tensor], outputs) -> Tensor:
        if not model.training:
            raise RuntimeError("R-Drop needs dropout active: call it in train mode")
        second = model(**batch)
        logp1 = F.log_softmax(outputs.logits, dim=-1)
        logp2 = F.log_softmax(second.logits, dim=-1)
        kl = (F.kl_div(logp2, logp1, log_target=True, reduction="batchmean")
              + F.kl_div(logp1, logp2, log_target=True, reduction="batchmean"))
        return second.loss + 0.5 * alpha * kl

    return extra_loss
