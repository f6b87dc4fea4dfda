"""The book's supervised tasks and what every method trained on them shares.

Chapter 3 fine-tunes the same encoder on the same data in several notebooks, and chapters 4,
6 and 8 train on it again; the data, the subsets, the classifier construction and the
baselines live here so that every notebook sees identical inputs:

- :func:`polarity_task` (:class:`PolarityTask`): the book's fixed sentence-polarity splits,
  tokenised once without padding (optionally a seeded subset of each split, for ``smoke``).
- :func:`ner_task` (:class:`NerTask`): the WNUT-16 tweets as words and BIO tags, encoded on
  demand with labels aligned to sub-word tokens.
- :func:`balanced_subset`: a seeded subset of the training labels with the classes balanced;
  the same subset for every method that uses the same ``n`` and ``seed``.
- :func:`small_data_config`: the fixed recipe for a few labels, with no validation-based choice.
- :func:`train_on_subset` (:class:`SubsetRun`): one seeded run of that recipe on a balanced
  subset, with any change to the recipe and any hooks of :func:`llmbook.training.fit`, scored
  example by example on validation and test (what chapter 4 compares methods with).
- :func:`new_classifier`: a sequence or token classifier on the pretrained encoder, or the
  identical network from random weights, with a seeded head.
- :func:`fit_tfidf`, :func:`tfidf_grid`: the TF-IDF + logistic-regression baseline and its
  grid, scored on validation (to choose) and on test (to report, and to show the cost of
  choosing by test).
- :func:`embed_by_length`: frozen-encoder sentence embeddings, batched by length.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from llmbook import hardware, models, runtime
from llmbook.encoding import encode_texts, encode_words, length_order
from llmbook.evaluation import accuracy, predict_labels
from llmbook.training import TrainConfig, TrainResult, fit

__all__ = ["SPLITS", "SUBSET_SEED_OFFSET", "CLASSIFIER_TASKS", "PolarityTask", "polarity_task", "NerTask",
           "ner_task", "balanced_subset", "small_data_config", "SubsetRun", "train_on_subset", "new_classifier", "fit_tfidf", "tfidf_grid",
           "embed_by_length"]

SPLITS = ("train", "validation", "test")
SUBSET_SEED_OFFSET = 100  # subsets draw from default_rng(100 + seed), apart from the training seeds
CLASSIFIER_TASKS = ("sequence-classification", "token-classification")


# --------------------------------------------------------------------------- polarity


@dataclass
class PolarityTask:
    """The polarity splits as texts, label arrays and unpadded token ids, with their tokenizer."""

    labels: list[str]
    splits: dict[str, Any]
    texts: dict[str, list[str]]
    y: dict[str, np.ndarray]
    enc: dict[str, list[dict[str, Any]]]
    tokenizer: Any
    max_length: int

    @property
    def pad_token_id(self) -> int:
        return self.tokenizer.pad_token_id

    def train_examples(self, idx: Sequence[int]) -> list[dict[str, Any]]:
        """The encoded training examples at the positions ``idx``."""
        return [self.enc["train"][i] for i in idx]


def _check_size(name: str, n: int | None) -> None:
    if n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1):
        raise ValueError(f"{name} must be a positive int or None (the whole split), got {n!r}")


def polarity_task(tokenizer: Any, *, max_length: int = 64, n_train: int | None = None,
                  n_eval: int | None = None, seed: int = 0) -> PolarityTask:
    """The book's sentence-polarity splits, tokenised without padding.

    ``n_train`` / ``n_eval`` (``None``: the whole split) take a seeded random subset of the
    training split and of validation and test; the source file lists positive sentences
    first, so a subset must be random, never the first rows.
    """
    from llmbook import data

    _check_size("n_train", n_train)
    _check_size("n_eval", n_eval)
    polarity = data.sentence_polarity()
    splits = {}
    for name in SPLITS:
        split, n = polarity[name], n_train if name == "train" else n_eval
        if n is not None:
            if n > len(split):
                raise ValueError(f"asked for {n} {name} sentences, but the split has {len(split)}")
            split = split.shuffle(seed=seed).select(range(n))
        splits[name] = split
    texts = {name: list(split["text"]) for name, split in splits.items()}
    y = {name: np.asarray(split["label"], dtype=np.int64) for name, split in splits.items()}
    enc = {name: encode_texts(tokenizer, texts[name], y[name], max_length=max_length) for name in SPLITS}
    return PolarityTask(labels=list(polarity["train"].features["label"].names), splits=splits, texts=texts,
                        y=y, enc=enc, tokenizer=tokenizer, max_length=max_length)


# --------------------------------------------------------------------------- NER


@dataclass
class NerTask:
    """The WNUT-16 splits as lists of words and tag ids, with the tag names and entity types."""

    labels: list[str]
    types: list[str]
    splits: dict[str, Any]
    words: dict[str, list[list[str]]]
    tags: dict[str, list[list[int]]]

    def continuation_labels(self) -> dict[int, int]:
        """``B-x`` -> ``I-x`` as tag ids: the label of a word's later sub-tokens when all are labelled."""
        return {self.labels.index(f"B-{t}"): self.labels.index(f"I-{t}") for t in self.types}

    def gold_tags(self, split: str) -> list[list[str]]:
        """The gold tag names of ``split``, one list per tweet (what seqeval scores against)."""
        return [[self.labels[t] for t in seq] for seq in self.tags[split]]

    def encode(self, tokenizer: Any, *, max_length: int = 128, **kwargs) -> dict[str, list[dict[str, Any]]]:
        """Every split tokenised with word labels aligned to sub-word tokens (see
        :func:`llmbook.encoding.encode_words`, which also takes ``kwargs``)."""
        return {name: encode_words(tokenizer, self.words[name], self.tags[name], max_length=max_length, **kwargs)
                for name in SPLITS}


