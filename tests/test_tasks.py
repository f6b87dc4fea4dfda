"""Unit tests of llmbook.tasks: subsets, the small-data recipe, TF-IDF, and (with the
assets) the polarity and NER tasks and fresh classifiers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import bert_classifier, toy_examples

from llmbook import regularizers, tasks


def test_balanced_subset_is_balanced_sorted_and_reproducible():
    labels = np.array([0] * 30 + [1] * 20)
    idx = tasks.balanced_subset(labels, 11, seed=3)
    assert len(idx) == 11 and len(set(idx.tolist())) == 11
    assert np.all(np.diff(idx) > 0)
    assert np.bincount(labels[idx]).tolist() == [5, 6]  # the remainder goes to the highest class
    assert np.array_equal(idx, tasks.balanced_subset(labels, 11, seed=3))
    assert not np.array_equal(idx, tasks.balanced_subset(labels, 11, seed=4))


def test_balanced_subset_three_classes_and_noncontiguous_ids():
    labels = np.repeat([2, 5, 9], 10)
    idx = tasks.balanced_subset(labels, 8, seed=0)
    values, counts = np.unique(labels[idx], return_counts=True)
    assert values.tolist() == [2, 5, 9] and counts.tolist() == [2, 3, 3]


def test_balanced_subset_matches_the_chapter_rule_for_two_classes():
    """Two classes: n // 2 + c * (n % 2) per class c, drawn from default_rng(100 + seed)."""
    labels = np.random.default_rng(0).integers(0, 2, size=200)
    rng = np.random.default_rng(100 + 7)
    expected = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == c), 25 + c, replace=False)
                                       for c in (0, 1)]))
    assert np.array_equal(tasks.balanced_subset(labels, 51, seed=7), expected)


@pytest.mark.parametrize("labels, n, match", [
    (np.array([0, 1, 1]), 4, "class 0 has 1 examples"),
    (np.array([0, 1]), 1, "at least the number of classes"),
    (np.array([0, 1]), 2.0, "must be an int"),
    (np.array([0.0, 1.0]), 2, "class ids"),
    (np.array([[0, 1]]), 2, "1-D"),
])
def test_balanced_subset_rejects_bad_input(labels, n, match):
    with pytest.raises(ValueError, match=match):
        tasks.balanced_subset(labels, n, seed=0)


