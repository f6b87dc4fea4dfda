"""Full fine-tuning of a pretrained encoder with a plain PyTorch loop, and the helpers around it.

Chapter 3 builds every step by hand and then checks it against ``transformers.Trainer``:

- :func:`encode_texts`, :func:`encode_words`, :func:`align_labels_with_tokens`: tokenisation
  without padding (padding happens per batch), with NER labels aligned to sub-word tokens.
- :func:`pad_batch`, :func:`length_bucketed_batches`, :func:`random_batches`: dynamic padding
  and batches of similar length, so that little compute is spent on padding.
- :func:`make_optimizer`, :func:`warmup_linear_factor`, :func:`warmup_linear_schedule`:
  AdamW without weight decay on biases and normalisation weights; linear warmup, then linear decay.
- :func:`train_step`, :func:`fit`: one update with gradient clipping and optional bf16 autocast;
  the loop that evaluates on validation after every epoch, stops early and restores the best weights.
- :func:`predict_logits`, :func:`predict_labels`, :func:`accuracy`, :func:`word_level_tags`:
  evaluation helpers that return predictions in the order of the input.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

IGNORE_INDEX = -100

__all__ = [
    "IGNORE_INDEX", "encode_texts", "align_labels_with_tokens", "encode_words", "pad_batch",
    "random_batches", "length_bucketed_batches", "padding_fraction", "make_optimizer",
    "warmup_linear_factor", "warmup_linear_schedule", "TrainConfig", "EpochRecord", "TrainResult",
    "train_step", "fit", "predict_logits", "predict_labels", "accuracy", "word_level_tags",
]


# --------------------------------------------------------------------------- tokenisation


def encode_texts(tokenizer: Any, texts: Sequence[str], labels: Sequence[int] | None = None, *,
                 max_length: int = 64) -> list[dict[str, Any]]:
    """Tokenise sentences without padding: one ``{"input_ids", "labels"?}`` dict per sentence.

    Sequences longer than ``max_length`` tokens (special tokens included) are truncated;
    padding is left to :func:`pad_batch`, which pads each batch only to its own longest sequence.
    """
    if isinstance(texts, str):
        raise TypeError("encode_texts() takes a list of texts, not a single string")
    texts = list(texts)
    if labels is not None and len(labels) != len(texts):
        raise ValueError(f"got {len(texts)} texts but {len(labels)} labels")
    if max_length < 2:
        raise ValueError(f"max_length must leave room for the special tokens, got {max_length}")
    ids = tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]
    if labels is None:
        return [{"input_ids": list(x)} for x in ids]
    return [{"input_ids": list(x), "labels": int(y)} for x, y in zip(ids, labels, strict=True)]


def align_labels_with_tokens(word_ids: Sequence[int | None], word_labels: Sequence[int],
                             label_all_subtokens: bool = False, *,
                             continuation_label: Mapping[int, int] | None = None) -> list[int]:
    """One label per token from one label per word.

    ``word_ids`` is what a fast tokenizer's ``BatchEncoding.word_ids()`` returns: the index of the
    word each token came from, or ``None`` for special tokens. Special tokens get
    :data:`IGNORE_INDEX` (-100, which the cross-entropy skips). The first sub-token of each word
    gets the word's label; the other sub-tokens get -100 by default, or, with
    ``label_all_subtokens=True``, a label too: the word's own, or ``continuation_label[label]``
    when that mapping is given (typically ``B-x`` -> ``I-x``, so that a word split in three reads
    ``B-x I-x I-x``).
    """
    word_ids = list(word_ids)
    n_words = len(word_labels)
    labels: list[int] = []
    previous: int | None = None
    for word in word_ids:
        if word is None:
            labels.append(IGNORE_INDEX)
        elif not 0 <= word < n_words:
            raise ValueError(f"word id {word} is out of range for {n_words} word labels")
        elif word != previous:
            labels.append(int(word_labels[word]))
        elif label_all_subtokens:
            label = int(word_labels[word])
            labels.append(int(continuation_label.get(label, label)) if continuation_label else label)
        else:
            labels.append(IGNORE_INDEX)
        previous = word
    return labels


def encode_words(tokenizer: Any, words: Sequence[Sequence[str]], word_labels: Sequence[Sequence[int]], *,
                 max_length: int = 128, label_all_subtokens: bool = False,
                 continuation_label: Mapping[int, int] | None = None) -> list[dict[str, Any]]:
    """Tokenise pre-split sentences (lists of words) and align their word labels to the tokens.

    Returns one ``{"input_ids", "labels"}`` dict per sentence, ``labels`` as long as ``input_ids``
    (see :func:`align_labels_with_tokens`). Needs a fast tokenizer, which knows each token's word.
    """
    words = [list(w) for w in words]
    if len(words) != len(word_labels):
        raise ValueError(f"got {len(words)} sentences but {len(word_labels)} label sequences")
    for i, (w, y) in enumerate(zip(words, word_labels, strict=True)):
        if len(w) != len(y):
            raise ValueError(f"sentence {i} has {len(w)} words but {len(y)} labels")
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError("encode_words needs a fast tokenizer (one that provides word_ids())")
    encoding = tokenizer(words, is_split_into_words=True, truncation=True, max_length=max_length)
    return [{"input_ids": list(encoding["input_ids"][i]),
             "labels": align_labels_with_tokens(encoding.word_ids(i), word_labels[i], label_all_subtokens,
                                                continuation_label=continuation_label)}
            for i in range(len(words))]


# --------------------------------------------------------------------------- batches


def pad_batch(examples: Sequence[Mapping[str, Any]], pad_token_id: int,
              label_pad_id: int = IGNORE_INDEX) -> dict[str, Tensor]:
    """Dynamic padding: pad a list of encoded examples to the longest one *in this batch*.

    Returns ``input_ids`` and ``attention_mask`` (1 on real tokens) of shape (batch, longest), and
    ``labels``: shape (batch,) for sentence labels, or (batch, longest) padded with ``label_pad_id``
    for token labels.
    """
    if not examples:
        raise ValueError("cannot pad an empty batch")
    longest = max(len(e["input_ids"]) for e in examples)
    ids = torch.full((len(examples), longest), int(pad_token_id), dtype=torch.long)
    mask = torch.zeros((len(examples), longest), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e["input_ids"])
        ids[i, :n] = torch.as_tensor(e["input_ids"], dtype=torch.long)
        mask[i, :n] = 1
    batch = {"input_ids": ids, "attention_mask": mask}
    has_labels = ["labels" in e for e in examples]
    if any(has_labels):
        if not all(has_labels):
            raise ValueError("some examples in the batch have labels and some do not")
        first = examples[0]["labels"]
        if isinstance(first, (int, np.integer)):
            batch["labels"] = torch.as_tensor([int(e["labels"]) for e in examples], dtype=torch.long)
        else:
            labels = torch.full((len(examples), longest), int(label_pad_id), dtype=torch.long)
            for i, e in enumerate(examples):
                if len(e["labels"]) != len(e["input_ids"]):
                    raise ValueError(f"example {i}: {len(e['labels'])} token labels for {len(e['input_ids'])} tokens")
                labels[i, :len(e["labels"])] = torch.as_tensor(e["labels"], dtype=torch.long)
            batch["labels"] = labels
    return batch


def _check_batch_args(n: int, batch_size: int) -> None:
    if n < 1:
        raise ValueError("need at least one example to make batches")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")


def random_batches(n: int, batch_size: int, *, seed: int = 0) -> list[np.ndarray]:
    """Shuffle ``range(n)`` and cut it into batches (the last one may be smaller)."""
    _check_batch_args(n, batch_size)
    order = np.random.default_rng(seed).permutation(n)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def length_bucketed_batches(lengths: Sequence[int], batch_size: int, *, seed: int = 0,
                            mega_batch_mult: int = 50) -> list[np.ndarray]:
    """Batches of examples of similar length, still in random order.

    Shuffle the examples, cut them into mega-batches of ``mega_batch_mult * batch_size``, sort each
    mega-batch by length, cut it into batches, then shuffle the batches. Each batch then needs
    little padding, while which examples meet in a batch, and the batch order, stay random
    (the scheme of ``transformers``' ``LengthGroupedSampler``, plus a final shuffle).
    """
    lengths = np.asarray(lengths)
    _check_batch_args(len(lengths), batch_size)
    if mega_batch_mult < 1:
        raise ValueError(f"mega_batch_mult must be >= 1, got {mega_batch_mult}")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lengths))
    size = mega_batch_mult * batch_size
    batches = []
    for start in range(0, len(order), size):
        mega = order[start:start + size]
        mega = mega[np.argsort(-lengths[mega], kind="stable")]
        batches.extend(mega[i:i + batch_size] for i in range(0, len(mega), batch_size))
    return [batches[i] for i in rng.permutation(len(batches))]


def padding_fraction(lengths: Sequence[int], batches: Sequence[Sequence[int]]) -> float:
    """Share of the padded (batch x longest) positions that are padding, over all batches."""
    lengths = np.asarray(lengths)
    padded = sum(len(b) * int(lengths[np.asarray(b)].max()) for b in batches)
    return 1.0 - float(sum(int(lengths[np.asarray(b)].sum()) for b in batches)) / padded


# --------------------------------------------------------------------------- optimiser and schedule


def _decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    from llmbook.losses import decay_parameter_groups

    return decay_parameter_groups(model, weight_decay)


def make_optimizer(model: nn.Module, lr: float, weight_decay: float = 0.01, *,
                   fused: bool | None = None) -> torch.optim.AdamW:
    """AdamW with ``weight_decay`` on weight matrices only (biases and LayerNorm weights get 0).

    ``fused=None`` uses the fused AdamW kernel where torch has one for the parameters' device
    (CPU and CUDA): one pass over memory per step instead of several.
    """
    if not lr > 0:
        raise ValueError(f"learning rate must be > 0, got {lr}")
    groups = _decay_groups(model, weight_decay)
    if fused is None:
        fused = all(p.device.type in ("cpu", "cuda") and p.dtype.is_floating_point
                    for g in groups for p in g["params"])
    return torch.optim.AdamW(groups, lr=lr, fused=fused)


def warmup_linear_factor(step: int, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier: ``step / warmup`` while warming up, then linear decay to 0 at ``total_steps``."""
    if total_steps < 1 or warmup_steps < 0 or warmup_steps > total_steps:
        raise ValueError(f"need 0 <= warmup_steps <= total_steps and total_steps >= 1, got {warmup_steps}, "
                         f"{total_steps}")
    if step < warmup_steps:
        return step / warmup_steps
    if total_steps == warmup_steps:
        return 1.0
    return max(0.0, (total_steps - step) / (total_steps - warmup_steps))


def warmup_linear_schedule(optimizer: torch.optim.Optimizer, warmup_steps: int,
                           total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """A scheduler that applies :func:`warmup_linear_factor` (call ``scheduler.step()`` after each update)."""
    warmup_linear_factor(0, warmup_steps, total_steps)  # validates the arguments now
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: warmup_linear_factor(step, warmup_steps, total_steps))


# --------------------------------------------------------------------------- the training loop


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
    eval_batch_size: int = 128
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.eval_batch_size < 1:
            raise ValueError("epochs, batch_size and eval_batch_size must be >= 1")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"warmup_ratio must lie in [0, 1), got {self.warmup_ratio}")
        if self.patience is not None and self.patience < 1:
            raise ValueError(f"patience must be >= 1 or None (no early stopping), got {self.patience}")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ValueError(f"max_grad_norm must be > 0 or None, got {self.max_grad_norm}")


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
    """The history of a :func:`fit` run and which epoch's weights the model holds now."""

    history: list[EpochRecord]
    best_epoch: int
    best_score: float | None
    train_seconds: float
    examples_seen: int
    step_losses: list[float] = field(default_factory=list)
    step_lrs: list[float] = field(default_factory=list)
    stopped_early: bool = False

    @property
    def examples_per_second(self) -> float:
        """Training throughput: examples through forward, backward and update per second."""
        return self.examples_seen / self.train_seconds if self.train_seconds > 0 else float("nan")

    def table(self):
        """The history as a pandas DataFrame, one row per epoch."""
        import pandas as pd

        return pd.DataFrame([vars(r) for r in self.history]).set_index("epoch")


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def train_step(model: nn.Module, batch: Mapping[str, Tensor], optimizer: torch.optim.Optimizer,
               scheduler: torch.optim.lr_scheduler.LRScheduler | None = None, *,
               max_grad_norm: float | None = 1.0, bf16: bool = False) -> tuple[float, float]:
    """One update: forward (under bf16 autocast if asked), backward, clip, step. Returns (loss, grad norm).

    The gradient norm is the one before clipping; clipping rescales all gradients together so
    that their global L2 norm is at most ``max_grad_norm``.
    """
    device = next(model.parameters()).device
    model.train()
    batch = {k: v.to(device) for k, v in batch.items()}
    with _autocast(device, bf16):
        loss = model(**batch).loss
    if loss is None:
        raise ValueError("the model returned no loss: does the batch contain 'labels'?")
    loss.backward()
    params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if max_grad_norm is not None:
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    else:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()
    return float(loss.detach()), float(norm)