def ner_task(*, n_train: int | None = None, n_eval: int | None = None) -> NerTask:
    """The book's WNUT-16 splits; ``n_train`` / ``n_eval`` keep the first tweets of each split
    (``None``: all), for the ``smoke`` profile."""
    from llmbook import data

    _check_size("n_train", n_train)
    _check_size("n_eval", n_eval)
    ner = data.wnut_ner()
    labels = list(ner["train"].features["ner_tags"].feature.names)
    splits = {}
    for name in SPLITS:
        split, n = ner[name], n_train if name == "train" else n_eval
        if n is not None and n > len(split):
            raise ValueError(f"asked for {n} {name} tweets, but the split has {len(split)}")
        splits[name] = split.select(range(n)) if n else split
    return NerTask(labels=labels, types=sorted({t[2:] for t in labels if t != "O"}), splits=splits,
                   words={name: [list(w) for w in split["tokens"]] for name, split in splits.items()},
                   tags={name: [list(t) for t in split["ner_tags"]] for name, split in splits.items()})


# --------------------------------------------------------------------------- subsets and recipes


def balanced_subset(labels: Sequence[int], n: int, seed: int) -> np.ndarray:
    """Sorted positions of a seeded random subset of ``n`` examples with the classes balanced.

    Each of the ``k`` classes present gets ``n // k`` examples; the remainder goes to the
    highest classes, one each. The same ``(labels, n, seed)`` always gives the same subset.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 1-D array of class ids, got shape {labels.shape}, dtype {labels.dtype}")
    classes = np.unique(labels)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < len(classes):
        raise ValueError(f"n must be an int of at least the number of classes ({len(classes)}), got {n!r}")
    k = len(classes)
    counts = [n // k + (1 if j >= k - n % k else 0) for j in range(k)]
    rng = np.random.default_rng(SUBSET_SEED_OFFSET + seed)
    parts = []
    for c, count in zip(classes, counts, strict=True):
        members = np.flatnonzero(labels == c)
        if count > len(members):
            raise ValueError(f"class {c} has {len(members)} examples, fewer than the {count} asked for")
        parts.append(rng.choice(members, count, replace=False))
    return np.sort(np.concatenate(parts))


def small_data_config(n: int, seed: int, *, lr: float, bf16: bool, min_updates: int = 60,
                      min_epochs: int = 3) -> TrainConfig:
    """The fixed recipe for ``n`` labelled sentences: no validation split, no early stopping.

    Batch 16 below 1,000 sentences and 32 from there on; at least ``min_epochs`` epochs and
    at least ``min_updates`` optimizer updates, so that tiny sets still get enough steps.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive number of sentences, got {n!r}")
    if min_updates < 1 or min_epochs < 1:
        raise ValueError(f"min_updates and min_epochs must be >= 1, got {min_updates}, {min_epochs}")
    batch_size = 16 if n < 1000 else 32
    epochs = max(min_epochs, math.ceil(min_updates / math.ceil(n / batch_size)))
    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, patience=None, bf16=bf16, seed=seed)


