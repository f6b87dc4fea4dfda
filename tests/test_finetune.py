"""Unit tests of llmbook.finetune: subsets, the small-data recipe, TF-IDF, and (with the
assets) the polarity task and fresh classifiers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from llmbook import finetune


def test_balanced_subset_is_balanced_sorted_and_reproducible():
    labels = np.array([0] * 30 + [1] * 20)
    idx = finetune.balanced_subset(labels, 11, seed=3)
    assert len(idx) == 11 and len(set(idx.tolist())) == 11
    assert np.all(np.diff(idx) > 0)
    assert np.bincount(labels[idx]).tolist() == [5, 6]  # the remainder goes to the highest class
    assert np.array_equal(idx, finetune.balanced_subset(labels, 11, seed=3))
    assert not np.array_equal(idx, finetune.balanced_subset(labels, 11, seed=4))


def test_balanced_subset_three_classes_and_noncontiguous_ids():
    labels = np.repeat([2, 5, 9], 10)
    idx = finetune.balanced_subset(labels, 8, seed=0)
    values, counts = np.unique(labels[idx], return_counts=True)
    assert values.tolist() == [2, 5, 9] and counts.tolist() == [2, 3, 3]


def test_balanced_subset_matches_the_chapter_rule_for_two_classes():
    """Two classes: n // 2 + c * (n % 2) per class c, drawn from default_rng(100 + seed)."""
    labels = np.random.default_rng(0).integers(0, 2, size=200)
    rng = np.random.default_rng(100 + 7)
    expected = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), 25 + c, replace=False)
                                       for c in (0, 1)]))
    assert np.array_equal(finetune.balanced_subset(labels, 51, seed=7), expected)


@pytest.mark.parametrize("labels, n, match", [
    (np.array([0, 1, 1]), 4, "class 0 has 1 examples"),
    (np.array([0, 1]), 1, "at least the number of classes"),
    (np.array([0, 1]), 2.0, "must be an int"),
    (np.array([0.0, 1.0]), 2, "class ids"),
    (np.array([[0, 1]]), 2, "1-D"),
])
def test_balanced_subset_rejects_bad_input(labels, n, match):
    with pytest.raises(ValueError, match=match):
        finetune.balanced_subset(labels, n, seed=0)


@pytest.mark.parametrize("n, batch, epochs", [(50, 16, 15), (200, 16, 5), (999, 16, 3), (1000, 32, 3), (8452, 32, 3)])
def test_small_data_config_gives_enough_updates(n, batch, epochs):
    cfg = finetune.small_data_config(n, seed=1, lr=1e-4, bf16=False)
    assert (cfg.batch_size, cfg.epochs, cfg.seed, cfg.patience, cfg.lr) == (batch, epochs, 1, None, 1e-4)
    assert cfg.epochs * -(-n // cfg.batch_size) >= 60 and cfg.epochs >= 3


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(n=True), dict(n=10, min_updates=0), dict(n=10, min_epochs=0)])
def test_small_data_config_rejects_bad_input(kwargs):
    with pytest.raises(ValueError):
        finetune.small_data_config(seed=0, lr=1e-4, bf16=False, **kwargs)


def test_fit_tfidf_learns_a_word_rule_and_rejects_bad_input():
    good = [f"a good film number {i}" for i in range(10)]
    bad = [f"a bad film number {i}" for i in range(10)]
    predict = finetune.fit_tfidf(good + bad, [1] * 10 + [0] * 10, ngrams=(1, 2), C=10.0)
    assert predict(["good", "bad", "really good stuff"]).tolist() == [1, 0, 1]
    with pytest.raises(TypeError, match="list of texts"):
        finetune.fit_tfidf("good", [1])
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        finetune.fit_tfidf(["a", "b"], [1])
    with pytest.raises(ValueError, match="two classes"):
        finetune.fit_tfidf(["a", "b"], [1, 1])


@pytest.mark.assets
def test_polarity_task_subsets_and_encodes():
    from llmbook import models

    _, tok = models.load_encoder("embedding")
    task = finetune.polarity_task(tok, n_train=40, n_eval=12)
    assert {name: len(task.texts[name]) for name in finetune.SPLITS} == {"train": 40, "validation": 12, "test": 12}
    assert task.labels == ["negative", "positive"]
    assert 0 < task.y["train"].mean() < 1, "a random subset, not the first (all positive) rows"
    assert all(len(e["input_ids"]) <= 64 for e in task.enc["train"])
    assert [e["labels"] for e in task.train_examples([3, 1])] == task.y["train"][[3, 1]].tolist()
    assert task.pad_token_id == tok.pad_token_id
    with pytest.raises(ValueError, match="positive int"):
        finetune.polarity_task(tok, n_train=0)
    with pytest.raises(ValueError, match="the split has"):
        finetune.polarity_task(tok, n_eval=10**6)


@pytest.mark.assets
def test_new_classifier_pretrained_vs_scratch():
    a = finetune.new_classifier(["neg", "pos"], seed=0)
    b = finetune.new_classifier(["neg", "pos"], seed=0)
    s = finetune.new_classifier(["neg", "pos"], seed=0, scratch=True)
    word = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(a.get_parameter(word), b.get_parameter(word))
    assert torch.equal(a.classifier.weight, b.classifier.weight), "the seed fixes the new head"
    assert not torch.equal(a.get_parameter(word), s.get_parameter(word)), "scratch weights are random"
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in s.parameters())
    assert s.config.id2label == {0: "neg", 1: "pos"}
    with pytest.raises(ValueError, match="two distinct classes"):
        finetune.new_classifier(["x", "x"], seed=0)


@pytest.mark.assets
def test_embed_by_length_keeps_the_input_order():
    from llmbook import models

    encoder, tok = models.load_encoder("embedding")
    sentences = ["a rather long sentence about a film that goes on and on", "short", "a medium sentence"]
    emb = finetune.embed_by_length(encoder, tok, sentences)
    one_by_one = np.stack([models.embed(encoder, tok, [s]).float().numpy()[0] for s in sentences])
    np.testing.assert_allclose(emb, one_by_one, atol=1e-5)
    with pytest.raises(TypeError):
        finetune.embed_by_length(encoder, tok, "one string")
    with pytest.raises(ValueError, match="no sentences"):
        finetune.embed_by_length(encoder, tok, [])
