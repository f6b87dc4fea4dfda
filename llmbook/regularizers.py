"""Regularisers that keep a fine-tuned model near what pretraining learned.

Chapter 2 derives L2-SP; chapter 4 adds the rest. Each penalty can be handed to
:func:`llmbook.training.fit` as its ``extra_loss`` hook:

- :func:`parameter_snapshot`: detached copies of the trainable weights, the anchor ``theta_0``.
- :func:`l2_sp_penalty`: ``alpha / 2 * ||theta - theta_0||^2`` (Li, Grandvalet & Davoine 2018),
  whose gradient is ``alpha * (theta - theta_0)``.
- :func:`l2_sp_extra_loss`: the same penalty as an ``extra_loss(model, batch, outputs)`` hook.
- :func:`set_dropout`: one dropout rate for every ``nn.Dropout`` of a model.
- :func:`layerwise_lr_groups`: AdamW parameter groups whose learning rate falls by a factor
  ``xi`` per block from the top of the encoder down (layer-wise learning-rate decay).
- :func:`reinit_top_blocks`: the top ``k`` transformer blocks (and the pooler) drawn afresh
  from the model's own initialiser (Zhang et al. 2021).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

__all__ = ["parameter_snapshot", "l2_sp_penalty", "l2_sp_extra_loss", "set_dropout", "layer_depth",
           "layerwise_lr_groups", "reinit_top_blocks"]


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


# --------------------------------------------------------------------------- recipe knobs


def set_dropout(model: nn.Module, rate: float) -> int:
    """Set every ``nn.Dropout`` of ``model`` to ``rate`` (attention, hidden and head); returns how many."""
    if not 0 <= rate < 1:
        raise ValueError(f"a dropout rate lies in [0, 1), got {rate}")
    layers = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    if not layers:
        raise ValueError("the model has no nn.Dropout layer")
    for m in layers:
        m.p = float(rate)
    return len(layers)


_LAYER = re.compile(r"(?:^|\.)layer\.(\d+)\.")


def layer_depth(name: str, n_layers: int) -> int:
    """How many blocks below the top a parameter sits: 0 for the head, the pooler and the top
    block, ``n_layers - 1 - i`` for block ``i``, ``n_layers`` for the embeddings."""
    match = _LAYER.search(name)
    if match:
        i = int(match.group(1))
        if not 0 <= i < n_layers:
            raise ValueError(f"{name}: block {i} outside 0..{n_layers - 1}")
        return n_layers - 1 - i
    return n_layers if "embeddings." in name else 0


def layerwise_lr_groups(model: nn.Module, lr: float, xi: float, *, n_layers: int,
                        weight_decay: float = 0.01) -> list[dict]:
    """AdamW parameter groups with layer-wise learning-rate decay: ``lr * xi ** depth``.

    ``depth`` is :func:`layer_depth` (the head and the top block get ``lr``, the embeddings
    ``lr * xi ** n_layers``). Weight decay follows :func:`llmbook.optim.decay_parameter_groups`'s
    rule (matrices decay, biases and normalisation weights do not). Only trainable parameters
    are included. Pass the groups to ``torch.optim.AdamW``; the schedule of ``fit`` scales every
    group's rate by the same factor.
    """
    from llmbook.optim import split_decay_parameters

    if not lr > 0 or not 0 < xi <= 1:
        raise ValueError(f"need lr > 0 and 0 < xi <= 1, got lr={lr}, xi={xi}")
    decay, _ = split_decay_parameters(model)
    decay = set(decay)
    groups: dict[tuple[int, bool], list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            groups.setdefault((layer_depth(name, n_layers), name in decay), []).append(p)
    return [{"params": params, "lr": lr * xi ** depth, "weight_decay": weight_decay if decays else 0.0}
            for (depth, decays), params in sorted(groups.items())]


def reinit_top_blocks(model: nn.Module, k: int) -> list[str]:
    """Draw the top ``k`` transformer blocks and the pooler afresh with the model's own
    initialiser (``model._init_weights``), in place; returns the re-initialised module names."""
    layers = getattr(getattr(getattr(model, "base_model", model), "encoder", None), "layer", None)
    if layers is None or not hasattr(model, "_init_weights"):
        raise ValueError("reinit_top_blocks needs a transformers BERT-style model (base_model.encoder.layer)")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= len(layers):
        raise ValueError(f"k must lie in 1..{len(layers)}, got {k!r}")
    targets = [(f"layer {len(layers) - k + j}", layers[len(layers) - k + j]) for j in range(k)]
    pooler = getattr(model.base_model, "pooler", None)
    if pooler is not None:
        targets.append(("pooler", pooler))
    weights = [p for _, module in targets for p in module.parameters()]
    for p in weights:  # loaded weights are flagged as initialised, and the initialiser skips them
        if getattr(p, "_is_hf_initialized", False):
            p._is_hf_initialized = False
    before = [p.detach().clone() for p in weights]
    for _, module in targets:
        module.apply(model._init_weights)
    if all(torch.equal(b, p) for b, p in zip(before, weights, strict=True)):
        raise RuntimeError("the model's initialiser changed none of the re-initialised weights")
    return [name for name, _ in targets]