@dataclass
class SubsetRun:
    """One seeded run on a balanced subset: which examples it got right, and its training history.

    ``correct[split]`` is a 0/1 array over the split's examples in their fixed order, so two
    runs on the same split can be compared example by example (:func:`llmbook.stats.paired_bootstrap`).
    ``model`` is the trained model when :func:`train_on_subset` was asked to keep it, else ``None``.
    """

    n: int
    seed: int
    correct: dict[str, np.ndarray]
    result: TrainResult
    seconds: float
    model: Any = None

    def accuracy(self, split: str) -> float:
        if split not in self.correct:
            raise KeyError(f"this run scored {sorted(self.correct)}, not {split!r}")
        return float(self.correct[split].mean())


def train_on_subset(task: PolarityTask, n: int | None, seed: int, *, lr: float = 1e-4, bf16: bool = False,
                    min_updates: int = 60, changes: Mapping[str, Any] | None = None,
                    prepare: Callable[[Any], Mapping[str, Any]] | None = None,
                    build: Callable[[int], Any] | None = None,
                    examples: Callable[[np.ndarray], Sequence[Mapping[str, Any]]] | None = None,
                    splits: Sequence[str] = ("validation", "test"), device: Any = "cpu",
                    keep_model: bool = False) -> SubsetRun:
    """Fine-tune on ``balanced_subset(task.y["train"], n, seed)`` with :func:`small_data_config`.

    ``n=None`` trains on the whole training split. ``changes`` replaces fields of the recipe
    (``{"weight_decay": 0.0}``); ``build(seed)`` makes the model (default: :func:`new_classifier`
    on the pretrained encoder); ``prepare(model)`` runs after the model is built and before
    training and returns extra keyword arguments of :func:`llmbook.training.fit` (``extra_loss``,
    ``trainable``, ``optimizer``, ``eval_fn``, ``on_epoch_end``), so that a hook can take the
    weights it anchors to; ``examples(idx)`` turns the subset's positions into the training
    examples (default: the encoded sentences; augmentation adds to them, and the recipe still
    counts ``n`` labelled sentences). The seed fixes the subset, the head, the batch order and
    dropout. Every split in ``splits`` is scored example by example.
    """
    import time

    unknown = [s for s in splits if s not in task.enc]
    if unknown or not splits:
        raise ValueError(f"splits must name some of {sorted(task.enc)}, got {list(splits)}")
    idx = np.arange(len(task.y["train"])) if n is None else balanced_subset(task.y["train"], n, seed)
    config = small_data_config(len(idx), seed, lr=lr, bf16=bf16, min_updates=min_updates)
    if changes:
        bad = sorted(set(changes) - {f.name for f in dataclasses.fields(TrainConfig)})
        if bad:
            raise ValueError(f"TrainConfig has no field(s) {bad}")
        config = dataclasses.replace(config, **changes)
    start = time.perf_counter()
    model = build(seed) if build is not None else new_classifier(task.labels, seed=seed, device=device)
    extra = dict(prepare(model)) if prepare is not None else {}
    reserved = sorted(set(extra) & {"pad_token_id", "progress", "log"})
    if reserved:
        raise ValueError(f"prepare() may not set {reserved}: train_on_subset sets them")
    train = list(examples(idx)) if examples is not None else task.train_examples(idx)
    result = fit(model, train, config, pad_token_id=task.pad_token_id, progress=False, log=None, **extra)
    seconds = time.perf_counter() - start
    correct = {s: (predict_labels(model, task.enc[s], pad_token_id=task.pad_token_id, bf16=bf16) == task.y[s])
               .astype(np.int8) for s in splits}
    return SubsetRun(len(idx), seed, correct, result, seconds, model if keep_model else None)


# --------------------------------------------------------------------------- models and baselines