@pytest.mark.parametrize("n, batch, epochs", [(50, 16, 15), (200, 16, 5), (999, 16, 3), (1000, 32, 3), (8452, 32, 3)])
def test_small_data_config_gives_enough_updates(n, batch, epochs):
    cfg = tasks.small_data_config(n, seed=1, lr=1e-4, bf16=False)
    assert (cfg.batch_size, cfg.epochs, cfg.seed, cfg.patience, cfg.lr) == (batch, epochs, 1, None, 1e-4)
    assert cfg.epochs * -(-n // cfg.batch_size) >= 60 and cfg.epochs >= 3


@pytest.mark.parametrize("kwargs", [dict(n=0), dict(n=True), dict(n=10, min_updates=0), dict(n=10, min_epochs=0)])
def test_small_data_config_rejects_bad_input(kwargs):
    with pytest.raises(ValueError):
        tasks.small_data_config(seed=0, lr=1e-4, bf16=False, **kwargs)


def toy_task() -> tasks.PolarityTask:
    """A PolarityTask over the toy examples (label 1 when token 5 occurs), built without assets."""
    enc = {"train": toy_examples(48, seed=0), "validation": toy_examples(20, seed=1), "test": toy_examples(30, seed=2)}
    y = {s: np.array([e["labels"] for e in examples]) for s, examples in enc.items()}

    class Tok:
        pad_token_id = 0

    return tasks.PolarityTask(labels=["neg", "pos"], splits={}, texts={s: [""] * len(v) for s, v in enc.items()},
                              y=y, enc=enc, tokenizer=Tok(), max_length=16)


def test_train_on_subset_scores_every_example_and_applies_changes_and_hooks():
    task = toy_task()
    seen = {}

    def prepare(model):
        seen["anchor"] = regularizers.parameter_snapshot(model, exclude=lambda n: n.startswith("classifier."))
        return {"extra_loss": regularizers.l2_sp_extra_loss(seen["anchor"], 0.5)}

    run = tasks.train_on_subset(task, 16, seed=3, lr=1e-3, min_updates=4, changes={"weight_decay": 0.0},
                                prepare=prepare, build=lambda seed: bert_classifier(seed), keep_model=True)
    assert run.n == 16 and run.seed == 3 and run.model is not None
    assert {s: len(c) for s, c in run.correct.items()} == {"validation": 20, "test": 30}
    assert set(np.unique(run.correct["test"]).tolist()) <= {0, 1}
    assert run.accuracy("test") == pytest.approx(run.correct["test"].mean())
    assert all(s.extra_loss is not None for s in run.result.steps), "the hook from prepare() ran at every step"
    assert run.result.examples_seen == 16 * 4 and run.result.history[-1].epoch == 4  # 1 batch of 16, >= 4 updates
    again = tasks.train_on_subset(task, 16, seed=3, lr=1e-3, min_updates=4, changes={"weight_decay": 0.0},
                                  prepare=prepare, build=lambda seed: bert_classifier(seed))
    assert np.array_equal(again.correct["test"], run.correct["test"]) and again.model is None
    with pytest.raises(KeyError, match="not 'train'"):
        run.accuracy("train")


def test_train_on_subset_refuses_bad_arguments():
    task = toy_task()
    build = lambda seed: bert_classifier(seed)  # noqa: E731
    with pytest.raises(ValueError, match="no field"):
        tasks.train_on_subset(task, 8, 0, changes={"weight_decy": 0.1}, build=build)
    with pytest.raises(ValueError, match="splits must name"):
        tasks.train_on_subset(task, 8, 0, splits=("dev",), build=build)
    with pytest.raises(ValueError, match="may not set"):
        tasks.train_on_subset(task, 8, 0, prepare=lambda m: {"log": None}, build=build)


def test_train_on_subset_takes_all_labels_and_augmented_examples():
    task = toy_task()
    build = lambda seed: bert_classifier(seed)  # noqa: E731
    run = tasks.train_on_subset(task, None, 0, lr=1e-3, min_updates=2, build=build, splits=("test",))
    assert run.n == 48 and run.result.examples_seen == 48 * 3  # batch 16: 3 updates an epoch, 3 epochs
    got = {}

    def doubled(idx):
        got["idx"] = idx
        return task.train_examples(idx) * 2

    run = tasks.train_on_subset(task, 16, 0, lr=1e-3, min_updates=2, build=build, examples=doubled)
    assert np.array_equal(got["idx"], tasks.balanced_subset(task.y["train"], 16, 0))
    assert run.n == 16 and run.result.examples_seen == 32 * 3, "the recipe counts 16 sentences; 32 examples train"


def test_fit_tfidf_learns_a_word_rule_and_rejects_bad_input():
    good = [f"a good film number {i}" for i in range(10)]
    bad = [f"a bad film number {i}" for i in range(10)]
    predict = tasks.fit_tfidf(good + bad, [1] * 10 + [0] * 10, ngrams=(1, 2), C=10.0)
    assert predict(["good", "bad", "really good stuff"]).tolist() == [1, 0, 1]
    with pytest.raises(TypeError, match="list of texts"):
        tasks.fit_tfidf("good", [1])
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        tasks.fit_tfidf(["a", "b"], [1])
    with pytest.raises(ValueError, match="two classes"):
        tasks.fit_tfidf(["a", "b"], [1, 1])


@pytest.mark.assets
def test_polarity_task_subsets_and_encodes():
    from llmbook import models

    _, tok = models.load_encoder("embedding")
    task = tasks.polarity_task(tok, n_train=40, n_eval=12)
    assert {name: len(task.texts[name]) for name in tasks.SPLITS} == {"train": 40, "validation": 12, "test": 12}
    assert task.labels == ["negative", "positive"]
    assert 0 < task.y["train"].mean() < 1, "a random subset, not the first (all positive) rows"
    assert all(len(e["input_ids"]) <= 64 for e in task.enc["train"])
    assert [e["labels"] for e in task.train_examples([3, 1])] == task.y["train"][[3, 1]].tolist()
    assert task.pad_token_id == tok.pad_token_id
    with pytest.raises(ValueError, match="positive int"):
        tasks.polarity_task(tok, n_train=0)
    with pytest.raises(ValueError, match="the split has"):
        tasks.polarity_task(tok, n_eval=10**6)


@pytest.mark.assets
def test_new_classifier_pretrained_vs_scratch():
    a = tasks.new_classifier(["neg", "pos"], seed=0)
    b = tasks.new_classifier(["neg", "pos"], seed=0)
    s = tasks.new_classifier(["neg", "pos"], seed=0, scratch=True)
    word = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(a.get_parameter(word), b.get_parameter(word))
    assert torch.equal(a.classifier.weight, b.classifier.weight), "the seed fixes the new head"
    assert not torch.equal(a.get_parameter(word), s.get_parameter(word)), "scratch weights are random"
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in s.parameters())
    assert s.config.id2label == {0: "neg", 1: "pos"}
    with pytest.raises(ValueError, match="two distinct classes"):
        tasks.new_classifier(["x", "x"], seed=0)


