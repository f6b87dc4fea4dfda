"""Prompting a pretrained causal LM without training it: verbalizers, chat prompts, calibration.

Chapter 5 builds these step by step; later chapters import them. Nothing here runs or
changes a model: these functions build the prompts and read or correct the answers.

- :func:`label_word_ids` maps label words (a *verbalizer*) to single token ids, and refuses
  words that are not one token.
- :func:`chat_prompt`, :class:`PromptTemplate`, :func:`sample_demonstrations` and
  :func:`few_shot_prompts` build zero- and few-shot chat prompts and refuse demonstrations
  taken from the evaluation set.
- :func:`contextual_calibration` divides out the label bias measured on content-free inputs
  (Zhao et al., 2021).
- :func:`parse_generated_label` reads a label from free text, or says it cannot.

Running the model lives in :mod:`llmbook.inference`: label words are scored with
:func:`llmbook.inference.score_next_tokens` (``log p(label word | prompt)``), answers are
generated with :func:`llmbook.inference.generate_greedy`, and the shared few-shot prefix is
found by :func:`llmbook.inference.common_prefix`. The dtype to load the model in is
:func:`llmbook.hardware.inference_dtype`'s choice. Intervals of the accuracies
(:func:`llmbook.stats.wilson_interval`, :func:`llmbook.stats.bootstrap_interval`) live in
:mod:`llmbook.stats`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "PromptTemplate",
    "chat_prompt",
    "contextual_calibration",
    "few_shot_prompts",
    "label_word_ids",
    "parse_generated_label",
    "sample_demonstrations",
]


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
    if (p.sum(1) <= 0).any():
        raise ValueError(f"{int((p.sum(1) <= 0).sum())} rows of probs are all 0 (exp underflowed?): "
                         "renormalise log-probabilities over the labels before exp")
    p_cf = (cf / cf.sum(1, keepdims=True)).mean(0)
    q = p / p.sum(1, keepdims=True) / p_cf
    return q / q.sum(1, keepdims=True)


# --------------------------------------------------------------------------- parsing


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
