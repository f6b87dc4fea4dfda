"""A small GPT, written out by hand, and what it takes to pretrain and evaluate it.

Defined in chapter 1 (pretraining) and reused later:

- :class:`CharTokenizer`: characters to ids and back
- :class:`GPTConfig`, :class:`CausalSelfAttention`, :class:`MLP`, :class:`Block`, :class:`GPT`:
  a GPT-2-style decoder (pre-LayerNorm blocks, learned positions, tied embeddings)
- :func:`param_count_formula`, :func:`flops_per_token`: the bookkeeping behind scaling laws
- :class:`PretrainConfig`, :func:`get_batch`, :func:`train_lm`: the pretraining loop (AdamW,
  linear warmup, cosine decay and gradient clipping, all from :mod:`llmbook.optim`)
- :func:`evaluate_loss`, :func:`sliding_window_nll`: tokenizer-independent evaluation (with
  :func:`llmbook.losses.bits_per_char`)
- :func:`mlm_mask`: the BERT masking rule (15 %, then 80/10/10)
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from llmbook.losses import IGNORE_INDEX
from llmbook.optim import make_optimizer, warmup_cosine_lr

# --------------------------------------------------------------------------- tokenizer


class CharTokenizer:
    """One id per character, in sorted order of the characters seen when it was built.

    With ``unk=None`` (the default) encoding a character outside the vocabulary raises
    ``ValueError``; with ``unk="<c>"`` such characters map to that (added) character's id.
    """

    def __init__(self, chars: Iterable[str], unk: str | None = None) -> None:
        vocab = sorted(set(chars))
        if any(len(c) != 1 for c in vocab):
            raise ValueError("CharTokenizer takes single characters")
        if unk is not None:
            if len(unk) != 1:
                raise ValueError(f"unk must be a single character, got {unk!r}")
            if unk not in vocab:
                vocab.append(unk)
        if not vocab:
            raise ValueError("CharTokenizer needs at least one character")
        self.itos: list[str] = vocab
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(vocab)}
        self.unk = unk

    @classmethod
    def from_text(cls, text: str, unk: str | None = None) -> CharTokenizer:
        """Build the vocabulary from the characters of ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return cls(text, unk=unk)

    @property
    def vocab_size(self) -> int:
        return len(self.itos)

    def encode(self, text: str) -> list[int]:
        """Ids of the characters of ``text``."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if self.unk is None:
            unknown = sorted(set(text) - self.stoi.keys())
            if unknown:
                raise ValueError(f"characters not in the vocabulary: {unknown!r} (build with unk=... to map them)")
            return [self.stoi[c] for c in text]
        unk_id = self.stoi[self.unk]
        return [self.stoi.get(c, unk_id) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """The characters of ``ids`` (a list or a 1-D tensor)."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        out = []
        for i in ids:
            if not 0 <= int(i) < len(self.itos):
                raise ValueError(f"id {i} is outside the vocabulary (size {len(self.itos)})")
            out.append(self.itos[int(i)])
        return "".join(out)


# --------------------------------------------------------------------------- model


@dataclass
class GPTConfig:
    """Size of a GPT. ``causal=False`` removes the attention mask (only to show why it is needed)."""

    vocab_size: int
    block_size: int = 64
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.0
    bias: bool = True
    attention: str = "sdpa"  # "sdpa" (fused PyTorch kernel) or "manual" (written out, same result)
    causal: bool = True

    def __post_init__(self) -> None:
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        if self.attention not in ("sdpa", "manual"):
            raise ValueError(f"attention must be 'sdpa' or 'manual', got {self.attention!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")