def new_classifier(labels: Sequence[str], *, seed: int, task: str = "sequence-classification",
                   device: Any = "cpu", scratch: bool = False, attn_implementation: str = "eager"):
    """A sequence or token classifier on the encoder, its head initialised from ``seed``.

    ``task`` is ``"sequence-classification"`` (one label per sentence) or
    ``"token-classification"`` (one label per token). ``scratch=False``: the pretrained encoder
    with a new head (its load report, which would list the new head weights every time, is
    silenced). ``scratch=True``: the identical architecture (same config, tokenizer and head)
    with every weight drawn at random.
    """
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification
    from transformers.utils import logging as hf_logging

    if task not in CLASSIFIER_TASKS:
        raise ValueError(f"task must be one of {CLASSIFIER_TASKS}, got {task!r}")
    labels = list(labels)
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ValueError(f"labels must name at least two distinct classes, got {labels!r}")
    runtime.set_seed(seed)
    if scratch:
        config = AutoConfig.from_pretrained(models.resolve(None, "minilm"), num_labels=len(labels),
                                            id2label=dict(enumerate(labels)),
                                            label2id={name: i for i, name in enumerate(labels)})
        auto = AutoModelForSequenceClassification if task == "sequence-classification" else \
            AutoModelForTokenClassification
        return auto.from_config(config, attn_implementation=attn_implementation).to(device)
    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        model, _ = models.load_encoder(task, labels=labels, attn_implementation=attn_implementation)
    finally:
        hf_logging.set_verbosity(verbosity)
    return model.to(device)


def fit_tfidf(train_texts: Sequence[str], train_y: Sequence[int], ngrams: tuple[int, int] = (1, 1),
              C: float = 1.0) -> Callable[[Sequence[str]], np.ndarray]:
    """TF-IDF features (sublinear term frequency) and a logistic regression; returns ``predict``."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    if isinstance(train_texts, str):
        raise TypeError("fit_tfidf() takes a list of texts, not a single string")
    train_texts = list(train_texts)
    if len(train_texts) != len(train_y):
        raise ValueError(f"got {len(train_texts)} texts but {len(train_y)} labels")
    if len(set(np.asarray(train_y).tolist())) < 2:
        raise ValueError("fit_tfidf needs at least two classes in the training labels")
    vectorizer = TfidfVectorizer(ngram_range=tuple(ngrams), sublinear_tf=True)
    clf = LogisticRegression(C=C, max_iter=3000).fit(vectorizer.fit_transform(train_texts), train_y)
    return lambda new_texts: clf.predict(vectorizer.transform(list(new_texts)))


def tfidf_grid(task: PolarityTask, grid: Sequence[tuple[tuple[int, int], float]]):
    """Fit TF-IDF on the training split for each ``(ngrams, C)``; score validation and test.

    Returns a ``DataFrame`` with one row per setting (``ngrams``, ``C``, ``validation acc``,
    ``test acc``). Choose by ``validation acc`` only; ``test acc`` is there to be read off for
    the chosen row, and to show what choosing by test would do.
    """
    import pandas as pd

    if not grid:
        raise ValueError("the TF-IDF grid is empty")
    rows = []
    for ngrams, C in grid:
        predict = fit_tfidf(task.texts["train"], task.y["train"], ngrams, C)
        rows.append({"ngrams": tuple(ngrams), "C": C,
                     **{f"{split} acc": accuracy(predict(task.texts[split]), task.y[split])
                        for split in ("validation", "test")}})
    return pd.DataFrame(rows)


def embed_by_length(encoder: Any, tokenizer: Any, sentences: Sequence[str], *, bf16: bool = False,
                    batch_size: int = 128) -> np.ndarray:
    """Mean-pooled, L2-normalised sentence embeddings, in the order of ``sentences``.

    The sentences are embedded sorted by length, so each batch is padded only to its own
    longest member, and then put back in the original order.
    """
    if isinstance(sentences, str):
        raise TypeError("embed_by_length() takes a list of sentences, not a single string")
    sentences = list(sentences)
    if not sentences:
        raise ValueError("no sentences to embed")
    device = next(encoder.parameters()).device
    order = length_order([len(s) for s in sentences])
    with hardware.autocast(device, bf16):
        emb = models.embed(encoder, tokenizer, [sentences[i] for i in order], batch_size=batch_size)
    out = np.empty(tuple(emb.shape), dtype=np.float32)
    out[order] = emb.float().cpu().numpy()
    return out