@pytest.mark.assets
def test_embed_by_length_keeps_the_input_order():
    from llmbook import models

    encoder, tok = models.load_encoder("embedding")
    sentences = ["a rather long sentence about a film that goes on and on", "short", "a medium sentence"]
    emb = tasks.embed_by_length(encoder, tok, sentences)
    one_by_one = np.stack([models.embed(encoder, tok, [s]).float().numpy()[0] for s in sentences])
    np.testing.assert_allclose(emb, one_by_one, atol=1e-5)
    with pytest.raises(TypeError):
        tasks.embed_by_length(encoder, tok, "one string")
    with pytest.raises(ValueError, match="no sentences"):
        tasks.embed_by_length(encoder, tok, [])


def test_new_classifier_refuses_an_unknown_task():
    with pytest.raises(ValueError, match="task must be one of"):
        tasks.new_classifier(["neg", "pos"], seed=0, task="ner")
    with pytest.raises(ValueError, match="task must be one of"):
        tasks.new_classifier(["neg", "pos"], seed=0, task="token-classification ", scratch=True)


@pytest.mark.assets
def test_new_classifier_for_token_classification():
    from transformers import BertForSequenceClassification, BertForTokenClassification

    labels = ["O", "B-x", "I-x"]
    a = tasks.new_classifier(labels, seed=0, task="token-classification")
    b = tasks.new_classifier(labels, seed=0, task="token-classification")
    s = tasks.new_classifier(labels, seed=0, task="token-classification", scratch=True)
    for model in (a, s):
        assert isinstance(model, BertForTokenClassification)
        assert model.classifier.out_features == 3 and model.config.id2label == dict(enumerate(labels))
    assert isinstance(tasks.new_classifier(labels, seed=0), BertForSequenceClassification)
    assert torch.equal(a.classifier.weight, b.classifier.weight), "the seed fixes the new head"
    word = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(a.get_parameter(word), b.get_parameter(word))
    assert not torch.equal(a.get_parameter(word), s.get_parameter(word)), "scratch weights are random"
    a.eval()
    with torch.no_grad():
        logits = a(input_ids=torch.tensor([[101, 2000, 2001, 2002, 102]])).logits
    assert logits.shape == (1, 5, 3), "one score per token and label"


@pytest.mark.assets
def test_ner_task_splits_labels_and_encoding():
    from llmbook import models

    task = tasks.ner_task(n_train=30, n_eval=10)
    assert {name: len(task.words[name]) for name in tasks.SPLITS} == {"train": 30, "validation": 10, "test": 10}
    assert {name: len(task.tags[name]) for name in tasks.SPLITS} == {"train": 30, "validation": 10, "test": 10}
    for name in tasks.SPLITS:
        assert [len(w) for w in task.words[name]] == [len(t) for t in task.tags[name]]
        assert [len(g) for g in task.gold_tags(name)] == [len(w) for w in task.words[name]]
    assert task.labels[0] == "O" and len(task.labels) == 1 + 2 * len(task.types)
    assert task.types == sorted(task.types) and "person" in task.types
    assert all(label == "O" or (label[:2] in ("B-", "I-") and label[2:] in task.types) for label in task.labels)
    assert task.gold_tags("train")[0] == [task.labels[t] for t in task.tags["train"][0]]
    full = tasks.ner_task()
    assert len(full.words["train"]) > 30
    assert task.words["validation"] == full.words["validation"][:10], "the first tweets of each split"
    # continuation labels: B-x -> I-x of the same type, for every type, and nothing else
    continuation = task.continuation_labels()
    assert sorted(continuation) == sorted(i for i, label in enumerate(task.labels) if label.startswith("B-"))
    for b, i in continuation.items():
        assert task.labels[b][:2] == "B-" and task.labels[i] == "I-" + task.labels[b][2:]
    # encode: every split, one n_words per tweet, at most one labelled token per word
    _, tok = models.load_encoder("embedding")
    enc = task.encode(tok)
    assert set(enc) == set(tasks.SPLITS)
    for name in tasks.SPLITS:
        assert [e["n_words"] for e in enc[name]] == [len(w) for w in task.words[name]]
        for e in enc[name]:
            assert len(e["labels"]) == len(e["input_ids"]) <= 128
            assert sum(label != -100 for label in e["labels"]) == e["n_words"]
    short = task.encode(tok, max_length=8)
    assert [e["n_words"] for e in short["train"]] == [len(w) for w in task.words["train"]]
    assert any(sum(label != -100 for label in e["labels"]) < e["n_words"] for e in short["train"])
    every = task.encode(tok, label_all_subtokens=True, continuation_label=continuation)
    assert [e["n_words"] for e in every["train"]] == [e["n_words"] for e in enc["train"]]
    with pytest.raises(ValueError, match="positive int"):
        tasks.ner_task(n_train=0)


@pytest.mark.assets
def test_ner_task_refuses_more_tweets_than_the_split_has():
    with pytest.raises(ValueError, match="but the split has"):
        tasks.ner_task(n_eval=10**6)
