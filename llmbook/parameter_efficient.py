"""Training a small part of a pretrained model: the parameter-efficient methods, written by hand.

Chapter 4 builds each method here, checks the library version against it where one exists
(``peft`` for LoRA), and measures them side by side:

- :class:`LoRALinear`, :func:`apply_lora`, :func:`merge_lora`: the low-rank update
  ``W x + (alpha / r) B A x`` with ``B`` initialised to zero, so the model starts exactly at the
  pretrained one; merged back into ``W`` for inference (Hu et al. 2022).
- :class:`BottleneckAdapter`, :func:`apply_adapters`: a down-projection, a non-linearity and a
  zero-initialised up-projection added after a sub-layer's output projection (Houlsby et al. 2019).
- :func:`selector`: ``trainable(name, parameter)`` rules for :func:`llmbook.training.fit`: the
  head only, BitFit (biases and head), the top ``k`` blocks, or the parameters the methods above
  added.
- :class:`IntrinsicDimension`: every weight reparametrised as ``theta_0 + P z`` with a fixed
  sparse random projection ``P`` and only the ``d`` numbers of ``z`` trained (Aghajanyan et
  al. 2021 measure the same with a Fastfood projection).
- :func:`count_parameters`: trainable and total parameter counts.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

__all__ = ["LoRALinear", "apply_lora", "merge_lora", "BottleneckAdapter", "apply_adapters", "HEAD_PREFIXES",
           "selector", "IntrinsicDimension", "count_parameters"]

HEAD_PREFIXES = ("classifier.", "score.")


# --------------------------------------------------------------------------- LoRA


class LoRALinear(nn.Module):
    """A frozen ``nn.Linear`` plus a trainable low-rank update: ``y = W x + b + (alpha / r) B A x``.

    ``A`` (``r x in``) starts from the same Kaiming-uniform draw as a ``Linear`` layer's weight
    (as in the ``peft`` library), ``B`` (``out x r``) at zero, so the wrapped layer computes
    exactly what the original did until ``B`` trains. ``dropout`` applies to the input of the
    low-rank path only.
    """

    def __init__(self, base: nn.Linear, r: int, alpha: float, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRA wraps an nn.Linear, got {type(base).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"rank r must be a positive int, got {r!r}")
        if not alpha > 0:
            raise ValueError(f"alpha must be > 0, got {alpha}")
        if not 0 <= dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1), got {dropout}")
        self.base = base
        for p in self.base.parameters():
            p.requires_grad_(False)
        self.r, self.alpha, self.scaling = r, float(alpha), float(alpha) / r
        device, dtype = base.weight.device, base.weight.dtype
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=device, dtype=dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def delta_weight(self) -> Tensor:
        """The update ``(alpha / r) B A`` as a full ``out x in`` matrix."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: Tensor) -> Tensor:
        return self.base(x) + self.scaling * ((self.dropout(x) @ self.lora_A.T) @ self.lora_B.T)

    def merged(self) -> nn.Linear:
        """A plain ``nn.Linear`` with ``W + (alpha / r) B A``: the same function, no extra cost."""
        out = nn.Linear(self.base.in_features, self.base.out_features, bias=self.base.bias is not None,
                        device=self.base.weight.device, dtype=self.base.weight.dtype)
        with torch.no_grad():
            out.weight.copy_(self.base.weight + self.delta_weight())
            if self.base.bias is not None:
                out.bias.copy_(self.base.bias)
        return out


