"""Running a causal LM for inference in batches: next-token scores and greedy generation.

Chapter 5 builds this engine to score and generate with prompts; the deployment chapter
reuses it as it is. Nothing here changes a model's parameters, and nothing here knows about
prompts: the inputs are plain strings.

- :func:`score_next_tokens` returns ``log p(token | prompt)`` for a batch of prompts and a few
  given token ids, from one forward pass per batch.
- :func:`generate_greedy` continues each prompt greedily (argmax token, key/value cache),
  batched, until the end-of-turn token or a token budget.
- Both sort the prompts by length (batches of similar length need little padding), pad on
  the left with position ids that skip the padding, so a prompt gives the same result alone
  or in a batch, and can compute a shared ``prefix`` once and reuse its keys and values
  (``past_key_values``) for every batch.
- :func:`common_prefix` finds such a prefix: the longest shared start that ends at a
  newline and at a token boundary.
- :func:`grouped_query_sdpa` lets grouped-query attention run without copying key/value heads
  on a CPU; both functions above switch it on for their own duration.

The dtype to load a model in is :func:`llmbook.hardware.inference_dtype`'s choice.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

import torch

from llmbook.encoding import length_order, pad_sequences

__all__ = [
    "common_prefix",
    "generate_greedy",
    "grouped_query_sdpa",
    "score_next_tokens",
]


# --------------------------------------------------------------------------- shared prefix


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


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


# --------------------------------------------------------------------------- attention


@contextlib.contextmanager
def grouped_query_sdpa(device):
    """On a CPU, let transformers hand grouped-query attention to ``scaled_dot_product_attention``
    (``enable_gqa``) instead of first copying each key/value head to every query head it serves.

    With a padding mask transformers copies by default, because on CUDA a masked GQA call falls
    back to the slow kernel; torch's CPU kernel takes the mask and the grouped heads as they are
    (the same result without the copies, which dominate attention with a long cached prefix). Other devices
    are left alone. The environment variable is restored on exit.
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


# --------------------------------------------------------------------------- batches


def _encode_batches(model, tokenizer, prompts: Sequence[str], prefix: str | None, batch_size: int):
    """Shared set-up of scoring and generation: token ids, the length order and the prefix cache."""
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
    order = length_order([len(s) for s in sequences]).tolist()  # similar lengths: less padding
    return sequences, order, prefix_cache, prefix_len, device


def _batch_inputs(chunk: list[list[int]], pad_id: int, prefix_cache, prefix_len: int, device) -> dict:
    """Left-padded ids, the attention mask (prefix included) and position ids that skip the padding."""
    ids, mask = pad_sequences(chunk, pad_id, "left")
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


# --------------------------------------------------------------------------- scoring


def score_next_tokens(model, tokenizer, prompts: Sequence[str], token_ids: Sequence[int], *,
                      batch_size: int = 16, prefix: str | None = None, progress: bool = False):
    """``log p(token | prompt)`` for every prompt and token id: a float tensor (n, len(token_ids)).

    One forward pass per batch scores all the given tokens at once (they are candidates for
    the same next position). Without ``prefix`` the prompts are left-padded and given position
    ids that start at 0 at each prompt's first real token, so a prompt scores the same alone or
    in a batch. With ``prefix`` (a string every prompt starts with, such as the few-shot
    demonstrations), the prefix is run once, its keys and values are reused for every batch
    (``past_key_values``), and only the remaining tokens are computed (left-padded after
    the prefix, with the padding masked out and positions continuing from the prefix).
    The log-probabilities are over the whole vocabulary; renormalise over the tokens if needed.
    """
    token_ids = torch.as_tensor(list(token_ids), dtype=torch.long)
    vocab = model.get_output_embeddings().weight.shape[0]
    if token_ids.numel() == 0 or token_ids.min() < 0 or token_ids.max() >= vocab:
        raise ValueError(f"token ids must be non-empty and lie in [0, {vocab}), got {token_ids.tolist()}")
    sequences, order, prefix_cache, prefix_len, device = _encode_batches(model, tokenizer, prompts, prefix,
                                                                          batch_size)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    starts = range(0, len(sequences), batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="scoring", leave=False)
    out = []
    with torch.inference_mode(), grouped_query_sdpa(device):
        for start in starts:
            chunk = [sequences[i] for i in order[start:start + batch_size]]
            inputs = _batch_inputs(chunk, pad_id, prefix_cache, prefix_len, device)
            logits = model(**inputs, logits_to_keep=1).logits[:, -1, :]
            out.append(torch.log_softmax(logits.float(), dim=-1)[:, token_ids.to(device)].cpu())
    scores = torch.empty(len(sequences), len(token_ids))
    scores[torch.tensor(order)] = torch.cat(out)
    return scores


# --------------------------------------------------------------------------- generation


def generate_greedy(model, tokenizer, prompts: Sequence[str], *, max_new_tokens: int = 8,
                    batch_size: int = 16, prefix: str | None = None, progress: bool = False) -> list[str]:
    """Greedy continuations of ``prompts``, batched, decoded without special tokens and stripped.

    A plain greedy loop (the argmax token, fed back with the key/value cache) that stops a row
    at the end-of-turn token. ``prefix`` works as in :func:`score_next_tokens`: computed once
    and shared by every prompt.
    """
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
    with torch.inference_mode(), grouped_query_sdpa(device):
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
