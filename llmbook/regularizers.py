"""Regularisers that keep a fine-tuned model near what pretraining learned.

Chapter 2 derives L2-SP; chapter 4 adds the rest. Each penalty can be handed to
:func:`llmbook.training.fit` as its ``extra_loss`` hook:

- :func:`parameter_snapshot`: detached copies of the trainable weights, the anchor ``theta_0``.
- :func:`l2_sp_penalty`: ``alpha / 2 * ||theta - theta_0||^2`` (Li, Grandvalet & Davoine 2018),
  whose gradient is ``alpha * (theta - theta_0)``.
- :func:`l2_sp_extra_loss`: the same penalty as an ``extra_loss(model, batch, outputs)`` hook.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

__all__ = ["parameter_snapshot", "l2_sp_penalty", "l2_sp_extra_loss"]


def parameter_snapshot(model: nn.Module, *, exclude: Callable[[str], bool] | None = None) -> dict[str, Tensor]:
    """Detached copies of the trainable parameters: the anchor ``theta_0`` for :func:`l2_sp_penalty`.

    L2-SP pulls the *pretrained* weights back to their values; a newly initialised head has no
    pretrained value, so leave it out: ``parameter_snapshot(model, exclude=lambda name:
    name.startswith("classifier."))`` (give the head an ordinary L2 penalty if you want one).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    snapshot = {n: p.detach().clone() for n, p in model.named_parameters()
                if p.requires_grad and not (exclude is not None and exclude(n))}
    if not snapshot:
        raise ValueError("no trainable parameter is left to anchor (all frozen or excluded)")
    return snapshot


def l2_sp_penalty(model: nn.Module, reference: Mapping[str, Tensor], alpha: float) -> Tensor:
    """L2-SP (Li, Grandvalet & Davoine 2018): ``alpha / 2 * sum ||theta - theta_0||^2`` over ``reference``.

    It pulls the weights toward the pretrained ones rather than toward 0; its gradient is
    ``alpha * (theta - theta_0)``. Parameters absent from ``reference`` (a new head) are not
    penalised here; give them an ordinary L2 penalty if you want one.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if not math.isfinite(float(alpha)) or float(alpha) < 0:
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
    params = dict(model.named_parameters())
    missing = sorted(set(reference) - set(params))
    if missing:
        raise ValueError(f"reference names parameters the model does not have: {missing[:5]}")
    if not reference:
        raise ValueError("reference is empty: take it with parameter_snapshot(model) before fine-tuning")
    total = None
    for name, anchor in reference.items():
        p = params[name]
        if anchor.shape != p.shape:
            raise ValueError(f"{name}: reference shape {tuple(anchor.shape)} != parameter shape {tuple(p.shape)}")
        term = (p - anchor.to(p.device, p.dtype)).pow(2).sum()
        total = term if total is None else total + term
    return 0.5 * float(alpha) * total


def l2_sp_extra_loss(reference: Mapping[str, Tensor], alpha: float) -> Callable[..., Tensor]:
    """An ``extra_loss(model, batch, outputs)`` hook for :func:`llmbook.training.fit` that adds
    :func:`l2_sp_penalty` with this ``reference`` and ``alpha`` to every step's loss."""
    if not math.isfinite(float(alpha)) or float(alpha) < 0:
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha}")
    if not reference:
        raise ValueError("reference is empty: take it with parameter_snapshot(model) before fine-tuning")

    def extra_loss(model: nn.Module, batch: Mapping[str, torch.Tensor], outputs) -> Tensor:
        return l2_sp_penalty(model, reference, alpha)

    return extra_loss
