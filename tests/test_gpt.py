"""Unit tests of llmbook.gpt: each checks a property that a wrong implementation would break."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from llmbook import gpt
from llmbook.losses import IGNORE_INDEX


def tiny_config(**kw) -> gpt.GPTConfig:
    base = {"vocab_size": 11, "block_size": 16, "n_layer": 2, "n_head": 2, "n_embd": 16}
    base.update(kw)
    return gpt.GPTConfig(**base)


# --------------------------------------------------------------------------- tokenizer


def test_char_tokenizer_round_trip_and_sorted_ids():
    tok = gpt.CharTokenizer.from_text("hello world")
    assert tok.vocab_size == len(set("hello world"))
    assert tok.encode(" dehlorw") == list(range(8))  # ids follow sorted characters
    assert tok.decode([]) == ""
    assert tok.decode(tok.encode("low red")) == "low red"
    assert tok.decode(torch.tensor(tok.encode("world"))) == "world"


def test_char_tokenizer_unknown_characters():
    tok = gpt.CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tok.encode("abz")
    with_unk = gpt.CharTokenizer.from_text("abc", unk="?")
    assert with_unk.vocab_size == 4
    assert with_unk.decode(with_unk.encode("azb")) == "a?b"
    with pytest.raises(ValueError):
        tok.decode([7])
    with pytest.raises(TypeError):
        tok.encode(123)


# --------------------------------------------------------------------------- model


def test_causal_mask_is_lower_triangular():
    mask = gpt.causal_mask(4)
    assert mask.dtype == torch.bool
    assert mask.tolist() == [[True, False, False, False], [True, True, False, False],
                             [True, True, True, False], [True, True, True, True]]


def test_manual_attention_matches_sdpa():
    torch.manual_seed(0)
    manual = gpt.CausalSelfAttention(tiny_config(attention="manual"))
    fused = gpt.CausalSelfAttention(tiny_config(attention="sdpa"))
    fused.load_state_dict(manual.state_dict())
    x = torch.randn(3, 9, 16)
    torch.testing.assert_close(manual(x), fused(x))


def test_manual_attention_against_explicit_loop():
    """One head, written as a double loop over positions, agrees with the vectorised code."""
    torch.manual_seed(1)
    attn = gpt.CausalSelfAttention(tiny_config(n_head=1, attention="manual"))
    x = torch.randn(1, 5, 16)
    q, k, v = attn.c_attn(x)[0].split(16, dim=1)
    out = torch.zeros(5, 16)
    for i in range(5):
        scores = torch.stack([q[i] @ k[j] / 4.0 for j in range(i + 1)])  # sqrt(16) = 4
        out[i] = (scores.softmax(0)[:, None] * v[: i + 1]).sum(0)
    torch.testing.assert_close(attn(x)[0], attn.c_proj(out))


@pytest.mark.parametrize("attention", ["manual", "sdpa"])
def test_model_is_causal_and_unmasked_model_is_not(attention):
    torch.manual_seed(0)
    model = gpt.GPT(tiny_config(attention=attention)).eval()
    a = torch.randint(11, (1, 10))
    b = a.clone()
    b[0, 6:] = (b[0, 6:] + 1) % 11  # change only the future
    la, lb = model(a)[0], model(b)[0]
    torch.testing.assert_close(la[:, :6], lb[:, :6])
    assert not torch.allclose(la[:, 6:], lb[:, 6:])
    leaky = gpt.GPT(tiny_config(attention=attention, causal=False)).eval()
    leaky.load_state_dict(model.state_dict())
    assert not torch.allclose(leaky(a)[0][:, :6], leaky(b)[0][:, :6])


def test_loss_is_cross_entropy_and_skips_ignore_index():
    torch.manual_seed(0)
    model = gpt.GPT(tiny_config()).eval()
    x = torch.randint(11, (2, 7))
    y = torch.randint(11, (2, 7))
    y[0, :3] = IGNORE_INDEX
    logits, loss = model(x, y)
    keep = y != IGNORE_INDEX
    expected = -logits.log_softmax(-1)[keep].gather(1, y[keep][:, None]).mean()
    torch.testing.assert_close(loss, expected)
    with pytest.raises(ValueError):
        model(torch.randint(11, (1, 17)))  # longer than block_size


def test_weights_are_tied():
    model = gpt.GPT(tiny_config())
    assert model.lm_head.weight.data_ptr() == model.wte.weight.data_ptr()


@pytest.mark.parametrize("kw", [{}, {"bias": False}, {"n_layer": 3, "n_embd": 24, "n_head": 3, "vocab_size": 50}])
def test_parameter_formula_matches_the_model(kw):
    config = tiny_config(**kw)
    assert gpt.count_parameters(gpt.GPT(config)) == gpt.param_count_formula(config)
    assert gpt.non_embedding_params(config) == gpt.param_count_formula(config) - (
        config.vocab_size + config.block_size) * config.n_embd


def test_nanogpt_cpu_recipe_has_its_published_size():
    # nanoGPT reports 0.80M parameters (it leaves out the position embeddings)
    config = gpt.GPTConfig(vocab_size=65, block_size=64, n_layer=4, n_head=4, n_embd=128)
    assert round((gpt.param_count_formula(config) - 64 * 128) / 1e6, 2) == 0.80


def test_forward_flops_match_pytorch_flop_counter():
    config = tiny_config(attention="manual", n_embd=32, n_head=4, vocab_size=37)
    model = gpt.GPT(config).eval()
    b, t = 2, 12
    with FlopCounterMode(display=False) as counter:
        model(torch.randint(37, (b, t)))
    assert counter.get_total_flops() == b * t * gpt.flops_per_token(config, training=False, seq_len=t)
    assert gpt.flops_per_token(config) == 3 * gpt.flops_per_token(config, training=False)


def test_config_validation():
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(n_embd=15)
    with pytest.raises(ValueError):
        tiny_config(attention="flash")


def test_generate_samples_only_among_the_top_k_tokens():
    torch.manual_seed(0)
    model = gpt.GPT(tiny_config()).eval()
    context = torch.zeros(1, 1, dtype=torch.long)
    allowed = set(torch.topk(model(context)[0][0, -1], 3).indices.tolist())
    firsts = {int(model.generate(context, 1, top_k=3, generator=torch.Generator().manual_seed(s))[0, 1])
              for s in range(200)}
    assert firsts <= allowed and len(firsts) > 1, (firsts, allowed)
    out = model.generate(context, 20, top_k=3, generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 21) and torch.equal(out[:, :1], context)


# --------------------------------------------------------------------------- training


def test_pretrain_config_refuses_bad_settings():
    assert gpt.PretrainConfig().max_grad_norm == 1.0
    assert gpt.PretrainConfig(max_grad_norm=None).max_grad_norm is None
    with pytest.raises(ValueError, match="max_grad_norm must be positive"):
        gpt.PretrainConfig(max_grad_norm=0.0)
    with pytest.raises(ValueError, match="must be positive"):
        gpt.PretrainConfig(max_steps=0)


def test_get_batch_targets_are_inputs_shifted_by_one():
    ids = torch.arange(100)
    x, y = gpt.get_batch(ids, 4, 8, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 8)
    torch.testing.assert_close(y, x + 1)


def test_train_lm_learns_a_periodic_sequence():
    torch.manual_seed(0)
    ids = torch.tensor([0, 1, 2, 3, 4, 5] * 200)
    model = gpt.GPT(tiny_config(vocab_size=6, n_embd=32))
    cfg = gpt.PretrainConfig(max_steps=150, batch_size=8, lr=3e-3, min_lr=3e-4, warmup_steps=10,
                          eval_interval=50, eval_batches=2, max_grad_norm=0.5)
    history = gpt.train_lm(model, ids, ids, cfg, progress=False)
    assert [r["step"] for r in history] == [0, 50, 100, 150]
    assert history[0]["val_loss"] > 1.5  # about ln 6 = 1.79 at random initialisation
    assert history[-1]["val_loss"] < 0.05  # the sequence is deterministic after the first token
    assert history[-1]["lr"] == pytest.approx(3e-4)


# --------------------------------------------------------------------------- evaluation


def test_sliding_window_equals_full_sequence_when_the_window_covers_it():
    torch.manual_seed(0)
    model = gpt.GPT(tiny_config(block_size=32)).eval()
    ids = torch.randint(11, (30,))
    full = F.cross_entropy(model(ids[None, :-1])[0][0], ids[1:], reduction="sum").item()
    for stride in (1, 7, 31):
        total, n = gpt.sliding_window_nll(lambda x: model(x)[0], ids, window=32, stride=stride, batch_size=3)
        assert n == 29
        assert total == pytest.approx(full, rel=1e-5)
    total, n = gpt.sliding_window_nll(lambda x: model(x)[0], ids, window=32, stride=31, first_scored=10)
    tail = F.cross_entropy(model(ids[None, :-1])[0][0, 9:], ids[10:], reduction="sum").item()
    assert n == 20 and total == pytest.approx(tail, rel=1e-5)


def test_sliding_window_is_exact_for_a_model_with_one_token_of_context():
    torch.manual_seed(0)
    table = torch.randn(5, 5)  # a bigram model: logits depend only on the current token
    ids = torch.randint(5, (57,))
    exact = F.cross_entropy(table[ids[:-1]], ids[1:], reduction="sum").item()
    for window, stride in [(2, 1), (8, 3), (16, 15)]:
        total, n = gpt.sliding_window_nll(lambda x: table[x], ids, window=window, stride=stride)
        assert n == 56 and total == pytest.approx(exact, rel=1e-5)
    with pytest.raises(ValueError):
        gpt.sliding_window_nll(lambda x: table[x], ids, window=4, stride=4)


# --------------------------------------------------------------------------- masked LM


def test_mlm_mask_proportions_and_labels():
    gen = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 100, (400, 250))
    ids[:, 0] = 1  # a special token ([CLS]) that must never be chosen
    inputs, labels = gpt.mlm_mask(ids, mask_token_id=4, vocab_size=100, special_ids=[1], generator=gen)
    chosen = labels != IGNORE_INDEX
    assert not chosen[:, 0].any()
    assert abs(chosen[:, 1:].float().mean().item() - 0.15) < 0.005
    torch.testing.assert_close(labels[chosen], ids[chosen])
    torch.testing.assert_close(inputs[~chosen], ids[~chosen])  # untouched outside the targets
    masked = (inputs[chosen] == 4).float().mean().item()
    kept = (inputs[chosen] == ids[chosen]).float().mean().item()
    assert abs(masked - 0.8) < 0.01
    assert abs(kept - 0.1) < 0.01  # (a random token equal to the original adds ~1 % of 10 %)
    assert abs(1 - masked - kept - 0.1) < 0.01


def test_train_lm_reports_how_often_gradients_were_clipped():
    ids = torch.randint(6, (500,))
    for clip, share in [(1e-6, 1.0), (1e6, 0.0)]:
        model = gpt.GPT(tiny_config(vocab_size=6))
        cfg = gpt.PretrainConfig(max_steps=6, batch_size=2, warmup_steps=2, eval_interval=3, eval_batches=1, max_grad_norm=clip)
        history = gpt.train_lm(model, ids, ids, cfg, progress=False)
        assert [r["clipped_share"] for r in history[1:]] == [share, share]


def test_train_lm_reports_the_gradient_norm_without_clipping():
    ids = torch.randint(6, (500,), generator=torch.Generator().manual_seed(0))
    model = gpt.GPT(gpt.GPTConfig(vocab_size=6, block_size=16, n_layer=1, n_head=2, n_embd=16))
    cfg = gpt.PretrainConfig(max_steps=4, batch_size=2, warmup_steps=1, eval_interval=2, eval_batches=1,
                             max_grad_norm=None)
    history = gpt.train_lm(model, ids, ids, cfg, progress=False)
    assert all(math.isfinite(r["grad_norm"]) and r["grad_norm"] > 0 for r in history[1:])
