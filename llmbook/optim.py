"""Optimisers and learning-rate schedules: one decay rule and one home for every chapter's loop.

Chapter 1 (pretraining) and chapter 3 (fine-tuning) build their AdamW here, with the same rule
for what weight decay applies to, and their schedules from the same factors:

- :func:`is_norm_module`, :func:`split_decay_parameters`, :func:`decay_parameter_groups`: AdamW
  parameter groups that decay matrices (embeddings included) and leave biases and every
  normalisation parameter undecayed. Frozen parameters are left out, so a parameter-efficient
  method passes only what trains.
- :func:`make_optimizer`: AdamW over those groups (fused where torch has a kernel for the device).
- :func:`warmup_linear_factor`, :func:`warmup_cosine_lr`: the fine-tuning schedule (linear
  warmup from 0, linear decay to 0) and the pretraining schedule (a warmup that reaches the
  peak at its last step, then cosine decay to a floor); :func:`lambda_schedule` wraps a
  factor as a ``torch`` scheduler.
- :func:`decoupled_decay_factor`: how much AdamW's decoupled weight decay shrinks a weight
  over a whole run, ``prod_t (1 - lr_t * weight_decay)`` (chapter 4).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

__all__ = [
    "NORM_TYPES", "is_norm_module", "split_decay_parameters", "decay_parameter_groups", "make_optimizer",
    "warmup_linear_factor", "warmup_cosine_lr", "lambda_schedule", "decoupled_decay_factor",
]

NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm,
    nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm,
    *((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ()),
)


# --------------------------------------------------------------------------- parameter groups


def is_norm_module(module: nn.Module) -> bool:
    """True for normalisation layers: torch's LayerNorm/RMSNorm/BatchNorm/... and any class named ``*Norm``.

    The name rule catches model-specific classes such as ``LlamaRMSNorm`` or ``T5LayerNorm``.
    """
    return isinstance(module, NORM_TYPES) or type(module).__name__.lower().endswith("norm")


def split_decay_parameters(model: nn.Module) -> tuple[list[str], list[str]]:
    """Names of the trainable parameters to decay and not to decay.

    Not decayed: biases, every parameter of a normalisation layer (:func:`is_norm_module`) and
    any other parameter with fewer than 2 dimensions (gains and offsets, whose neutral value is
    not 0). Decayed: matrices, including embeddings. Frozen parameters (``requires_grad=False``)
    are left out; a parameter shared by two modules is listed once.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    decay, no_decay, seen = [], [], set()
    for module_name, module in model.named_modules():
        norm = is_norm_module(module)
        for param_name, param in module.named_parameters(recurse=False):
            if id(param) in seen or not param.requires_grad:
                continue
            seen.add(id(param))
            full_name = f"{module_name}.{param_name}" if module_name else param_name
            if norm or param_name.endswith("bias") or param.dim() < 2:
                no_decay.append(full_name)
            else:
                decay.append(full_name)
    return decay, no_decay


def decay_parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two AdamW parameter groups: matrices with ``weight_decay``, biases and norm parameters with 0.

    ``torch.optim.AdamW(decay_parameter_groups(model, 0.01), lr=...)``. Each group also carries
    ``"param_names"`` so that you can print what went where.
    """
    if not math.isfinite(float(weight_decay)) or float(weight_decay) < 0:
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay}")
    decay, no_decay = split_decay_parameters(model)
    if not decay and not no_decay:
        raise ValueError("the model has no trainable parameter")
    params = dict(model.named_parameters())
    groups = [{"params": [params[n] for n in names], "weight_decay": wd, "param_names": names}
              for names, wd in ((decay, float(weight_decay)), (no_decay, 0.0)) if names]
    return groups


# --------------------------------------------------------------------------- AdamW


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.01, *,
                   betas: tuple[float, float] = (0.9, 0.999), fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW with ``weight_decay`` on weight matrices only (biases and normalisation weights get 0).

    Only parameters with ``requires_grad`` are optimised (freeze the others first). ``fused=None``
    uses the fused AdamW kernel where torch has one for the parameters' device (CPU and CUDA): one
    pass over memory per step instead of several; ``fused=False`` uses torch's default
    (``foreach``) implementation.
    """
    if not lr > 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise ValueError(f"betas must be two numbers in [0, 1), got {betas}")
    groups = decay_parameter_groups(model, weight_decay)
    if fused is None:
        fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point
                    for g in groups for p in g["params"])
    kwargs = {"fused": True} if fused else {}
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), **kwargs)


# --------------------------------------------------------------------------- schedules


def warmup_linear_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier: ``step / warmup`` while warming up, then linear decay to 0 at ``total_steps``."""
    if total_steps < 1 or warmup_steps < 0 or warmup_steps > total_steps:
        raise ValueError(f"need 0 <= warmup_steps <= total_steps and total_steps >= 1, got {warmup_steps}, "
                         f"{total_steps}")
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")
    if step < warmup_steps:
        return step / warmup_steps
    if total_steps == warmup_steps:
        return 1.0
    return max(0.0, (total_steps - step) / (total_steps - warmup_steps))


def warmup_cosine_lr(step: int, *, max_lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """Learning rate at ``step``: linear warmup to ``max_lr``, then cosine decay to ``min_lr``.

    Warmup step ``s`` uses ``max_lr * (s + 1) / warmup_steps``, so the last warmup step reaches
    the peak (the convention of Karpathy's build-nanogpt; nanoGPT's ``train.py`` divides by
    ``warmup_iters + 1``); from ``total_steps`` on the rate stays at ``min_lr``.
    """
    if not 0 <= warmup_steps <= total_steps or total_steps < 1:
        raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps}) "
                         "and total_steps >= 1")
    if step < 0:
        raise ValueError(f"step must be non-negative, got {step}")
    if not 0 <= min_lr <= max_lr:
        raise ValueError(f"need 0 <= min_lr <= max_lr, got {min_lr} and {max_lr}")
    if step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= total_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


def lambda_schedule(optimizer: torch.optim.Optimizer,
                    factor: Callable[[int], float]) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler that multiplies each group's initial rate by ``factor(step)``.

    Call ``scheduler.step()`` after each update. ``factor`` is called at once with step 0, so a
    factor with invalid settings fails here, not in the middle of training:
    ``lambda_schedule(opt, lambda s: warmup_linear_factor(s, 10, 100))``.
    """
    factor(0)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# --------------------------------------------------------------------------- what decay does


def decoupled_decay_factor(lrs, weight_decay: float) -> float:
    """The factor by which AdamW's decoupled decay alone shrinks a weight over a run.

    Each update multiplies every decayed weight by ``1 - lr_t * weight_decay`` before the Adam
    step, so over the learning rates ``lrs`` of a run (``TrainResult.step_lrs``, or the
    schedule) the decay alone leaves ``prod_t (1 - lr_t * weight_decay)`` of it. A factor near
    1 means the decay did next to nothing; the Adam steps themselves are not included.
    """
    lrs = [float(lr) for lr in lrs]
    if not lrs:
        raise ValueError("no learning rates: pass one per update of the run")
    if not math.isfinite(weight_decay) or weight_decay < 0:
        raise ValueError(f"weight_decay must be a finite number >= 0, got {weight_decay}")
    if any(not math.isfinite(lr) or lr < 0 for lr in lrs):
        raise ValueError("learning rates must be finite and >= 0")
    factors = [1.0 - lr * weight_decay for lr in lrs]
    if any(f <= 0 for f in factors):
        raise ValueError("lr * weight_decay >= 1 at some step: the decay alone would zero or flip the weights")
    return math.exp(sum(math.log(f) for f in factors))
