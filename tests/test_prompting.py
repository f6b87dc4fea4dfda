"""Unit tests of llmbook.prompting on a tiny trained BPE tokenizer (no assets).

The engine that runs the model on these prompts is tested in test_inference.py.
"""

from __future__ import annotations

import ast
import subprocess
import sys

import numpy as np
import pytest
from tiny import chat_tokenizer, single_token_words

from llmbook import prompting as P


@pytest.fixture(scope="module")
def tokenizer():
    return chat_tokenizer()


# --------------------------------------------------------------------------- label words


def test_label_word_ids_single_tokens(tokenizer):
    words = single_token_words(tokenizer)
    ids = P.label_word_ids(tokenizer, words)
    assert [tokenizer.decode([i]) for i in ids] == words


def test_label_word_ids_refuses_multi_token_words(tokenizer):
    word = "unforgettably"
    assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) > 1
    with pytest.raises(ValueError, match=word):
        P.label_word_ids(tokenizer, [single_token_words(tokenizer)[0], word])
    with pytest.raises(TypeError):
        P.label_word_ids(tokenizer, "positive")
    w = single_token_words(tokenizer, 1)[0]
    with pytest.raises(ValueError):
        P.label_word_ids(tokenizer, [w, w])


# --------------------------------------------------------------------------- calibration


def test_contextual_calibration_makes_content_free_input_uniform():
    cf = np.array([[0.2, 0.6], [0.1, 0.3]])  # both rows say 25% / 75% after renormalising
    out = P.contextual_calibration(cf, cf)
    np.testing.assert_allclose(out, 0.5)
    probs = np.array([[0.5, 0.5], [0.2, 0.8], [0.05, 0.05]])
    out = P.contextual_calibration(probs, cf[0])
    # p / p_cf with p_cf = (0.25, 0.75): (0.5/0.25, 0.5/0.75) = (2, 2/3) -> (0.75, 0.25)
    np.testing.assert_allclose(out[0], [0.75, 0.25])
    np.testing.assert_allclose(out.sum(1), 1.0)
    np.testing.assert_allclose(out[2], out[0])  # scale of a row does not matter
    # a uniform content-free distribution changes nothing but the normalisation
    np.testing.assert_allclose(P.contextual_calibration(probs, [0.3, 0.3]), probs / probs.sum(1, keepdims=True))


def test_contextual_calibration_rejects_bad_shapes():
    with pytest.raises(ValueError):
        P.contextual_calibration(np.ones((3, 2)), np.ones(3))
    with pytest.raises(ValueError):
        P.contextual_calibration(-np.ones((3, 2)), np.ones(2))
    with pytest.raises(ValueError):
        P.contextual_calibration(np.ones(2), np.ones(2))


# --------------------------------------------------------------------------- parsing


@pytest.mark.parametrize("text, expected", [
    ("Positive.", 1), ("This review is negative.", 0), ("NEGATIVE", 0), ("positive or negative?", None),
    ("I think it is neutral", None), ("", None), ("non-positive", None), ("positively", None),
])
def test_parse_generated_label(text, expected):
    assert P.parse_generated_label(text, ["negative", "positive"]) == expected


# --------------------------------------------------------------------------- demonstrations


def test_sample_demonstrations_balanced_and_seeded():
    labels = [0] * 30 + [1] * 10
    idx = P.sample_demonstrations(labels, 8, seed=3)
    assert len(set(idx)) == 8 and sorted(np.bincount([labels[i] for i in idx]).tolist()) == [4, 4]
    assert idx == P.sample_demonstrations(labels, 8, seed=3)
    assert idx != P.sample_demonstrations(labels, 8, seed=4)
    odd = P.sample_demonstrations(labels, 5, seed=0)
    assert sorted(np.bincount([labels[i] for i in odd], minlength=2).tolist()) == [2, 3]
    with pytest.raises(ValueError):
        P.sample_demonstrations(labels, 41, seed=0)
    with pytest.raises(ValueError):
        P.sample_demonstrations([0] * 30 + [1] * 2, 8, seed=0)  # only 2 positives for 4 slots


def test_few_shot_prompts_refuse_leaked_demonstrations(tokenizer):
    template = P.PromptTemplate("t", "Review: {text}", ("negative", "positive"))
    demos = [("a tedious mess", 0), ("a gripping film", 1)]
    prompts = P.few_shot_prompts(tokenizer, template, ["the plot is thin"], demos)
    assert prompts[0].index("a tedious mess") < prompts[0].index("a gripping film") < prompts[0].index("plot")
    assert "<|im_start|>assistant\npositive<|im_end|>" in prompts[0]
    assert prompts[0].endswith("<|im_start|>assistant\n")
    with pytest.raises(ValueError, match="evaluation set"):
        P.few_shot_prompts(tokenizer, template, ["A  gripping FILM"], demos)
    with pytest.raises(ValueError, match="evaluation set"):
        P.few_shot_prompts(tokenizer, template, ["other"], demos, eval_texts=["a tedious mess"])
    with pytest.raises(ValueError):
        P.PromptTemplate("bad", "no slot", ("a", "b"))


def test_answer_prefix_goes_into_demonstrations_and_prompts(tokenizer):
    template = P.PromptTemplate("t", "Review: {text}", (" negative", " positive"), answer_prefix="Sentiment:")
    assert template.answer(1) == "Sentiment: positive"
    prompts = P.few_shot_prompts(tokenizer, template, ["the plot is thin"], [("a tedious mess", 0)])
    assert "<|im_start|>assistant\nSentiment: negative<|im_end|>" in prompts[0]
    assert prompts[0].endswith("<|im_start|>assistant\nSentiment:")
    with pytest.raises(ValueError):
        template.answer(2)
    with pytest.raises(ValueError, match="space"):
        P.PromptTemplate("t", "{text}", (" a", " b"), answer_prefix="is ")


# --------------------------------------------------------------------------- module contents


def test_prompting_keeps_prompts_only():
    moved = ["wilson_interval", "bootstrap_interval", "inference_dtype", "common_prefix", "score_label_words",
             "generate_answers", "_grouped_query_sdpa", "_pad", "_encode_batches", "_batch_inputs", "_ids",
             "_splits_cleanly"]
    assert [name for name in moved if hasattr(P, name)] == []
    assert sorted(P.__all__) == ["PromptTemplate", "chat_prompt", "contextual_calibration", "few_shot_prompts",
                                 "label_word_ids", "parse_generated_label", "sample_demonstrations"]
    assert all(hasattr(P, name) for name in P.__all__)


def test_prompting_imports_no_other_book_module_but_inference():
    code = ("import sys, llmbook.prompting; "
            "print(sorted(m for m in sys.modules if m.startswith('llmbook.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert set(ast.literal_eval(loaded)) <= {"llmbook.prompting", "llmbook.inference", "llmbook.encoding",
                                 "llmbook.hardware", "llmbook.losses"}, loaded


def test_contextual_calibration_refuses_rows_that_underflowed_to_zero():
    with pytest.raises(ValueError, match="rows of probs are all 0"):
        P.contextual_calibration([[0.2, 0.8], [0.0, 0.0]], [0.5, 0.5])