def _make_batches(examples: Sequence[Mapping[str, Any]], config: TrainConfig, epoch: int) -> list[np.ndarray]:
    seed = config.seed * 1000 + epoch
    if config.bucket_by_length:
        return length_bucketed_batches([len(e["input_ids"]) for e in examples], config.batch_size, seed=seed)
    return random_batches(len(examples), config.batch_size, seed=seed)


def fit(model: nn.Module, train_examples: Sequence[Mapping[str, Any]], config: TrainConfig, *,
        pad_token_id: int, eval_fn: Callable[[nn.Module], float] | None = None,
        optimizer: torch.optim.Optimizer | None = None, progress: bool = True,
        log: Callable[[str], None] | None = print) -> TrainResult:
    """Fine-tune ``model`` on encoded examples with AdamW, warmup + linear decay and gradient clipping.

    After every epoch ``eval_fn(model)`` scores the model on validation data (higher is better).
    With ``config.patience`` set, training stops once the score has not improved for that many
    epochs, and the weights of the best epoch are put back. Without ``eval_fn`` the model simply
    trains for ``config.epochs`` epochs. Seeds the batch order and dropout from ``config.seed``.
    """
    from tqdm.auto import tqdm

    if len(train_examples) == 0:
        raise ValueError("no training examples")
    torch.manual_seed(config.seed)
    steps_per_epoch = len(_make_batches(train_examples, config, 0))
    total_steps = steps_per_epoch * config.epochs
    optimizer = optimizer or make_optimizer(model, config.lr, config.weight_decay)
    scheduler = warmup_linear_schedule(optimizer, math.ceil(config.warmup_ratio * total_steps), total_steps)
    pad = int(pad_token_id)
    history: list[EpochRecord] = []
    best_score, best_epoch, best_state, since_best = None, config.epochs, None, 0
    step_losses, step_lrs, seen, train_seconds, stopped = [], [], 0, 0.0, False
    bar = tqdm(total=total_steps, desc="fine-tuning", disable=not progress, leave=False)
    for epoch in range(1, config.epochs + 1):
        start = time.perf_counter()
        losses, norms = [], []
        for idx in _make_batches(train_examples, config, epoch - 1):
            step_lrs.append(optimizer.param_groups[0]["lr"])
            loss, norm = train_step(model, pad_batch([train_examples[i] for i in idx], pad), optimizer, scheduler,
                                    max_grad_norm=config.max_grad_norm, bf16=config.bf16)
            losses.append(loss)
            norms.append(norm)
            seen += len(idx)
            bar.update(1)
        train_seconds += time.perf_counter() - start
        step_losses.extend(losses)
        score = float(eval_fn(model)) if eval_fn is not None else None
        history.append(EpochRecord(epoch, float(np.mean(losses)), score, time.perf_counter() - start,
                                   float(np.mean(norms))))
        if log is not None:
            shown = f"{score:.4f}" if score is not None else "-"
            log(f"epoch {epoch}: train loss {np.mean(losses):.4f}   validation {shown}   "
                f"({time.perf_counter() - start:.0f} s)")
        if score is None:
            continue
        if best_score is None or score > best_score:
            best_score, best_epoch, since_best = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict()) if config.patience is not None else None
        else:
            since_best += 1
            if config.patience is not None and since_best >= config.patience:
                stopped = epoch < config.epochs
                break
    bar.close()
    if best_state is not None and best_epoch != history[-1].epoch:
        model.load_state_dict(best_state)
        if log is not None:
            log(f"restored the weights of epoch {best_epoch} (validation {best_score:.4f})")
    if eval_fn is None or config.patience is None:
        best_epoch = history[-1].epoch
    model.eval()
    return TrainResult(history, best_epoch, best_score, train_seconds, seen, step_losses, step_lrs, stopped)


