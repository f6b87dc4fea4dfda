"""The fine-tuning loop: one ``TrainConfig``, one update (:func:`train_step`) and one loop
(:func:`fit`) with hooks, so that later chapters add to it instead of copying it.

Chapter 3 builds the loop by hand and checks it against ``transformers.Trainer``; chapters 4, 6
and 8 reuse it through its hooks:

- ``extra_loss(model, batch, outputs) -> Tensor``: a term added to the task loss at every step
  (L2-SP in :mod:`llmbook.regularizers`, distillation with a teacher held by the closure,
  adversarial and consistency terms);
- ``trainable(name, parameter) -> bool``: which parameters train (frozen blocks, parameter-
  efficient methods); the others get ``requires_grad=False`` and stay out of the optimizer.
  Or pass a ready ``optimizer`` over the parameters you want;
- ``on_epoch_end(epoch, model, record) -> bool | None``: called after each epoch's validation;
  returning ``True`` stops training;
- per-step records (:class:`StepRecord`): loss, learning rate, gradient norm before clipping,
  and whether the step was clipped.

Batching and padding are in :mod:`llmbook.encoding`, the optimiser and schedule in
:mod:`llmbook.optim`, prediction and scores in :mod:`llmbook.evaluation`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import Tensor, nn

from llmbook import hardware
from llmbook.encoding import length_bucketed_batches, pad_batch, random_batches
from llmbook.optim import lambda_schedule, make_optimizer, warmup_linear_factor

__all__ = ["TrainConfig", "StepOutput", "StepRecord", "EpochRecord", "TrainResult", "train_step", "fit"]

ExtraLoss = Callable[[nn.Module, Mapping[str, Tensor], Any], Tensor]


@dataclass
class TrainConfig:
    """Everything that defines a fine-tuning run of :func:`fit`."""

    epochs: int = 3
    batch_size: int = 32
    lr: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float | None = 1.0
    patience: int | None = 1
    bf16: bool = False
    bucket_by_length: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("epochs and batch_size must be >= 1")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must lie in [0, 1), got {self.warmup_ratio}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None (no early stopping), got {self.patience}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")


@dataclass
class StepRecord:
    """One update: its loss (task loss plus any extra term), the extra term alone, the learning
    rate it used, the gradient norm before clipping and whether clipping rescaled it."""

    step: int
    epoch: int
    loss: float
    extra_loss: float | None
    lr: float
    grad_norm: float
    clipped: bool


@dataclass
class EpochRecord:
    """What happened in one epoch: mean training loss, validation score, time, mean gradient norm."""

    epoch: int
    train_loss: float
    val_score: float | None
    seconds: float
    grad_norm: float


@dataclass
class TrainResult:
    """The history of a :func:`fit` run and which epoch's weights the model holds now.

    ``best_epoch`` and ``best_score`` always describe the weights the model holds after
    :func:`fit`: the restored best epoch with early stopping, the last epoch without it.
    """

    history: list[EpochRecord]
    best_epoch: int
    best_score: float | None
    train_seconds: float
    examples_seen: int
    steps: list[StepRecord] = field(default_factory=list)
    stopped_early: bool = False

    @property
    def examples_per_second(self) -> float:
        """Training throughput: examples through forward, backward and update per second."""
        return self.examples_seen / self.train_seconds if self.train_seconds > 0 else float("nan")

    @property
    def step_losses(self) -> list[float]:
        return [s.loss for s in self.steps]

    @property
    def step_lrs(self) -> list[float]:
        return [s.lr for s in self.steps]

    @property
    def clipped_share(self) -> float:
        """Share of the updates whose gradient norm was clipped."""
        return float(np.mean([s.clipped for s in self.steps])) if self.steps else float("nan")

    def table(self):
        """The history as a pandas DataFrame, one row per epoch."""
        import pandas as pd

        return pd.DataFrame([vars(r) for r in self.history]).set_index("epoch")

    def step_table(self):
        """The per-step records as a pandas DataFrame, one row per update."""
        import pandas as pd

        return pd.DataFrame([vars(s) for s in self.steps]).set_index("step")


class StepOutput(NamedTuple):
    """What :func:`train_step` returns: the loss it minimised (task loss plus any extra term),
    the gradient norm before clipping, and the extra term alone (``None`` without one)."""

    loss: float
    grad_norm: float
    extra_loss: float | None


def train_step(model: nn.Module, batch: Mapping[str, Tensor], optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, *,
               max_grad_norm: float | None = 1.0, bf16: bool = False,
               extra_loss: ExtraLoss | None = None) -> StepOutput:
    """One update: forward (under bf16 autocast if asked), backward, clip, step.

    ``extra_loss(model, batch, outputs)``, if given, is added to the model's loss before the
    backward pass. The gradient norm is the one before clipping; clipping rescales all
    gradients together so that their global L2 norm is at most ``max_grad_norm``. A loss or a
    gradient norm that is not finite raises ``FloatingPointError`` before the weights change.
    """
    device = next(model.parameters()).device
    model.train()
    batch = {k: v.to(device) for k, v in batch.items()}
    with hardware.autocast(device, bf16):
        outputs = model(**batch)
        loss = outputs.loss
        if loss is None:
            raise ValueError("the model returned no loss: does the batch contain 'labels'?")
        extra = None
        if extra_loss is not None:
            extra = extra_loss(model, batch, outputs)
            if not isinstance(extra, Tensor) or extra.dim() != 0:
                raise ValueError("extra_loss must return a scalar tensor (a 0-dim torch.Tensor)")
            loss = loss + extra
    if not torch.isfinite(loss.detach()):
        raise FloatingPointError(f"the loss is {float(loss.detach())}: lower the learning rate, or check the "
                                 "inputs and the extra loss term")
    loss.backward()
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not params:
        raise ValueError("no parameter of the optimizer received a gradient")
    if max_grad_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    else:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    if not torch.isfinite(norm):
        raise FloatingPointError(f"the gradient norm is {float(norm)}: no update was made")
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()
    return StepOutput(float(loss.detach()), float(norm), None if extra is None else float(extra.detach()))


def _make_batches(examples: Sequence[Mapping[str, Any]], config: TrainConfig, epoch: int) -> list[np.ndarray]:
    seed = config.seed * 1000 + epoch
    if config.bucket_by_length:
        return length_bucketed_batches([len(e["input_ids"]) for e in examples], config.batch_size, seed=seed)
    return random_batches(len(examples), config.batch_size, seed=seed)


def _select_trainable(model: nn.Module, trainable: Callable[[str, nn.Parameter], bool]) -> None:
    chosen = 0
    for name, param in model.named_parameters():
        keep = bool(trainable(name, param))
        param.requires_grad_(keep)
        chosen += keep
    if not chosen:
        raise ValueError("trainable() selected no parameter: nothing would train")


def fit(model: nn.Module, train_examples: Sequence[Mapping[str, Any]], config: TrainConfig, *,
        pad_token_id: int, eval_fn: Callable[[nn.Module], float] | None = None,
        optimizer: torch.optim.Optimizer | None = None,
        trainable: Callable[[str, nn.Parameter], bool] | None = None,
        extra_loss: ExtraLoss | None = None,
        on_epoch_end: Callable[[int, nn.Module, EpochRecord], bool | None] | None = None,
        progress: bool = True, log: Callable[[str], None] | None = print) -> TrainResult:
    """Fine-tune ``model`` on encoded examples with AdamW, warmup + linear decay and gradient clipping.

    After every epoch ``eval_fn(model)`` scores the model on validation data (higher is better).
    With ``config.patience`` set, training stops once the score has not *strictly* improved for
    that many epochs, and the weights of the best epoch are put back. The tie rule: an epoch
    that only equals the best score does not count as an improvement, so of tied epochs the
    earliest is kept. With ``config.patience=None`` every epoch runs, the model keeps the last
    epoch's weights, and ``best_score`` is that epoch's score. Without ``eval_fn`` the model
    simply trains for ``config.epochs`` epochs. Seeds the batch order and dropout from
    ``config.seed``. The hooks (``trainable``, ``extra_loss``, ``on_epoch_end``) are described
    in the module docstring. With a ready ``optimizer``, ``config.lr`` and ``config.weight_decay``
    are not used (the optimizer's own settings are), and every parameter that requires a gradient
    must be in it. A validation score that is not finite raises ``FloatingPointError``.
    """
    from tqdm.auto import tqdm

    if len(train_examples) == 0:
        raise ValueError("no training examples")
    if trainable is not None and optimizer is not None:
        raise ValueError("pass either trainable (fit builds the optimizer) or a ready optimizer, not both")
    if trainable is not None:
        _select_trainable(model, trainable)
    if optimizer is not None:
        in_optimizer = {id(p) for g in optimizer.param_groups for p in g["params"]}
        outside = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in in_optimizer]
        if outside:
            raise ValueError(f"{len(outside)} trainable parameters are not in the optimizer (e.g. {outside[0]}); "
                             "freeze them (requires_grad_(False)) or add them to the optimizer")
    model.zero_grad(set_to_none=True)  # no gradient left over from earlier cells leaks into the first update
    torch.manual_seed(config.seed)
    steps_per_epoch = len(_make_batches(train_examples, config, 0))
    total_steps = steps_per_epoch * config.epochs
    optimizer = optimizer or make_optimizer(model, config.lr, config.weight_decay)
    warmup = math.ceil(config.warmup_ratio * total_steps)
    scheduler = lambda_schedule(optimizer, lambda step: warmup_linear_factor(step, warmup, total_steps))
    pad = int(pad_token_id)
    history: list[EpochRecord] = []
    best_score, best_epoch, best_state, since_best = None, config.epochs, None, 0
    steps: list[StepRecord] = []
    seen, train_seconds, stopped = 0, 0.0, False
    bar = tqdm(total=total_steps, desc="fine-tuning", disable=not progress, leave=False)
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        losses, norms = [], []
        for idx in _make_batches(train_examples, config, epoch - 1):
            lr = optimizer.param_groups[0]["lr"]
            loss, norm, extra = train_step(model, pad_batch([train_examples[i] for i in idx], pad), optimizer,
                                           scheduler, max_grad_norm=config.max_grad_norm, bf16=config.bf16,
                                           extra_loss=extra_loss)
            clipped = config.max_grad_norm is not None and norm > config.max_grad_norm
            steps.append(StepRecord(len(steps), epoch, loss, extra, lr, norm, bool(clipped)))
            losses.append(loss)
            norms.append(norm)
            seen += len(idx)
            bar.update(1)
        train_seconds += time.perf_counter() - start
        score = float(eval_fn(model)) if eval_fn is not None else None
        record = EpochRecord(epoch, float(np.mean(losses)), score, time.perf_counter() - start,
                             float(np.mean(norms)))
        history.append(record)
        if log is not None:
            shown = f"{score:.4f}" if score is not None else "-"
            log(f"epoch {epoch}: train loss {np.mean(losses):.4f}   validation {shown}   "
                f"({time.perf_counter() - start:.0f} s)")
        patience_ran_out = False
        if score is not None:
            if not np.isfinite(score):
                raise FloatingPointError(f"eval_fn returned {score} after epoch {epoch}: a score must be finite")
            if best_score is None or score > best_score:
                best_score, best_epoch, since_best = score, epoch, 0
                best_state = copy.deepcopy(model.state_dict()) if config.patience is not None else None
            else:
                since_best += 1
                patience_ran_out = config.patience is not None and since_best >= config.patience
        # the hook runs after the best weights were saved, so a hook that changes the weights
        # cannot change what is restored
        stop_now = bool(on_epoch_end(epoch, model, record)) if on_epoch_end is not None else False
        if patience_ran_out or stop_now:
            stopped = epoch < config.epochs
            break
    bar.close()
    if best_state is not None and best_epoch != history[-1].epoch:
        model.load_state_dict(best_state)
        if log is not None:
            log(f"restored the weights of epoch {best_epoch} (validation {best_score:.4f})")
    if eval_fn is None or config.patience is None:
        best_epoch = history[-1].epoch
        best_score = history[-1].val_score
    model.eval()
    return TrainResult(history, best_epoch, best_score, train_seconds, seen, steps, stopped)
