"""Unit tests of llmbook.evaluation: predictions in input order, accuracy, word-level tags, calibration."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import bert_classifier as tiny_classifier
from tiny import bert_config as tiny_config
from tiny import toy_examples
from transformers import BertForSequenceClassification, BertForTokenClassification

from llmbook import evaluation
from llmbook.encoding import pad_batch
from llmbook.losses import IGNORE_INDEX

# --------------------------------------------------------------------------- predictions


def test_predictions_come_back_in_input_order():
    model = tiny_classifier().eval()
    examples = toy_examples(20, seed=4)
    batched = evaluation.predict_logits(model, examples, pad_token_id=0, batch_size=6)
    for e, logits in zip(examples, batched, strict=True):
        one = model(**pad_batch([{"input_ids": e["input_ids"]}], 0)).logits[0].detach().numpy()
        np.testing.assert_allclose(logits, one, rtol=1e-4, atol=1e-5)


def test_eval_mode_is_deterministic_and_train_mode_is_not():
    model = tiny_classifier()
    model.config.hidden_dropout_prob = 0.5
    model = BertForSequenceClassification(model.config)
    examples = toy_examples(10)
    a, b = (np.stack(evaluation.predict_logits(model, examples, pad_token_id=0)) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    c, d = (np.stack(evaluation.predict_logits(model, examples, pad_token_id=0, train_mode=True)) for _ in range(2))
    assert not np.allclose(c, d)


def test_token_predictions_and_word_level_tags():
    torch.manual_seed(0)
    model = BertForTokenClassification(tiny_config(num_labels=3))
    examples = [{"input_ids": [1, 7, 8, 2], "labels": [-100, 1, -100, -100]},
                {"input_ids": [1, 7, 8, 9, 10, 2], "labels": [-100, 0, 2, -100, 1, -100]}]
    preds = evaluation.predict_labels(model, examples, pad_token_id=0)
    assert [p.shape for p in preds] == [(4,), (6,)]
    names = ["O", "B-x", "I-x"]
    pred_tags, gold_tags = evaluation.word_level_tags([[0, 2, 0, 0], [0, 1, 1, 0, 0, 0]],
                                                      [e["labels"] for e in examples], names, n_words=[1, 3])
    assert gold_tags == [["B-x"], ["O", "I-x", "B-x"]]
    assert pred_tags == [["I-x"], ["B-x", "B-x", "O"]]


def test_accuracy_and_input_checks():
    assert evaluation.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        evaluation.accuracy([1, 0, 1], [1, 1])


# --------------------------------------------------------------------------- word-level tags and truncation


NAMES = ["O", "B-x", "I-x"]
# two sentences of 3 and 2 words, first-sub-token labels: 3 and 2 labelled tokens
LABELS = [[IGNORE_INDEX, 1, 2, IGNORE_INDEX, 0, IGNORE_INDEX], [IGNORE_INDEX, 0, 1, IGNORE_INDEX]]
PREDS = [[0, 1, 2, 2, 0, 0], [0, 0, 0, 0]]


def test_word_level_tags_passes_when_nothing_was_cut():
    preds, golds = evaluation.word_level_tags(PREDS, LABELS, NAMES, n_words=[3, 2])
    assert golds == [["B-x", "I-x", "O"], ["O", "B-x"]]
    assert preds == [["B-x", "I-x", "O"], ["O", "O"]]
    assert evaluation.word_level_tags(PREDS, LABELS, NAMES, n_words=None) == (preds, golds)
    assert evaluation.word_level_tags(PREDS, LABELS, dict(enumerate(NAMES)), n_words=np.array([3, 2])) == (preds, golds)


def test_word_level_tags_needs_the_word_counts_by_keyword():
    with pytest.raises(TypeError, match="n_words"):
        evaluation.word_level_tags(PREDS, LABELS, NAMES)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        evaluation.word_level_tags(PREDS, LABELS, NAMES, [3, 2])  # type: ignore[misc]


def test_word_level_tags_raises_when_truncation_cut_words():
    # the first sentence had 5 words but only 3 kept a labelled token, the second 4 instead of 2
    with pytest.raises(ValueError, match="4 words of 2 of 2 sentences have no labelled token"):
        evaluation.word_level_tags(PREDS, LABELS, NAMES, n_words=[5, 4])
    with pytest.raises(ValueError, match="1 words of 1 of 2 sentences have no labelled token"):
        evaluation.word_level_tags(PREDS, LABELS, NAMES, n_words=[3, 3], on_truncation="raise")


def test_word_level_tags_warns_and_scores_what_is_left():
    with pytest.warns(UserWarning, match="2 words of 1 of 2 sentences have no labelled token"):
        preds, golds = evaluation.word_level_tags(PREDS, LABELS, NAMES, n_words=[5, 2], on_truncation="warn")
    assert golds == [["B-x", "I-x", "O"], ["O", "B-x"]]
    assert preds == [["B-x", "I-x", "O"], ["O", "O"]]


def test_word_level_tags_refuses_bad_policies_and_counts():
    with pytest.raises(ValueError, match="on_truncation must be one of"):
        evaluation.word_level_tags(PREDS, LABELS, NAMES, n_words=[3, 2], on_truncation="ignore")
    with pytest.raises(ValueError, match="1 word counts for 2 label sequences"):
        evaluation.word_level_tags(PREDS, LABELS, NAMES, n_words=[3])
    with pytest.raises(ValueError, match="3 labelled tokens for 2 words"):
        evaluation.word_level_tags(PREDS, LABELS, NAMES, n_words=[2, 2])
    with pytest.raises(ValueError, match="1 predicted sequences for 2 label sequences"):
        evaluation.word_level_tags(PREDS[:1], LABELS, NAMES, n_words=[3, 2])
    with pytest.raises(ValueError, match="sequence 1: 3 predictions for 4 labels"):
        evaluation.word_level_tags([PREDS[0], [0, 0, 0]], LABELS, NAMES, n_words=[3, 2])


# --------------------------------------------------------------------------- calibration


