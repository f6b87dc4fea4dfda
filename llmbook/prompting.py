"""Using a pretrained causal LM without training it: prompts, label-word scoring, calibration.

Chapter 5 builds these step by step; later chapters import them. Nothing here changes a
model's parameters: every function only reads the model's next-token distribution.

- :func:`label_word_ids` maps label words (a *verbalizer*) to single token ids, and refuses
  words that are not one token.
- :func:`score_label_words` returns ``log p(label word | prompt)`` for a batch of prompts from
  one forward pass per batch, with left padding handled, or with a shared prefix (the
  few-shot demonstrations) computed once and reused through ``past_key_values``.
- :func:`contextual_calibration` divides out the label bias measured on content-free inputs
  (Zhao et al., 2021).
- :func:`parse_generated_label` reads a label from free text, or says it cannot.
- :func:`chat_prompt`, :func:`sample_demonstrations` and :func:`few_shot_prompts` build
  zero- and few-shot chat prompts and refuse demonstrations taken from the evaluation set.
- :func:`wilson_interval` gives the 95% interval of an accuracy; :func:`bootstrap_interval`
  the interval of an accuracy averaged over several runs on the same examples.
- :func:`inference_dtype` picks bfloat16 where the hardware computes it natively, else float32.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PromptTemplate",
    "bootstrap_interval",
    "chat_prompt",
    "common_prefix",
    "contextual_calibration",
    "few_shot_prompts",
    "generate_answers",
    "inference_dtype",
    "label_word_ids",
    "parse_generated_label",
    "sample_demonstrations",
    "score_label_words",
    "wilson_interval",
]


# --------------------------------------------------------------------------- intervals


def wilson_interval(k: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a proportion ``k / n`` (95% by default).

    Unlike the normal approximation ``p ± z sqrt(p(1-p)/n)`` it stays inside [0, 1] and is
    sensible at ``k = 0`` or ``k = n``.
    """
    if isinstance(k, bool) or isinstance(n, bool):
        raise TypeError("wilson_interval takes counts, not booleans")
    if int(k) != k or int(n) != n:
        raise TypeError(f"wilson_interval takes integer counts, got k={k!r}, n={n!r}")
    k, n = int(k), int(n)
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    if not 0 <= k <= n:
        raise ValueError(f"k must lie in [0, n={n}], got {k}")
    if z <= 0:
        raise ValueError(f"z must be positive, got {z}")
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def bootstrap_interval(correct, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``correct`` (n,) or (n, runs), resampling the n examples.

    With several runs (seeds, orders) on the *same* examples the runs are not independent
    samples; resampling whole rows keeps each example's runs together.
    """
    values = np.asarray(correct, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    if values.ndim != 2 or values.shape[0] < 2:
        raise ValueError(f"correct must be (n,) or (n, runs) with n >= 2, got shape {np.shape(correct)}")
    if not 0 < level < 1:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    if n_boot < 100:
        raise ValueError(f"use at least 100 bootstrap samples, got {n_boot}")
    rng = np.random.default_rng(seed)
    rows = values.mean(1)
    means = rows[rng.integers(0, len(rows), size=(n_boot, len(rows)))].mean(1)
    alpha = (1 - level) / 2
    return float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))


def inference_dtype(device=None):
    """``torch.bfloat16`` where the device multiplies in bf16 natively, else ``torch.float32``.

    CUDA GPUs with bf16 support and CPUs with AVX-512 BF16 or AMX run bf16 matrix products
    several times faster than fp32; elsewhere bf16 is emulated and slower, so fp32 it is
    (:func:`llmbook.hardware.bf16_is_native` decides).
    """
    import torch

    from llmbook import hardware

    device = torch.device(device) if device is not None else torch.device("cpu")
    return torch.bfloat16 if hardware.bf16_is_native(device) else torch.float32


# --------------------------------------------------------------------------- label words


def label_word_ids(tokenizer, words: Sequence[str]) -> list[int]:
    """Token id of each label word; ``ValueError`` naming a word that is not exactly one token.

    Scoring a label by its next-token probability only works if the whole word is one
    token: for a two-token word the first token's probability is not the word's. Leading
    spaces matter (``"positive"`` and ``" positive"`` are different tokens).
    """
    if isinstance(words, str):
        raise TypeError("label_word_ids takes a list of words, not a single string")
    if len(words) < 2:
        raise ValueError(f"a verbalizer needs at least two label words, got {list(words)}")
    ids = []
    for word in words:
        if not isinstance(word, str) or not word:
            raise ValueError(f"label words must be non-empty strings, got {word!r}")
        token_ids = tokenizer(word, add_special_tokens=False)["input_ids"]
        if len(token_ids) != 1:
            pieces = tokenizer.convert_ids_to_tokens(token_ids)
            raise ValueError(f"label word {word!r} is {len(token_ids)} tokens {pieces}, not one; "
                             "choose a single-token word (mind the leading space)")
        ids.append(token_ids[0])
    if len(set(ids)) != len(ids):
        raise ValueError(f"label words {list(words)} map to repeated token ids {ids}")
    return ids


# --------------------------------------------------------------------------- prompts


def chat_prompt(tokenizer, user: str, *, demos: Sequence[tuple[str, str]] = (),
                system: str | None = None) -> str:
    """The chat-template text for one user turn, preceded by ``demos`` as (user, assistant) turns.

    The text ends with the assistant header, so the model's next token is its answer.
    """
    messages = [{"role": "system", "content": system}] if system else []
    for question, answer in demos:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    messages.append({"role": "user", "content": user})
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


@dataclass(frozen=True)
class PromptTemplate:
    """A zero/few-shot prompt: the user turn with a ``{text}`` slot and one label word per class.

    ``answer_prefix`` begins the assistant's reply ("The review is"), so that the label word
    comes where the model would put it in a sentence; the label words then usually carry a
    leading space (" positive"). An empty prefix leaves the whole answer to the model.
    """

    name: str
    user: str
    label_words: tuple[str, ...]
    answer_prefix: str = ""

    def __post_init__(self) -> None:
        if "{text}" not in self.user:
            raise ValueError(f"template {self.name!r} has no {{text}} slot: {self.user!r}")
        if len(self.label_words) < 2:
            raise ValueError(f"template {self.name!r} needs at least two label words")
        if self.answer_prefix.endswith(" ") and any(w.startswith(" ") for w in self.label_words):
            raise ValueError(f"template {self.name!r}: answer prefix ends with a space and label words start "
                             "with one; put the space in one place only")

    def format(self, text: str) -> str:
        """The user turn for ``text``."""
        return self.user.replace("{text}", text)

    def answer(self, label: int) -> str:
        """The complete assistant reply for class ``label``: the answer prefix and the label word."""
        if not 0 <= int(label) < len(self.label_words):
            raise ValueError(f"label {label} has no label word in {self.label_words}")
        return self.answer_prefix + self.label_words[int(label)]


def sample_demonstrations(labels: Sequence[int], k: int, seed: int, *, balanced: bool = True) -> list[int]:
    """Indices of ``k`` demonstrations drawn with ``seed``, in a random order.

    ``balanced`` draws ``k // n_classes`` per class (the remainder from random classes), so
    that the demonstrations themselves do not tilt the model toward one label.
    """
    if k < 0:
        raise ValueError(f"k must be non-negative, got {k}")
    labels = np.asarray(labels)
    if k > len(labels):
        raise ValueError(f"cannot draw {k} demonstrations from {len(labels)} examples")
    rng = np.random.default_rng(seed)
    if not balanced:
        return [int(i) for i in rng.choice(len(labels), size=k, replace=False)]
    classes = np.unique(labels)
    per_class = np.full(len(classes), k // len(classes))
    per_class[rng.choice(len(classes), size=k % len(classes), replace=False)] += 1
    chosen = []
    for cls, m in zip(classes, per_class, strict=True):
        pool = np.flatnonzero(labels == cls)
        if m > len(pool):
            raise ValueError(f"class {cls} has only {len(pool)} examples, {m} requested")
        chosen += rng.choice(pool, size=m, replace=False).tolist()
    return [int(i) for i in rng.permutation(chosen)]


def few_shot_prompts(tokenizer, template: PromptTemplate, queries: Sequence[str],
                     demos: Sequence[tuple[str, int]], *, eval_texts: Iterable[str] | None = None,
                     system: str | None = None) -> list[str]:
    """Chat prompts for ``queries``, each preceded by the same ``demos`` as earlier turns.

    ``demos`` are (text, label) pairs shown as a user turn and ``template.answer(label)`` as
    the assistant's reply; each prompt ends with the template's answer prefix, so the next
    token is where the label word goes. A demonstration whose text is one of the queries (or of
    ``eval_texts``) is refused: it would show the model the answer it is graded on.
    """
    if isinstance(queries, str):
        raise TypeError("few_shot_prompts takes a list of query texts, not a single string")
    forbidden = {_normalise(t) for t in queries}
    if eval_texts is not None:
        forbidden |= {_normalise(t) for t in eval_texts}
    turns = []
    for text, label in demos:
        if _normalise(text) in forbidden:
            raise ValueError(f"demonstration {text[:60]!r} is in the evaluation set: that leaks its label")
        turns.append((template.format(text), template.answer(label)))
    return [chat_prompt(tokenizer, template.format(q), demos=turns, system=system) + template.answer_prefix
            for q in queries]


def _normalise(text: str) -> str:
    return " ".join(text.lower().split())


def common_prefix(prompts: Sequence[str], tokenizer=None) -> str:
    """The longest common prefix of ``prompts`` that ends with a newline ("" if none).

    With ``tokenizer``, the cut moves back to earlier newlines until every prompt tokenises
    as prefix tokens + rest tokens (a cut inside ``"\\n\\n"`` can split one token in two),
    so the prefix can be computed once and reused.
    """
    if isinstance(prompts, str) or not prompts:
        raise ValueError("common_prefix needs a non-empty list of prompts")
    shared = os.path.commonprefix(list(prompts))
    if len(prompts) == 1:
        shared = shared[:-1]  # leave at least one token to score
    cut = shared.rfind("\n")
    while cut >= 0:
        prefix = shared[:cut + 1]
        if tokenizer is None or _splits_cleanly(tokenizer, prefix, prompts):
            return prefix
        cut = shared.rfind("\n", 0, cut)
    return ""


def _splits_cleanly(tokenizer, prefix: str, prompts: Sequence[str]) -> bool:
    head = _ids(tokenizer, prefix)
    return all(_ids(tokenizer, p) == head + _ids(tokenizer, p[len(prefix):]) for p in prompts)


# --------------------------------------------------------------------------- scoring


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@contextlib.contextmanager
def _grouped_query_sdpa(device):
    """On a CPU, let transformers hand grouped-query attention to ``scaled_dot_product_attention``
    (``enable_gqa``) instead of first copying each key/value head to every query head it serves.

    With a padding mask transformers copies by default, because on CUDA a masked GQA call falls
    back to the slow kernel; torch's CPU kernel takes the mask and the grouped heads as they are
    (the same result without the copies, which dominate attention with a long cached prefix). Other devices
    are left alone.
    """
    if getattr(device, "type", device) != "cpu":
        yield
        return
    key, before = "TRANSFORMERS_SDPA_FORCE_GQA", os.environ.get("TRANSFORMERS_SDPA_FORCE_GQA")
    os.environ[key] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def _pad(sequences: list[list[int]], pad_id: int, side: str):
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, span] = torch.tensor(seq, dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


def score_label_words(model, tokenizer, prompts: Sequence[str], label_ids: Sequence[int], *,
                      batch_size: int = 16, prefix: str | None = None, progress: bool = False):
    """``log p(label token | prompt)`` for every prompt and label id: a float tensor (n, len(label_ids)).

    One forward pass per batch scores all label words at once (they differ only in the next
    token). Without ``prefix`` the prompts are left-padded and given position ids that start
    at 0 at each prompt's first real token, so a prompt scores the same alone or in a batch.
    With ``prefix`` (a string every prompt starts with, such as the few-shot demonstrations),
    the prefix is run once, its keys and values are reused for every batch
    (``past_key_values``), and only the remaining tokens are computed (left-padded after
    the prefix, with the padding masked out and positions continuing from the prefix).
    The log-probabilities are over the whole vocabulary; renormalise over the labels if needed.
    """
    import torch

    label_ids = torch.as_tensor(list(label_ids), dtype=torch.long)
    vocab = model.get_output_embeddings().weight.shape[0]
    if label_ids.numel() == 0 or label_ids.min() < 0 or label_ids.max() >= vocab:
        raise ValueError(f"label ids must be non-empty and lie in [0, {vocab}), got {label_ids.tolist()}")
    sequences, order, prefix_cache, prefix_len, device = _encode_batches(model, tokenizer, prompts, prefix,
                                                                          batch_size)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    starts = range(0, len(sequences), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="scoring", leave=False)
    out = []
    with torch.inference_mode(), _grouped_query_sdpa(device):
        for start in starts:
            chunk = [sequences[i] for i in order[start:start + batch_size]]
            inputs = _batch_inputs(chunk, pad_id, prefix_cache, prefix_len, device)
            logits = model(**inputs, logits_to_keep=1).logits[:, -1, :]
            out.append(torch.log_softmax(logits.float(), dim=-1)[:, label_ids.to(device)].cpu())
    scores = torch.empty(len(sequences), len(label_ids))
    scores[torch.tensor(order)] = torch.cat(out)
    return scores


# --------------------------------------------------------------------------- calibration


def contextual_calibration(probs, content_free_probs) -> np.ndarray:
    """Contextual calibration (Zhao et al., 2021): ``q ∝ diag(p_cf)^-1 p``, rows renormalised.

    ``probs`` is (n, L): label probabilities (any positive scale; rows are renormalised).
    ``content_free_probs`` is (m, L) or (L,): the same for content-free inputs such as
    "N/A"; their renormalised mean is ``p_cf``, the model's label bias with no content.
    After the correction a content-free input scores every label equally.
    """
    p = np.asarray(probs, dtype=np.float64)
    cf = np.asarray(content_free_probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be (n, labels), got shape {p.shape}")
    cf = cf[None, :] if cf.ndim == 1 else cf
    if cf.ndim != 2 or cf.shape[1] != p.shape[1]:
        raise ValueError(f"content_free_probs must have {p.shape[1]} labels per row, got shape {cf.shape}")
    if (p < 0).any() or (cf <= 0).any() or not np.isfinite(p).all() or not np.isfinite(cf).all():
        raise ValueError("probabilities must be finite, probs >= 0 and content-free probs > 0 (pass exp(log-probs))")
    p_cf = (cf / cf.sum(1, keepdims=True)).mean(0)
    q = p / p.sum(1, keepdims=True) / p_cf
    return q / q.sum(1, keepdims=True)


# --------------------------------------------------------------------------- generation


def parse_generated_label(text: str, labels: Sequence[str]) -> int | None:
    """Index of the one label that ``text`` names as a whole word (any case), else ``None``.

    ``None`` when no label appears or when several do ("positive or negative?"): an
    answer that cannot be read must be counted as wrong, never guessed.
    """
    if not isinstance(text, str):
        raise TypeError(f"expected the generated text, got {type(text).__name__}")
    if isinstance(labels, str) or len(labels) < 2:
        raise ValueError("parse_generated_label needs a list of at least two labels")
    found = [i for i, label in enumerate(labels)
             if re.search(rf"(?<![\w-]){re.escape(label.strip().lower())}(?![\w-])", text.lower())]
    return found[0] if len(found) == 1 else None


def _encode_batches(model, tokenizer, prompts: Sequence[str], prefix: str | None, batch_size: int):
    """Shared set-up of scoring and generation: token ids, the length order and the prefix cache."""
    import torch

    if isinstance(prompts, str):
        raise TypeError("expected a list of prompts, not a single string")
    if not prompts:
        raise ValueError("no prompts given")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    device = next(model.parameters()).device
    prefix_cache, prefix_len = None, 0
    if prefix:
        prefix_ids = _ids(tokenizer, prefix)
        sequences = []
        for prompt in prompts:
            if not prompt.startswith(prefix) or len(prompt) == len(prefix):
                raise ValueError(f"every prompt must start with the prefix and extend it: {prompt[:80]!r}")
            suffix = _ids(tokenizer, prompt[len(prefix):])
            if _ids(tokenizer, prompt) != prefix_ids + suffix:
                raise ValueError("the prefix boundary splits a token: end the prefix at a newline or special "
                                 "token (common_prefix(prompts, tokenizer) finds a safe one)")
            sequences.append(suffix)
        prefix_len = len(prefix_ids)
        with torch.inference_mode():
            cache = model(input_ids=torch.tensor([prefix_ids], device=device), use_cache=True).past_key_values
        prefix_cache = [(layer.keys, layer.values) for layer in cache.layers]
    else:
        sequences = [_ids(tokenizer, p) for p in prompts]
    if any(len(s) == 0 for s in sequences):
        raise ValueError("a prompt tokenises to nothing")
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))  # similar lengths: less padding
    return sequences, order, prefix_cache, prefix_len, device


def _batch_inputs(chunk: list[list[int]], pad_id: int, prefix_cache, prefix_len: int, device) -> dict:
    """Left-padded ids, the attention mask (prefix included) and position ids that skip the padding."""
    import torch

    ids, mask = _pad(chunk, pad_id, "left")
    position_ids = prefix_len + (mask.cumsum(-1) - 1).clamp(min=0)
    inputs = {}
    if prefix_cache is not None:
        from transformers import DynamicCache

        # a fresh cache whose prefix keys/values are broadcast views of the batch-1 prefix: no copy
        # until the model concatenates the new tokens (the prefix itself is never modified)
        n = len(chunk)
        cache = DynamicCache(ddp_cache_data=[(keys.expand(n, -1, -1, -1), values.expand(n, -1, -1, -1))
                                             for keys, values in prefix_cache])
        mask = torch.cat([torch.ones(len(chunk), prefix_len, dtype=torch.long), mask], dim=1)
        inputs["past_key_values"] = cache
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device),
            "position_ids": position_ids.to(device), **inputs}


def generate_answers(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 8,
                     batch_size: int = 16, prefix: str | None = None, progress: bool = False) -> list[str]:
    """Greedy continuations of ``prompts``, batched, decoded without special tokens and stripped.

    A plain greedy loop (the argmax token, fed back with the key/value cache) that stops a row
    at the end-of-turn token. ``prefix`` works as in :func:`score_label_words`: computed once
    and shared by every prompt.
    """
    import torch

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be positive, got {max_new_tokens}")
    sequences, order, prefix_cache, prefix_len, device = _encode_batches(model, tokenizer, prompts, prefix,
                                                                          batch_size)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    stop = tokenizer.eos_token_id
    starts = range(0, len(sequences), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="generating", leave=False)
    answers: list[str] = [""] * len(sequences)
    with torch.inference_mode(), _grouped_query_sdpa(device):
        for start in starts:
            rows = order[start:start + batch_size]
            inputs = _batch_inputs([sequences[i] for i in rows], pad_id, prefix_cache, prefix_len, device)
            inputs.setdefault("past_key_values", None)
            mask, positions = inputs["attention_mask"], inputs["position_ids"][:, -1:]
            new_tokens, done = [], torch.zeros(len(rows), dtype=torch.bool, device=device)
            for _ in range(max_new_tokens):
                out = model(**inputs, use_cache=True, logits_to_keep=1)
                token = out.logits[:, -1, :].argmax(-1)
                token = torch.where(done, torch.full_like(token, pad_id), token)
                new_tokens.append(token)
                done |= token == stop
                if bool(done.all()):
                    break
                mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
                positions = positions + 1
                inputs = {"input_ids": token[:, None], "attention_mask": mask, "position_ids": positions,
                          "past_key_values": out.past_key_values}
            generated = torch.stack(new_tokens, dim=1).cpu()
            for row, tokens in zip(rows, generated, strict=True):
                answers[row] = tokenizer.decode(tokens, skip_special_tokens=True).strip()
    return answers