def _matching_linears(model: nn.Module, target_modules: Sequence[str]) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, layer) for every nn.Linear whose own name is in ``target_modules``."""
    if isinstance(target_modules, str) or not target_modules:
        raise ValueError(f"target_modules must be a non-empty list of module names, got {target_modules!r}")
    found = []
    for parent_name, parent in model.named_modules():
        for attr, child in parent.named_children():
            full = f"{parent_name}.{attr}" if parent_name else attr
            if attr in target_modules and isinstance(child, nn.Linear) and not full.startswith(HEAD_PREFIXES):
                found.append((parent, attr, child))
    return found


def apply_lora(model: nn.Module, target_modules: Sequence[str] = ("query", "value"), *, r: int = 8,
               alpha: float = 8.0, dropout: float = 0.0) -> int:
    """Wrap every ``nn.Linear`` named in ``target_modules`` (e.g. BERT's ``query``, ``value``)
    in a :class:`LoRALinear`, in place; returns how many layers were wrapped.

    A name that matches no linear layer raises, so a typo cannot silently train nothing. The
    head (``classifier.``) is never wrapped. Freezing the rest is the job of
    ``selector("lora")`` (or ``fit(trainable=...)``).
    """
    found = _matching_linears(model, target_modules)
    names = {attr for _, attr, _ in found}
    missing = sorted(set(target_modules) - names)
    if missing:
        raise ValueError(f"no nn.Linear named {missing} in the model (wrapped {sorted(names) or 'nothing'})")
    for parent, attr, child in found:
        setattr(parent, attr, LoRALinear(child, r, alpha, dropout))
    return len(found)


def merge_lora(model: nn.Module) -> int:
    """Replace every :class:`LoRALinear` by its merged ``nn.Linear``, in place; returns how many."""
    merged = 0
    for parent in list(model.modules()):
        for attr, child in list(parent.named_children()):
            if isinstance(child, LoRALinear):
                setattr(parent, attr, child.merged())
                merged += 1
    if not merged:
        raise ValueError("the model has no LoRALinear layer to merge")
    return merged


# --------------------------------------------------------------------------- adapters


class BottleneckAdapter(nn.Module):
    """A sub-layer's output projection followed by a residual bottleneck:
    ``h = proj(x); h + up(gelu(down(h)))``, with ``up`` initialised to zero (the identity at start)."""

    def __init__(self, proj: nn.Linear, bottleneck: int) -> None:
        super().__init__()
        if not isinstance(proj, nn.Linear):
            raise TypeError(f"an adapter follows an nn.Linear, got {type(proj).__name__}")
        if isinstance(bottleneck, bool) or not isinstance(bottleneck, int) or bottleneck < 1:
            raise ValueError(f"bottleneck must be a positive int, got {bottleneck!r}")
        self.proj = proj
        for p in self.proj.parameters():
            p.requires_grad_(False)
        d = proj.out_features
        self.adapter_down = nn.Linear(d, bottleneck, device=proj.weight.device, dtype=proj.weight.dtype)
        self.adapter_up = nn.Linear(bottleneck, d, device=proj.weight.device, dtype=proj.weight.dtype)
        nn.init.zeros_(self.adapter_up.weight)
        nn.init.zeros_(self.adapter_up.bias)

    def forward(self, x: Tensor) -> Tensor:
        h = self.proj(x)
        return h + self.adapter_up(nn.functional.gelu(self.adapter_down(h)))


_BERT_SUBLAYER_OUTPUTS = re.compile(r"(?:^|\.)layer\.\d+\.(?:attention\.output|output)$")


def apply_adapters(model: nn.Module, bottleneck: int = 64) -> int:
    """Add a :class:`BottleneckAdapter` after the output projection (``dense``) of both sub-layers
    (attention and feed-forward) of every BERT-style block, before the residual sum and LayerNorm,
    as Houlsby et al. place them. Returns how many adapters were added."""
    added = 0
    for name, module in list(model.named_modules()):
        if _BERT_SUBLAYER_OUTPUTS.search(name) and isinstance(getattr(module, "dense", None), nn.Linear):
            module.dense = BottleneckAdapter(module.dense, bottleneck)
            added += 1
    if not added:
        raise ValueError("found no BERT-style sub-layer output (layer.N.attention.output / layer.N.output)")
    return added


# --------------------------------------------------------------------------- which parameters train


_LAYER_INDEX = re.compile(r"(?:^|\.)layer\.(\d+)\.")
SELECTORS = ("full", "head", "bitfit", "top", "lora", "adapter")


def selector(kind: str, *, n_layers: int | None = None, k: int | None = None) -> Callable[[str, nn.Parameter], bool]:
    """A ``trainable(name, parameter)`` rule for :func:`llmbook.training.fit`.

    - ``"full"``: everything; ``"head"``: the classifier head only (a probe trained end to end);
    - ``"bitfit"``: every bias and the head (Ben Zaken et al. 2022);
    - ``"top"``: the top ``k`` of ``n_layers`` blocks, the pooler and the head;
    - ``"lora"`` / ``"adapter"``: the parameters :func:`apply_lora` / :func:`apply_adapters` added, and the head.
    """
    if kind not in SELECTORS:
        raise ValueError(f"kind must be one of {SELECTORS}, got {kind!r}")
    if kind == "top":
        if not (isinstance(n_layers, int) and isinstance(k, int) and 1 <= k <= n_layers):
            raise ValueError(f"'top' needs 1 <= k <= n_layers, got k={k!r}, n_layers={n_layers!r}")

    def head(name: str) -> bool:
        return name.startswith(HEAD_PREFIXES)

    def trainable(name: str, parameter: nn.Parameter) -> bool:
        if kind == "full":
            return True
        if head(name):
            return True
        if kind == "bitfit":
            return name.endswith(".bias")
        if kind == "top":
            match = _LAYER_INDEX.search(name)
            return "pooler." in name or (match is not None and int(match.group(1)) >= n_layers - k)
        if kind == "lora":
            return ".lora_A" in name or ".lora_B" in name
        if kind == "adapter":
            return ".adapter_down." in name or ".adapter_up." in name
        return False

    return trainable


# --------------------------------------------------------------------------- intrinsic dimension


class IntrinsicDimension(nn.Module):
    """Train ``d`` numbers instead of the model's ``D`` weights: ``theta = theta_0 + P z``.

    ``P`` (``D x d``) is a fixed sparse random projection: weight ``i`` is tied to one coordinate
    ``h(i)`` of ``z`` with a random sign, scaled so that each column of ``P`` has unit norm (a
    count-sketch projection, about ``D / d`` weights per coordinate; Aghajanyan et al. use the denser Fastfood
    transform). ``z`` starts at 0, so the wrapped model starts exactly at ``theta_0``. Only ``z``
    is a parameter; the model's own weights are buffers of this module and never change.
    Calling the module calls the model with ``theta_0 + P z`` through ``torch.func.functional_call``.
    """

    def __init__(self, model: nn.Module, d: int, *, seed: int = 0) -> None:
        super().__init__()
        if isinstance(d, bool) or not isinstance(d, int) or d < 1:
            raise ValueError(f"d must be a positive int, got {d!r}")
        self.model = model
        named = [(n, p) for n, p in model.named_parameters()]
        for _, p in named:
            p.requires_grad_(False)
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.sizes = [p.numel() for _, p in named]
        total = sum(self.sizes)
        if d > total:
            raise ValueError(f"d = {d} exceeds the model's {total} weights")
        self.D, self.d = total, d
        device = named[0][1].device
        g = torch.Generator().manual_seed(int(seed))
        self.register_buffer("index", torch.randint(0, d, (total,), generator=g).to(device), persistent=False)
        index = self.index.cpu()
        sign = torch.randint(0, 2, (total,), generator=g).to(torch.float32) * 2 - 1
        per_column = torch.bincount(index, minlength=d).clamp(min=1).to(torch.float32)
        self.register_buffer("coef", (sign / per_column[index].sqrt()).to(device), persistent=False)
        self.z = nn.Parameter(torch.zeros(d, device=device))

    def delta(self) -> Tensor:
        """``P z`` as one flat vector over every weight, in ``named_parameters`` order."""
        return _SketchProject.apply(self.z, self.index, self.coef)

    def forward(self, *args, **kwargs):
        from torch.func import functional_call

        base = dict(self.model.named_parameters())
        # one split (its backward is one concatenation), not a slice per tensor (each slice's
        # backward would write a full-length zero vector)
        pieces = torch.split(self.delta(), self.sizes)
        params = {name: base[name] + piece.view(shape).to(base[name].dtype)
                  for name, shape, piece in zip(self.names, self.shapes, pieces, strict=True)}
        return functional_call(self.model, params, args, kwargs)


class _SketchProject(torch.autograd.Function):
    """``z[index] * coef`` with a fast backward: ``P^T g`` as one scatter-add into ``d`` bins
    (the generic backward of indexing, an accumulating index_put, is many times slower)."""

    @staticmethod
    def forward(ctx, z: Tensor, index: Tensor, coef: Tensor) -> Tensor:
        ctx.save_for_backward(index, coef)
        ctx.d = z.shape[0]
        return z[index] * coef

    @staticmethod
    def backward(ctx, grad: Tensor):
        index, coef = ctx.saved_tensors
        grad_z = torch.zeros(ctx.d, dtype=grad.dtype, device=grad.device).scatter_add_(0, index, grad * coef)
        return grad_z, None, None


def count_parameters(model: nn.Module, trainable: Callable[[str, nn.Parameter], bool] | None = None) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts; ``trainable`` is a rule as from :func:`selector`
    (default: the parameters that require a gradient now)."""
    total = chosen = 0
    for name, p in model.named_parameters():
        total += p.numel()
        if (trainable(name, p) if trainable is not None else p.requires_grad):
            chosen += p.numel()
    return chosen, total