def causal_mask(t: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``(t, t)`` boolean mask, True where query position i may attend to key position j (j <= i)."""
    if t < 1:
        raise ValueError(f"sequence length must be positive, got {t}")
    return torch.ones(t, t, dtype=torch.bool, device=device).tril()


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where each position sees only itself and earlier positions."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v in one matmul
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.attention, self.causal = config.attention, config.causal

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)
        # (b, t, c) -> (b, heads, t, head_dim)
        q, k, v = (z.view(b, t, self.n_head, c // self.n_head).transpose(1, 2) for z in (q, k, v))
        p = self.dropout if self.training else 0.0
        if self.attention == "sdpa":
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=self.causal)
        else:
            scores = q @ k.transpose(-2, -1) / math.sqrt(k.size(-1))  # (b, heads, t, t)
            if self.causal:
                scores = scores.masked_fill(~causal_mask(t, x.device), float("-inf"))
            weights = F.dropout(scores.softmax(dim=-1), p=p)
            y = weights @ v
        y = y.transpose(1, 2).contiguous().view(b, t, c)  # heads side by side again
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward network: d -> 4d -> GELU -> d."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU(approximate="tanh")  # GPT-2's GELU
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))


class Block(nn.Module):
    """One transformer block, pre-LayerNorm as in GPT-2: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token + position embeddings, ``n_layer`` blocks, final LayerNorm, tied output layer."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = nn.Embedding(config.block_size, config.n_embd)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.lm_head.weight = self.wte.weight  # weight tying: one matrix embeds and un-embeds
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale residual projections by 1/sqrt(2 n_layer)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def hidden_states(self, idx: torch.Tensor) -> torch.Tensor:
        """Final hidden states ``(b, t, n_embd)`` after ``ln_f``."""
        if idx.dim() != 2:
            raise ValueError(f"idx must have shape (batch, time), got {tuple(idx.shape)}")
        t = idx.size(1)
        if t > self.config.block_size:
            raise ValueError(f"sequence length {t} exceeds block_size {self.config.block_size}")
        pos = torch.arange(t, device=idx.device)
        x = self.drop(self.wte(idx) + self.wpe(pos))
        for block in self.h:
            x = block(x)
        return self.ln_f(x)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``(b, t, vocab)`` and, if ``targets`` are given, the mean cross-entropy (nats).

        ``targets[b, i]`` is the token that should follow ``idx[b, :i+1]``; positions with
        label -100 do not count.
        """
        logits = self.lm_head(self.hidden_states(idx))
        if targets is None:
            return logits, None
        if targets.shape != idx.shape:
            raise ValueError(f"targets shape {tuple(targets.shape)} differs from idx shape {tuple(idx.shape)}")
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
        return logits, loss

    @torch.no_grad()
    def generate(self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
                 top_k: int | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
        """Sample ``max_new_tokens`` tokens after ``idx`` (b, t), one at a time."""
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.block_size:]
            logits = self(context)[0][:, -1, :] / temperature
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            nxt = torch.multinomial(logits.softmax(dim=-1), 1, generator=generator)
            idx = torch.cat([idx, nxt], dim=1)
        return idx


# --------------------------------------------------------------------------- bookkeeping


def count_parameters(model: nn.Module) -> int:
    """Number of distinct parameter values (a tied matrix counts once)."""
    return sum(p.numel() for p in model.parameters())


def param_count_formula(config: GPTConfig) -> int:
    """Parameters of :class:`GPT`: ``V d + T d + L (12 d^2 + 13 d) + 2 d`` (with biases).

    Per block: attention ``4 d^2 + 4 d`` (q, k, v, output projection), MLP ``8 d^2 + 5 d``,
    two LayerNorms ``4 d``. The output layer is tied to the token embedding.
    """
    v, t, n_layer, d = config.vocab_size, config.block_size, config.n_layer, config.n_embd
    if config.bias:
        return v * d + t * d + n_layer * (12 * d * d + 13 * d) + 2 * d
    return v * d + t * d + n_layer * (12 * d * d + 2 * d) + d


def non_embedding_params(config: GPTConfig) -> int:
    """``N`` of the scaling-law papers: parameters outside the token and position embeddings."""
    return param_count_formula(config) - (config.vocab_size + config.block_size) * config.n_embd


def flops_per_token(config: GPTConfig, *, training: bool = True, seq_len: int | None = None) -> int:
    """Matrix-multiply FLOPs per token for a sequence of ``seq_len`` (default ``block_size``) tokens.

    Forward: ``2 * 12 L d^2`` (weights), ``+ 4 L T d`` (q k^T and weights @ v over the full
    T x T square, as dense kernels compute it), ``+ 2 d V`` (output layer). A backward pass
    costs twice a forward, so training is 3 x forward; dropping the attention and output
    terms gives the ``6 N`` rule.
    """
    t = config.block_size if seq_len is None else seq_len
    if t < 1:
        raise ValueError(f"seq_len must be positive, got {t}")
    n_layer, d, v = config.n_layer, config.n_embd, config.vocab_size
    forward = 2 * 12 * n_layer * d * d + 4 * n_layer * t * d + 2 * d * v
    return 3 * forward if training else forward


# --------------------------------------------------------------------------- training


def get_batch(ids: torch.Tensor, batch_size: int, block_size: int,
              generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Random windows ``x`` of ``block_size`` tokens and their targets ``y`` (``x`` shifted left by one)."""
    if ids.dim() != 1:
        raise ValueError(f"ids must be 1-D, got shape {tuple(ids.shape)}")
    if len(ids) <= block_size:
        raise ValueError(f"need more than block_size={block_size} tokens, got {len(ids)}")
    starts = torch.randint(len(ids) - block_size, (batch_size,), generator=generator)
    offsets = torch.arange(block_size)
    x = ids[starts[:, None] + offsets]
    y = ids[starts[:, None] + offsets + 1]
    return x, y


@torch.no_grad()
def evaluate_loss(model: GPT, ids: torch.Tensor, *, batch_size: int, n_batches: int, seed: int = 0) -> float:
    """Mean cross-entropy (nats per token) over ``n_batches`` fixed random windows of ``ids``.

    The windows depend only on ``seed``, so successive evaluations are comparable.
    """
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    losses = []
    for _ in range(n_batches):
        x, y = get_batch(ids, batch_size, model.config.block_size, gen)
        losses.append(model(x.to(device), y.to(device))[1].item())
    model.train(was_training)
    return float(sum(losses) / len(losses))


@dataclass
class PretrainConfig:
    """Optimisation settings of :func:`train_lm` (defaults: nanoGPT's shakespeare_char recipe)."""

    max_steps: int = 2000
    batch_size: int = 12
    lr: float = 1e-3
    min_lr: float = 1e-4
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.99)
    max_grad_norm: float | None = 1.0
    eval_interval: int = 250
    eval_batches: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if self.max_steps < 1 or self.batch_size < 1 or self.eval_interval < 1 or self.eval_batches < 1:
            raise ValueError("max_steps, batch_size, eval_interval and eval_batches must be positive")
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"max_grad_norm must be positive or None, got {self.max_grad_norm}")


