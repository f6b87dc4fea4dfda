"""From text to batches: tokenisation without padding, word labels aligned to sub-word tokens,
padding per batch, and batches of similar length.

Defined in chapter 3 and used by every chapter that feeds a model batches:

- :func:`encode_texts`, :func:`encode_words`, :func:`align_labels_with_tokens`: tokenisation
  without padding (padding happens per batch), with NER labels aligned to sub-word tokens.
- :func:`pad_sequences`, :func:`pad_batch`: dynamic padding to the longest sequence of a batch,
  on the right (encoders) or on the left (causal LMs that continue each row).
- :func:`random_batches`, :func:`length_bucketed_batches`, :func:`padding_fraction`: training
  batches in random order, or of similar length so that little compute goes to padding.
- :func:`length_order`: the order that sorts examples by length, for inference in batches of
  similar length whose results are put back in input order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from llmbook.losses import IGNORE_INDEX

__all__ = [
    "encode_texts", "align_labels_with_tokens", "encode_words", "pad_sequences", "pad_batch",
    "random_batches", "length_bucketed_batches", "padding_fraction", "length_order",
]

PAD_SIDES = ("right", "left")


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
    if continuation_label is not None and not label_all_subtokens:
        raise ValueError("continuation_label applies only with label_all_subtokens=True")
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

    Returns one ``{"input_ids", "labels", "n_words"}`` dict per sentence, ``labels`` as long as
    ``input_ids`` (see :func:`align_labels_with_tokens`). ``n_words`` is the sentence's number of
    words *before* truncation, so that word-level scoring can tell when truncation cut words off
    (:func:`llmbook.evaluation.word_level_tags`). Needs a fast tokenizer, which knows each
    token's word.
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
                                                continuation_label=continuation_label),
             "n_words": len(words[i])}
            for i in range(len(words))]


# --------------------------------------------------------------------------- padding


def pad_sequences(sequences: Sequence[Sequence[int]], pad_id: int, side: str = "right") -> tuple[Tensor, Tensor]:
    """Token ids padded to the longest sequence, and the attention mask (1 on real tokens).

    ``side="right"`` puts the padding after each sequence (encoders); ``side="left"`` before it,
    so that every row of a causal LM ends at its last real token and can be continued.
    """
    if side not in PAD_SIDES:
        raise ValueError(f"side must be one of {PAD_SIDES}, got {side!r}")
    if isinstance(sequences, (str, bytes)) or len(sequences) == 0:
        raise ValueError("cannot pad an empty batch")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), int(pad_id), dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        span = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, span] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[row, span] = 1
    return ids, mask


def pad_batch(examples: Sequence[Mapping[str, Any]], pad_token_id: int,
              label_pad_id: int = IGNORE_INDEX) -> dict[str, Tensor]:
    """Dynamic padding: pad a list of encoded examples to the longest one *in this batch*.

    Returns ``input_ids`` and ``attention_mask`` (1 on real tokens) of shape (batch, longest), and
    ``labels``: shape (batch,) for sentence labels, or (batch, longest) padded with ``label_pad_id``
    for token labels. Other keys of the examples (such as ``n_words``) are not part of the batch.
    """
    if not examples:
        raise ValueError("cannot pad an empty batch")
    ids, mask = pad_sequences([e["input_ids"] for e in examples], pad_token_id, "right")
    longest = ids.shape[1]
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


# --------------------------------------------------------------------------- batches


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
    lengths = np.asarray(lengths).astype(np.int64)  # signed, so that -lengths sorts longest first
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


def length_order(lengths: Sequence[int], *, descending: bool = False) -> np.ndarray:
    """Positions that sort ``lengths`` (stable: ties keep their input order).

    Inference in batches of similar length wastes little compute on padding; the results are
    put back with ``out[order] = results`` (or ``out[order[j]] = results[j]``).
    """
    lengths = np.asarray(lengths)
    if lengths.ndim != 1:
        raise ValueError(f"lengths must be 1-D, got shape {lengths.shape}")
    lengths = lengths.astype(np.int64)  # negating an unsigned length would wrap round
    return np.argsort(-lengths if descending else lengths, kind="stable")
