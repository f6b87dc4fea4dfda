"""Unit tests of llmbook.inference on a tiny random Llama and a tiny trained BPE tokenizer (no assets)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from tiny import chat_tokenizer, single_token_words

from llmbook import hardware
from llmbook import inference as I
from llmbook import prompting as P


@pytest.fixture(scope="module")
def tokenizer():
    return chat_tokenizer()


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


# --------------------------------------------------------------------------- module boundaries


def test_inference_imports_no_prompting_and_no_stats():
    code = ("import sys, llmbook.inference; "
            "print(sorted(m for m in sys.modules if m.startswith('llmbook.')))")
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "llmbook.prompting" not in loaded and "llmbook.stats" not in loaded, loaded


# --------------------------------------------------------------------------- dtype


def test_inference_dtype_is_fp32_by_default_and_on_devices_without_bf16(monkeypatch):
    monkeypatch.delenv(hardware.PRECISION_ENV, raising=False)
    assert hardware.inference_dtype("cpu") == torch.float32  # the default precision, whatever the CPU
    monkeypatch.setenv(hardware.PRECISION_ENV, "auto")
    assert hardware.inference_dtype("meta") == torch.float32


def test_inference_dtype_is_fp32_unless_auto_and_native(monkeypatch):
    monkeypatch.setattr(hardware, "bf16_is_native", lambda device: True)
    monkeypatch.delenv("LLMBOOK_PRECISION", raising=False)
    assert hardware.inference_dtype("cpu") == torch.float32  # the default, fp32, even where bf16 is native
    monkeypatch.setenv("LLMBOOK_PRECISION", "auto")
    assert hardware.inference_dtype("cpu") == torch.bfloat16
    monkeypatch.setattr(hardware, "bf16_is_native", lambda device: False)
    assert hardware.inference_dtype("cpu") == torch.float32


# --------------------------------------------------------------------------- shared prefix


def test_common_prefix_ends_at_a_clean_token_boundary(tokenizer):
    prompts = [P.chat_prompt(tokenizer, f"Review: {t}") for t in ["a gripping film", "a tedious mess"]]
    prefix = I.common_prefix(prompts, tokenizer)
    assert prefix.endswith("user\n") and all(p.startswith(prefix) for p in prompts)
    ids = tokenizer(prefix, add_special_tokens=False)["input_ids"]
    for p in prompts:
        assert tokenizer(p, add_special_tokens=False)["input_ids"][:len(ids)] == ids


def test_common_prefix_cuts_at_newlines_and_leaves_a_single_prompt_something_to_score():
    assert I.common_prefix(["a\nb\nc", "a\nb\nd"]) == "a\nb\n"
    assert I.common_prefix(["abc", "abd"]) == ""  # no newline in the shared part
    assert I.common_prefix(["a\nb\n"]) == "a\n"  # the last newline is left to score
    with pytest.raises(ValueError, match="non-empty list"):
        I.common_prefix([])
    with pytest.raises(ValueError, match="non-empty list"):
        I.common_prefix("a\nb")


# --------------------------------------------------------------------------- scoring and generation


def test_score_next_tokens_matches_unbatched_forward(model, tokenizer):
    prompts = _prompts(tokenizer)
    ids = P.label_word_ids(tokenizer, single_token_words(tokenizer, 3))
    reference = torch.stack([_reference_logprobs(model, tokenizer, p, ids) for p in prompts])
    batched = I.score_next_tokens(model, tokenizer, prompts, ids, batch_size=4)  # left padding inside
    torch.testing.assert_close(batched, reference, atol=1e-5, rtol=1e-5)
    cached = I.score_next_tokens(model, tokenizer, prompts, ids, batch_size=3,
                                 prefix=I.common_prefix(prompts, tokenizer))
    torch.testing.assert_close(cached, reference, atol=1e-5, rtol=1e-5)
    assert (reference.exp().sum(1) < 1).all()


def test_score_next_tokens_takes_plain_text_and_returns_input_order(model, tokenizer):
    texts = ["the plot is thin but the acting is good", "bad", "a gripping film with a great cast", "no"]
    ids = [5, 17, 42]
    reference = torch.stack([_reference_logprobs(model, tokenizer, t, ids) for t in texts])
    scores = I.score_next_tokens(model, tokenizer, texts, ids, batch_size=2)
    assert scores.shape == (len(texts), len(ids)) and scores.dtype == torch.float32
    torch.testing.assert_close(scores, reference, atol=1e-5, rtol=1e-5)
    reversed_scores = I.score_next_tokens(model, tokenizer, texts[::-1], ids, batch_size=2)
    torch.testing.assert_close(reversed_scores, scores.flip(0), atol=1e-5, rtol=1e-5)


def test_score_next_tokens_rejects_bad_input(model, tokenizer):
    prompts = _prompts(tokenizer)
    with pytest.raises(TypeError):
        I.score_next_tokens(model, tokenizer, prompts[0], [1, 2])
    with pytest.raises(ValueError):
        I.score_next_tokens(model, tokenizer, prompts, [len(tokenizer) + 5])
    with pytest.raises(ValueError):
        I.score_next_tokens(model, tokenizer, prompts, [1, 2], prefix="not a prefix")
    with pytest.raises(ValueError, match="splits a token"):  # a cut inside a word
        I.score_next_tokens(model, tokenizer, prompts, [1, 2], prefix=prompts[0][:prompts[0].index("tedious") + 3])


def test_score_next_tokens_refuses_empty_input_and_bad_batch_size(model, tokenizer):
    prompts = _prompts(tokenizer)
    with pytest.raises(ValueError, match="token ids must be non-empty"):
        I.score_next_tokens(model, tokenizer, prompts, [])
    with pytest.raises(ValueError, match="token ids"):
        I.score_next_tokens(model, tokenizer, prompts, [-1, 2])
    with pytest.raises(ValueError, match="no prompts"):
        I.score_next_tokens(model, tokenizer, [], [1, 2])
    with pytest.raises(ValueError, match="batch_size"):
        I.score_next_tokens(model, tokenizer, prompts, [1, 2], batch_size=0)
    with pytest.raises(ValueError, match="tokenises to nothing"):
        I.score_next_tokens(model, tokenizer, ["a film", ""], [1, 2])
    with pytest.raises(ValueError, match="extend it"):  # a prompt that is the prefix leaves nothing to score
        I.score_next_tokens(model, tokenizer, ["a\n", "a\nb"], [1, 2], prefix="a\n")


def test_generate_greedy_matches_transformers_generate(model, tokenizer):
    prompts = _prompts(tokenizer)
    expected = []
    for p in prompts:
        x = tokenizer(p, return_tensors="pt", add_special_tokens=False)
        out = model.generate(**x, max_new_tokens=6, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        expected.append(tokenizer.decode(out[0, x["input_ids"].shape[1]:], skip_special_tokens=True).strip())
    assert I.generate_greedy(model, tokenizer, prompts, max_new_tokens=6, batch_size=3) == expected
    cached = I.generate_greedy(model, tokenizer, prompts, max_new_tokens=6, batch_size=5,
                               prefix=I.common_prefix(prompts, tokenizer))
    assert cached == expected


def test_generate_greedy_refuses_bad_input(model, tokenizer):
    prompts = _prompts(tokenizer)
    with pytest.raises(ValueError, match="max_new_tokens"):
        I.generate_greedy(model, tokenizer, prompts, max_new_tokens=0)
    with pytest.raises(TypeError, match="single string"):
        I.generate_greedy(model, tokenizer, prompts[0])
    with pytest.raises(ValueError, match="no prompts"):
        I.generate_greedy(model, tokenizer, [])
    with pytest.raises(ValueError, match="batch_size"):
        I.generate_greedy(model, tokenizer, prompts, batch_size=0)


def test_grouped_query_switch_is_scoped_to_the_call(model, tokenizer, monkeypatch):
    prompts = _prompts(tokenizer)
    ids = P.label_word_ids(tokenizer, single_token_words(tokenizer, 2))
    monkeypatch.delenv("TRANSFORMERS_SDPA_FORCE_GQA", raising=False)
    I.score_next_tokens(model, tokenizer, prompts, ids, prefix=I.common_prefix(prompts, tokenizer))
    assert "TRANSFORMERS_SDPA_FORCE_GQA" not in os.environ
    monkeypatch.setenv("TRANSFORMERS_SDPA_FORCE_GQA", "0")
    I.generate_greedy(model, tokenizer, prompts, max_new_tokens=2)
    assert os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] == "0"
    with I.grouped_query_sdpa(torch.device("cpu")):  # on a CPU the switch is on inside the call
        assert os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] == "1"
    assert os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] == "0"
    with I.grouped_query_sdpa(torch.device("meta")):  # not a CPU: left alone
        assert os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] == "0"


def test_grouped_query_switch_is_restored_after_an_error(monkeypatch):
    monkeypatch.delenv("TRANSFORMERS_SDPA_FORCE_GQA", raising=False)
    with pytest.raises(RuntimeError), I.grouped_query_sdpa("cpu"):
        assert os.environ["TRANSFORMERS_SDPA_FORCE_GQA"] == "1"
        raise RuntimeError("the forward pass failed")
    assert "TRANSFORMERS_SDPA_FORCE_GQA" not in os.environ