def train_lm(model: GPT, train_ids: torch.Tensor, val_ids: torch.Tensor, cfg: PretrainConfig, *,
             on_eval: Callable[[int, GPT], None] | None = None, progress: bool = True,
             desc: str = "training") -> list[dict]:
    """Pretrain ``model`` on next-token prediction; return one record per evaluation.

    Each step: a random batch, AdamW (:func:`llmbook.optim.make_optimizer`) with the learning
    rate of :func:`llmbook.optim.warmup_cosine_lr`, gradients clipped to global norm
    ``max_grad_norm``. Every ``eval_interval`` steps (and at the end) the record holds the step,
    tokens seen, the learning rate of step ``step`` (the next update's; ``min_lr`` in the final
    record, after the last update), mean training loss since the last evaluation, validation
    loss on fixed windows, the last gradient norm before clipping, the share of steps since the
    last evaluation whose gradient was clipped, and elapsed seconds; ``on_eval(step, model)`` is
    then called (e.g. to print a sample). ``train_ids``/``val_ids`` stay on the CPU; batches move
    to the model's device. (The step-based loop of pretraining; fine-tuning's epoch loop with
    hooks is :func:`llmbook.training.fit`.)
    """
    from tqdm.auto import tqdm

    gen = torch.Generator().manual_seed(cfg.seed)
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay, betas=cfg.betas, fused=False)
    block = model.config.block_size
    history: list[dict] = []
    device = next(model.parameters()).device
    running, n_running, n_clipped, grad_norm = 0.0, 0, 0, float("nan")
    start = time.perf_counter()
    model.train()
    bar = tqdm(total=cfg.max_steps, desc=desc, disable=not progress, mininterval=2.0)
    for step in range(cfg.max_steps + 1):
        if step % cfg.eval_interval == 0 or step == cfg.max_steps:
            val = evaluate_loss(model, val_ids, batch_size=cfg.batch_size, n_batches=cfg.eval_batches,
                                seed=cfg.seed + 1)
            history.append({"step": step, "tokens": step * cfg.batch_size * block,
                            "lr": warmup_cosine_lr(step, max_lr=cfg.lr, min_lr=cfg.min_lr,
                                                    warmup_steps=cfg.warmup_steps, total_steps=cfg.max_steps),
                            "train_loss": running / n_running if n_running else float("nan"),
                            "val_loss": val, "grad_norm": grad_norm,
                            "clipped_share": n_clipped / n_running if n_running else float("nan"),
                            "seconds": time.perf_counter() - start})
            running, n_running, n_clipped = 0.0, 0, 0
            bar.set_postfix(val_loss=f"{val:.3f}")
            if on_eval is not None:
                on_eval(step, model)
            model.train()
        if step == cfg.max_steps:
            break
        lr = warmup_cosine_lr(step, max_lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=cfg.warmup_steps,
                              total_steps=cfg.max_steps)
        for group in opt.param_groups:
            group["lr"] = lr
        x, y = get_batch(train_ids, cfg.batch_size, block, gen)
        _, loss = model(x.to(device), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.max_grad_norm is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm))
            n_clipped += grad_norm > cfg.max_grad_norm
        else:  # the norm only, for the record: an infinite limit rescales nothing
            grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")))
        opt.step()
        running += loss.item()
        n_running += 1
        bar.update(1)
    bar.close()
    model.eval()
    return history


