"""EDA operations, FGM and R-Drop: what they change, what they keep, and what they refuse."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import bert_classifier

from llmbook import augmentation as aug

WORDS = "the film is a quiet and moving portrait".split()


def test_swap_keeps_the_words_and_changes_the_order():
    rng = np.random.default_rng(0)
    out = aug.random_swap(WORDS, 2, rng)
    assert sorted(out) == sorted(WORDS) and out != WORDS
    assert aug.random_swap(["alone"], 3, rng) == ["alone"]
    assert aug.random_swap(WORDS, 0, rng) == WORDS


def test_deletion_keeps_order_and_at_least_one_word():
    rng = np.random.default_rng(1)
    out = aug.random_deletion(WORDS, 0.5, rng)
    assert 1 <= len(out) < len(WORDS)
    it = iter(WORDS)
    assert all(w in it for w in out), "the kept words stay in their order"
    for seed in range(20):
        assert len(aug.random_deletion(["a", "b"], 0.99, np.random.default_rng(seed))) >= 1
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        aug.random_deletion(WORDS, 1.0, rng)


def test_insertion_draws_only_from_the_vocabulary():
    rng = np.random.default_rng(2)
    vocab = ["zebra", "quartz"]
    out = aug.random_insertion(WORDS, 3, vocab, rng)
    assert len(out) == len(WORDS) + 3
    added = list(out)
    for w in WORDS:
        added.remove(w)
    assert set(added) <= set(vocab)
    with pytest.raises(ValueError, match="vocabulary"):
        aug.random_insertion(WORDS, 1, [], rng)


def test_eda_variants_are_reproducible_and_cycle_through_the_operations():
    sentence = " ".join(WORDS)
    a = aug.eda_variants(sentence, 6, rate=0.2, vocabulary=["zebra"], seed=3)
    assert a == aug.eda_variants(sentence, 6, rate=0.2, vocabulary=["zebra"], seed=3)
    assert len(a) == 6 and a != aug.eda_variants(sentence, 6, rate=0.2, vocabulary=["zebra"], seed=4)
    assert sorted(a[0].split()) == sorted(WORDS), "copy 0 is a swap"
    assert len(a[1].split()) <= len(WORDS), "copy 1 is a deletion"
    assert "zebra" in a[2].split() and len(a[2].split()) == len(WORDS) + 2, "copy 2 inserts round(0.2 * 8) = 2 words"


def test_eda_refuses_bad_input():
    with pytest.raises(TypeError, match="list of words"):
        aug.random_swap("a string", 1, np.random.default_rng(0))
    with pytest.raises(ValueError, match="empty"):
        aug.eda_variants("   ", 2, rate=0.1, vocabulary=["x"], seed=0)
    with pytest.raises(ValueError, match="operations"):
        aug.eda_variants("a b", 2, rate=0.1, vocabulary=["x"], seed=0, operations=["synonym"])
    with pytest.raises(ValueError, match="n_aug"):
        aug.eda_variants("a b", 0, rate=0.1, vocabulary=["x"], seed=0)
    with pytest.raises(ValueError, match="rate"):
        aug.eda_variants("a b", 1, rate=0.0, vocabulary=["x"], seed=0)


def _batch():
    return {"input_ids": torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, 0, 0]]),
            "attention_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]),
            "labels": torch.tensor([0, 1])}


def test_fgm_perturbation_has_norm_epsilon_per_sentence_and_spares_padding():
    model = bert_classifier().train()
    fgm = aug.FGM(model, epsilon=0.5)
    batch = _batch()
    outputs = model(**batch)
    embeddings = fgm._saved
    r = fgm.perturbation(embeddings, outputs.loss, batch["attention_mask"])
    torch.testing.assert_close(r.flatten(1).norm(dim=1), torch.tensor([0.5, 0.5]))
    assert torch.all(r[1, 3:] == 0), "padding positions are not moved"
    # r points uphill: a small step along it raises the loss (first-order check)
    grad = torch.autograd.grad(outputs.loss, embeddings, retain_graph=True)[0]
    assert (grad * r).sum().item() > 0
    fgm.remove()


def test_fgm_returns_the_loss_at_the_moved_embeddings_and_trains_through_fit():
    model = bert_classifier().eval()  # no dropout, so two passes are comparable
    fgm = aug.FGM(model, epsilon=1.0)
    batch = _batch()
    model.train()
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    outputs = model(**batch)
    adversarial = fgm(model, batch, outputs)
    assert adversarial.item() > outputs.loss.item(), "the adversarial loss is higher than the clean one"
    (outputs.loss + adversarial).backward()
    assert model.classifier.weight.grad is not None
    # the hook no longer changes anything once the step is over
    with torch.no_grad():
        again = model(**batch).loss
    torch.testing.assert_close(again, outputs.loss.detach())
    fgm.remove()
    with pytest.raises(ValueError, match="epsilon"):
        aug.FGM(model, 0.0)


def test_fgm_refuses_a_call_without_a_saved_forward():
    model = bert_classifier().train()
    fgm = aug.FGM(model, epsilon=1.0)
    with torch.no_grad():
        outputs = model(**_batch())
    with pytest.raises(RuntimeError, match="saw no embedding output"):
        fgm(model, _batch(), outputs)


def test_rdrop_term_is_the_second_ce_plus_symmetric_kl():
    model = bert_classifier().train()
    batch = _batch()
    torch.manual_seed(0)
    first = model(**batch)
    torch.manual_seed(1)
    second = model(**batch)
    p1, p2 = first.logits.softmax(-1), second.logits.softmax(-1)
    kl = ((p1 * (p1.log() - p2.log())).sum(-1) + (p2 * (p2.log() - p1.log())).sum(-1)).mean()
    torch.manual_seed(1)
    term = aug.rdrop_extra_loss(2.0)(model, batch, first)
    torch.testing.assert_close(term, second.loss + 1.0 * kl)
    torch.manual_seed(1)
    torch.testing.assert_close(aug.rdrop_extra_loss(0.0)(model, batch, first), second.loss)
    with pytest.raises(RuntimeError, match="train mode"):
        aug.rdrop_extra_loss(1.0)(model.eval(), batch, first)
    with pytest.raises(ValueError, match="alpha"):
        aug.rdrop_extra_loss(-1.0)
