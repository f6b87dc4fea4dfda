"""Loading the book's two pretrained models, from the offline cache or any hub id.

Both loaders accept ``model_id``: ``None`` means the book's asset in the cache;
a local directory or a Hugging Face hub id (with network access) goes through
the same code, so a reader can switch to a larger model by changing one argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from llmbook import assets

ENCODER_TASKS = ("embedding", "sequence-classification", "token-classification")


def resolve(model_id: str | Path | None, asset_name: str) -> str:
    """The directory of the default asset, or ``model_id`` unchanged."""
    if model_id is None:
        return str(assets.path(asset_name))
    return str(model_id)


def _label_kwargs(labels: Sequence[str] | None, num_labels: int | None) -> dict:
    if labels is not None:
        labels = list(labels)
        if num_labels is not None and num_labels != len(labels):
            raise ValueError(f"num_labels={num_labels} but {len(labels)} labels were given")
        if len(set(labels)) != len(labels):
            raise ValueError(f"label names must be unique, got {labels}")
        return {"num_labels": len(labels), "id2label": dict(enumerate(labels)),
                "label2id": {name: i for i, name in enumerate(labels)}}
    if num_labels is None:
        raise ValueError("a classification head needs labels=[...] or num_labels=N")
    return {"num_labels": num_labels}


def load_encoder(task: str = "embedding", *, labels: Sequence[str] | None = None,
                 num_labels: int | None = None, model_id: str | Path | None = None, **kwargs):
    """Load the encoder (all-MiniLM-L6-v2 by default) and its tokenizer.

    ``task`` is ``"embedding"`` (plain ``AutoModel``), ``"sequence-classification"``
    or ``"token-classification"`` (a new, randomly initialised head with ``labels``).
    Returns ``(model, tokenizer)``.
    """
    from transformers import (
        AutoModel,
        AutoModelForSequenceClassification,
        AutoModelForTokenClassification,
        AutoTokenizer,
    )

    if task not in ENCODER_TASKS:
        raise ValueError(f"unknown encoder task {task!r}; choose one of {', '.join(ENCODER_TASKS)}")
    source = resolve(model_id, "minilm")
    tokenizer = AutoTokenizer.from_pretrained(source)
    if task == "embedding":
        model = AutoModel.from_pretrained(source, **kwargs)
    else:
        cls = AutoModelForSequenceClassification if task == "sequence-classification" else AutoModelForTokenClassification
        model = cls.from_pretrained(source, **_label_kwargs(labels, num_labels), **kwargs)
    return model, tokenizer


def mean_pool(last_hidden_state, attention_mask):
    """Average the token vectors of each sequence, ignoring padding positions."""
    mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    return (last_hidden_state * mask).sum(1) / mask.sum(1).clamp(min=1e-9)


def embed(model, tokenizer, texts: Sequence[str], *, batch_size: int = 64, max_length: int = 128,
          normalize: bool = True, device=None):
    """Sentence embeddings as sentence-transformers computes them: mean pooling, then L2 norm."""
    import torch

    if isinstance(texts, str):
        raise TypeError("embed() takes a list of texts, not a single string")
    device = device or next(model.parameters()).device
    model.eval()
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(list(texts[start:start + batch_size]), padding=True, truncation=True,
                              max_length=max_length, return_tensors="pt").to(device)
            pooled = mean_pool(model(**batch).last_hidden_state, batch["attention_mask"])
            chunks.append(torch.nn.functional.normalize(pooled, dim=-1) if normalize else pooled)
    return torch.cat(chunks).cpu()


def load_causal_lm(model_id: str | Path | None = None, *, dtype=None, device=None, **kwargs):
    """Load the causal LM (SmolLM2-135M-Instruct by default) and its tokenizer with chat template.

    Returns ``(model, tokenizer)`` with the model in eval mode. The tokenizer pads on
    the left, which batched generation needs.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = resolve(model_id, "smollm2")
    tokenizer = AutoTokenizer.from_pretrained(source)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(source, dtype=dtype or torch.float32, **kwargs)
    if device is not None:
        model.to(device)
    model.eval()
    return model, tokenizer


def chat(model, tokenizer, user_message: str, *, system: str | None = None,
         max_new_tokens: int = 64) -> str:
    """One greedy chat turn: apply the chat template, generate, return the answer text."""
    import torch

    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": user_message}]
    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                           return_tensors="pt", return_dict=True).to(model.device)
    with torch.inference_mode():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True).strip()