# --------------------------------------------------------------------------- evaluation


@torch.no_grad()
def sliding_window_nll(logits_fn: Callable[[torch.Tensor], torch.Tensor], ids: Sequence[int] | torch.Tensor, *,
                       window: int, stride: int, first_scored: int = 1, batch_size: int = 8,
                       progress: bool = False) -> tuple[float, int]:
    """Summed negative log-likelihood (nats) of ``ids[first_scored:]`` under a causal LM.

    ``logits_fn`` maps a ``(batch, t)`` id tensor (t <= ``window``) to ``(batch, t, vocab)``
    logits. Windows of at most ``window`` tokens advance by ``stride``; each window scores
    only its last ``stride`` tokens, so every scored token sees at least ``window - stride``
    tokens of context (or everything before it). Tokens before ``first_scored`` are context
    only. Returns ``(total_nats, n_scored_tokens)``.
    """
    ids = torch.as_tensor(ids, dtype=torch.long)
    if ids.dim() != 1:
        raise ValueError(f"ids must be 1-D, got shape {tuple(ids.shape)}")
    if not 0 < stride < window:
        raise ValueError(f"need 0 < stride < window, got stride={stride}, window={window}")
    if not 1 <= first_scored < len(ids):
        raise ValueError(f"first_scored must be in [1, {len(ids) - 1}], got {first_scored}")
    spans = []  # (begin, end, score_from): run ids[begin:end], score ids[score_from:end]
    score_from = first_scored
    while score_from < len(ids):
        end = min(score_from + stride, len(ids))
        spans.append((max(0, end - window), end, score_from))
        score_from = end
    total, count = 0.0, 0
    groups: dict[int, list[tuple[int, int, int]]] = {}
    for span in spans:  # windows of equal length run as one batch
        groups.setdefault(span[1] - span[0], []).append(span)
    from tqdm.auto import tqdm

    batches = [g[i:i + batch_size] for g in groups.values() for i in range(0, len(g), batch_size)]
    for batch in tqdm(batches, desc="scoring", disable=not progress, mininterval=2.0):
        x = torch.stack([ids[b:e] for b, e, _ in batch])
        logp = logits_fn(x).float().log_softmax(dim=-1)
        for row, (b, e, s) in enumerate(batch):
            # logits at position j (absolute b + j) predict token b + j + 1
            pred = logp[row, s - 1 - b:e - 1 - b]
            total -= pred.gather(1, ids[s:e, None].to(pred.device)).sum().item()
            count += e - s
    return total, count


# --------------------------------------------------------------------------- masked LM


def mlm_mask(input_ids: torch.Tensor, *, mask_token_id: int, vocab_size: int, mask_prob: float = 0.15,
             special_ids: Iterable[int] = (), generator: torch.Generator | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masking rule: choose ``mask_prob`` of the (non-special) positions as targets;
    of those, 80 % become ``mask_token_id``, 10 % a random token, 10 % stay unchanged.

    Returns ``(inputs, labels)``; ``labels`` is -100 wherever the position is not a target.
    """
    if not 0.0 < mask_prob < 1.0:
        raise ValueError(f"mask_prob must be in (0, 1), got {mask_prob}")
    if not 0 <= mask_token_id < vocab_size:
        raise ValueError(f"mask_token_id {mask_token_id} is outside the vocabulary (size {vocab_size})")
    input_ids = torch.as_tensor(input_ids, dtype=torch.long)
    probs = torch.full(input_ids.shape, mask_prob)
    special = torch.zeros(input_ids.shape, dtype=torch.bool)
    for sid in special_ids:
        special |= input_ids == sid
    probs[special] = 0.0
    chosen = torch.bernoulli(probs, generator=generator).bool()
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, IGNORE_INDEX))
    inputs = input_ids.clone()
    to_mask = chosen & torch.bernoulli(torch.full(input_ids.shape, 0.8), generator=generator).bool()
    inputs[to_mask] = mask_token_id
    # half of the remaining 20 % get a random token, the rest keep the original one
    to_random = chosen & ~to_mask & torch.bernoulli(torch.full(input_ids.shape, 0.5), generator=generator).bool()
    inputs[to_random] = torch.randint(vocab_size, input_ids.shape, generator=generator)[to_random]
    return inputs, labels