# --------------------------------------------------------------------------- evaluation


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
    device = next(model.parameters()).device
    was_training = model.training
    model.train(train_mode)
    lengths = np.array([len(e["input_ids"]) for e in examples])
    order = np.argsort(-lengths, kind="stable")
    out: list[np.ndarray | None] = [None] * len(examples)
    try:
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = pad_batch([{"input_ids": examples[i]["input_ids"]} for i in idx], pad_token_id)
            with _autocast(device, bf16):
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
                    id2label: Mapping[int, str] | Sequence[str]) -> tuple[list[list[str]], list[list[str]]]:
    """Keep only the tokens that carry a label (not -100) and turn ids into tag names.

    With first-sub-token labelling this gives one predicted and one gold tag per word, the
    input that entity-level scoring (seqeval) expects.
    """
    if len(token_predictions) != len(token_labels):
        raise ValueError(f"{len(token_predictions)} predicted sequences for {len(token_labels)} label sequences")
    preds, golds = [], []
    for i, (p, y) in enumerate(zip(token_predictions, token_labels, strict=True)):
        p, y = np.asarray(p), np.asarray(y)
        if p.shape != y.shape:
            raise ValueError(f"sequence {i}: {p.shape[0]} predictions for {y.shape[0]} labels")
        keep = y != IGNORE_INDEX
        preds.append([id2label[int(t)] for t in p[keep]])
        golds.append([id2label[int(t)] for t in y[keep]])
    return preds, golds
