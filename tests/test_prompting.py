"""Unit tests of llmbook.prompting on a tiny random Llama and a tiny trained BPE tokenizer (no assets)."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from llmbook import prompting as P

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "a gripping film with a great cast", "a tedious mess of a movie", "the plot is thin but the acting is good",
    "positive negative good bad yes no", "Review: one of the best films of the year",
    "Sentiment: positive", "Sentiment: negative", "I would not watch it again",
] * 20


@pytest.fixture(scope="module")
def tokenizer():
    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(CORPUS, vocab_size=400, min_frequency=2,
                            special_tokens=["<|im_start|>", "<|im_end|>"], show_progress=False)
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|im_end|>",
                                  pad_token="<|im_end|>", bos_token="<|im_start|>")
    tok.chat_template = CHAT_TEMPLATE
    tok.padding_side = "left"
    return tok


@pytest.fixture(scope="module")
def model(tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                         eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    lm = LlamaForCausalLM(config)
    with torch.no_grad():  # larger weights: sharper, non-uniform next-token distributions
        for p in lm.parameters():
            p.mul_(8.0) if p.dim() > 1 else None
    return lm.eval()


def _single_token_words(tokenizer, n=2):
    words = [w for w in ["positive", "negative", "good", "bad", "great", "the", "a", "is", "film"]
             if len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1]
    assert len(words) >= n, "the test tokenizer should know a few whole words"
    return words[:n]


# --------------------------------------------------------------------------- intervals


def test_wilson_known_values_and_symmetry():
    lo, hi = P.wilson_interval(0, 10)
    assert lo == 0.0 and math.isclose(hi, 0.27753, abs_tol=1e-4)
    lo, hi = P.wilson_interval(5, 10)
    assert math.isclose(lo, 0.23659, abs_tol=1e-4) and math.isclose(hi, 0.76341, abs_tol=1e-4)
    lo, hi = P.wilson_interval(37, 50)
    lo2, hi2 = P.wilson_interval(13, 50)
    assert math.isclose(lo, 1 - hi2, abs_tol=1e-12) and math.isclose(hi, 1 - lo2, abs_tol=1e-12)
    # for large n it approaches the normal approximation
    lo, hi = P.wilson_interval(7000, 10000)
    half = 1.959964 * math.sqrt(0.7 * 0.3 / 10000)
    assert math.isclose(hi - lo, 2 * half, rel_tol=1e-3)


def test_wilson_rejects_bad_counts():
    with pytest.raises(ValueError):
        P.wilson_interval(11, 10)
    with pytest.raises(ValueError):
        P.wilson_interval(0, 0)
    with pytest.raises(TypeError):
        P.wilson_interval(0.5, 10)


def test_bootstrap_interval_agrees_with_wilson_and_keeps_rows_together():
    rng = np.random.default_rng(0)
    correct = rng.random(2000) < 0.7
    lo, hi = P.bootstrap_interval(correct, n_boot=4000)
    wlo, whi = P.wilson_interval(int(correct.sum()), len(correct))
    assert abs(lo - wlo) < 0.006 and abs(hi - whi) < 0.006
    # three identical runs carry no more information than one: the interval must not shrink
    lo3, hi3 = P.bootstrap_interval(np.stack([correct] * 3, axis=1), n_boot=4000)
    assert math.isclose(hi3 - lo3, hi - lo, rel_tol=1e-9)
    assert P.bootstrap_interval(correct, seed=1) == P.bootstrap_interval(correct, seed=1)
    with pytest.raises(ValueError):
        P.bootstrap_interval(np.ones((1, 3)))


def test_inference_dtype_is_a_float_type():
    assert P.inference_dtype("cpu") in (torch.float32, torch.bfloat16)
    assert P.inference_dtype("meta") == torch.float32


# --------------------------------------------------------------------------- label words


def test_label_word_ids_single_tokens(tokenizer):
    words = _single_token_words(tokenizer)
    ids = P.label_word_ids(tokenizer, words)
    assert [tokenizer.decode([i]) for i in ids] == words


def test_label_word_ids_refuses_multi_token_words(tokenizer):
    word = "unforgettably"
    assert len(tokenizer(word, add_special_tokens=False)["input_ids"]) > 1
    with pytest.raises(ValueError, match=word):
        P.label_word_ids(tokenizer, [_single_token_words(tokenizer)[0], word])
    with pytest.raises(TypeError):
        P.label_word_ids(tokenizer, "positive")
    w = _single_token_words(tokenizer, 1)[0]
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


def test_common_prefix_ends_at_a_clean_token_boundary(tokenizer):
    prompts = [P.chat_prompt(tokenizer, f"Review: {t}") for t in ["a gripping film", "a tedious mess"]]
    prefix = P.common_prefix(prompts, tokenizer)
    assert prefix.endswith("user\n") and all(p.startswith(prefix) for p in prompts)
    ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    for p in prompts:
        assert tokenizer(p, add_special_tokens=False)["input_ids"][:len(ids)] == ids


# --------------------------------------------------------------------------- scoring and generation


def _prompts(tokenizer):
    texts = ["a gripping film", "the plot is thin but the acting is good and the cast is great",
             "bad", "I would not watch it again", "one of the best films of the year"]
    demos = [("a tedious mess of a movie", 0), ("a great cast", 1)]
    template = P.PromptTemplate("t", "Review: {text}", ("negative", "positive"))
    return P.few_shot_prompts(tokenizer, template, texts, demos)


def _reference_logprobs(model, tokenizer, prompt, ids):
    x = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():
        return torch.log_softmax(model(input_ids=x).logits[0, -1], -1)[ids]


def test_score_label_words_matches_unbatched_forward(model, tokenizer):
    prompts = _prompts(tokenizer)
    ids = P.label_word_ids(tokenizer, _single_token_words(tokenizer, 3))
    reference = torch.stack([_reference_logprobs(model, tokenizer, p, ids) for p in prompts])
    batched = P.score_label_words(model, tokenizer, prompts, ids, batch_size=4)  # left padding inside
    torch.testing.assert_close(batched, reference, atol=1e-5, rtol=1e-5)
    cached = P.score_label_words(model, tokenizer, prompts, ids, batch_size=3,
                                 prefix=P.common_prefix(prompts, tokenizer))
    torch.testing.assert_close(cached, reference, atol=1e-5, rtol=1e-5)
    assert (reference.exp().sum(1) < 1).all()


def test_score_label_words_rejects_bad_input(model, tokenizer):
    prompts = _prompts(tokenizer)
    with pytest.raises(TypeError):
        P.score_label_words(model, tokenizer, prompts[0], [1, 2])
    with pytest.raises(ValueError):
        P.score_label_words(model, tokenizer, prompts, [len(tokenizer) + 5])
    with pytest.raises(ValueError):
        P.score_label_words(model, tokenizer, prompts, [1, 2], prefix="not a prefix")
    with pytest.raises(ValueError, match="splits a token"):  # a cut inside a word
        P.score_label_words(model, tokenizer, prompts, [1, 2], prefix=prompts[0][:prompts[0].index("tedious") + 3])


def test_generate_answers_matches_transformers_generate(model, tokenizer):
    prompts = _prompts(tokenizer)
    expected = []
    for p in prompts:
        x = tokenizer(p, return_tensors="pt", add_special_tokens=False)
        out = model.generate(**x, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        expected.append(tokenizer.decode(out[0, x["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    assert P.generate_answers(model, tokenizer, prompts, max_new_tokens=6, batch_size=3) == expected
    cached = P.generate_answers(model, tokenizer, prompts, max_new_tokens=6, batch_size=5,
                                prefix=P.common_prefix(prompts, tokenizer))
    assert cached == expected


def test_grouped_query_switch_is_scoped_to_the_call(model, tokenizer, monkeypatch):
    prompts = _prompts(tokenizer)
    ids = P.label_word_ids(tokenizer, _single_token_words(tokenizer, 2))
    monkeypatch.delenv("TRANSFORMERS_SDPA_FORCE_GQA", raising=False)
    P.score_label_words(model, tokenizer, prompts, ids, prefix=P.common_prefix(prompts, tokenizer))
    assert "TRANSFORMERS_SDPA_FORCE_GQA" not in os.environ
    monkeypatch.setenv("TRANSFORMERS_SDPA_FORCE_GQA", "0")
    P.generate_answers(model, tokenizer, prompts, max_new_tokens=2)
    assert os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] == "0"
    with P._grouped_query_sdpa(torch.device("cpu")):  # on a CPU the switch is on inside the call
        assert os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] == "1"
    assert os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] == "0"
    with P._grouped_query_sdpa(torch.device("meta")):  # not a CPU: left alone
        assert os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] == "0"
