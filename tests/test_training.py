"""Unit tests of llmbook.training on tiny models built from a config (no assets needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification, BertForTokenClassification

from llmbook import training
from llmbook.training import IGNORE_INDEX


def tiny_config(num_labels: int = 2) -> BertConfig:
    return BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                      intermediate_size=32, max_position_embeddings=32, num_labels=num_labels)


def tiny_classifier(seed: int = 0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(tiny_config())


def toy_examples(n: int = 24, seed: int = 0) -> list[dict]:
    """Label 1 when token 5 occurs in the sentence; lengths vary from 3 to 10."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        ids = [1] + rng.integers(6, 40, size=rng.integers(1, 8)).tolist() + [2]
        label = int(rng.random() < 0.5)
        if label:
            ids[rng.integers(1, len(ids) - 1)] = 5
        out.append({"input_ids": ids, "labels": label})
    return out


# --------------------------------------------------------------------------- label alignment


def test_first_subtoken_gets_the_label_and_the_rest_minus_100():
    # [CLS] New York ##er s [SEP]: word 0 = "New", word 1 = "Yorkers" split into three pieces
    word_ids = [None, 0, 1, 1, 1, None]
    assert training.align_labels_with_tokens(word_ids, [3, 4]) == [IGNORE_INDEX, 3, 4, IGNORE_INDEX,
                                                                    IGNORE_INDEX, IGNORE_INDEX]


def test_label_all_subtokens_repeats_or_maps_to_continuation():
    word_ids = [None, 0, 0, 1, None]
    assert training.align_labels_with_tokens(word_ids, [1, 0], label_all_subtokens=True) == [
        IGNORE_INDEX, 1, 1, 0, IGNORE_INDEX]
    # B-x (1) continues as I-x (2)
    assert training.align_labels_with_tokens(word_ids, [1, 0], label_all_subtokens=True,
                                             continuation_label={1: 2}) == [IGNORE_INDEX, 1, 2, 0, IGNORE_INDEX]


def test_alignment_rejects_word_ids_beyond_the_labels():
    with pytest.raises(ValueError, match="out of range"):
        training.align_labels_with_tokens([None, 0, 2, None], [1, 0])


def test_encode_words_labels_one_token_per_word():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "new": 4, "york": 5, "##ers": 6, "love": 7}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    from tokenizers.processors import TemplateProcessing

    backend.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")
    (enc,) = training.encode_words(tok, [["yorkers", "love", "new", "york"]], [[1, 0, 1, 2]])
    assert enc["input_ids"] == [2, 5, 6, 7, 4, 5, 3]
    assert enc["labels"] == [IGNORE_INDEX, 1, IGNORE_INDEX, 0, 1, 2, IGNORE_INDEX]
    assert sum(label != IGNORE_INDEX for label in enc["labels"]) == 4  # one label per word
    with pytest.raises(ValueError, match="sentence 0 has 2 words but 1 labels"):
        training.encode_words(tok, [["new", "york"]], [[1]])


# --------------------------------------------------------------------------- padding and batches


def test_pad_batch_pads_to_the_longest_in_the_batch():
    batch = training.pad_batch([{"input_ids": [1, 7, 2], "labels": 1}, {"input_ids": [1, 2], "labels": 0}], 0)
    assert batch["input_ids"].tolist() == [[1, 7, 2], [1, 2, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [1, 0]
    tokens = training.pad_batch([{"input_ids": [1, 2], "labels": [-100, -100]},
                                 {"input_ids": [1, 9, 9, 2], "labels": [-100, 3, -100, -100]}], 0)
    assert tokens["labels"].tolist() == [[-100, -100, -100, -100], [-100, 3, -100, -100]]
    with pytest.raises(ValueError, match="empty batch"):
        training.pad_batch([], 0)


def test_padding_does_not_change_the_logits():
    model = tiny_classifier().eval()
    alone = model(**training.pad_batch([{"input_ids": [1, 7, 2]}], 0)).logits
    padded = model(**training.pad_batch([{"input_ids": [1, 7, 2]}, {"input_ids": [1, 8, 9, 10, 11, 2]}], 0)).logits
    torch.testing.assert_close(padded[0], alone[0], rtol=1e-5, atol=1e-5)


def test_bucketed_batches_cover_every_example_once_with_less_padding():
    lengths = np.random.default_rng(0).integers(5, 60, size=1000)
    bucketed = training.length_bucketed_batches(lengths, 32, seed=1)
    shuffled = training.random_batches(1000, 32, seed=1)
    assert sorted(np.concatenate(bucketed).tolist()) == list(range(1000))
    assert all(len(b) <= 32 for b in bucketed)
    assert training.padding_fraction(lengths, bucketed) < 0.1 < training.padding_fraction(lengths, shuffled)
    again = training.length_bucketed_batches(lengths, 32, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(bucketed, again, strict=True))
    other = training.length_bucketed_batches(lengths, 32, seed=2)
    assert not all(np.array_equal(a, b) for a, b in zip(bucketed, other, strict=False))


# --------------------------------------------------------------------------- optimiser and schedule


def test_warmup_then_linear_decay_values():
    f = [training.warmup_linear_factor(s, 10, 110) for s in (0, 5, 10, 60, 110, 200)]
    assert f == pytest.approx([0.0, 0.5, 1.0, 0.5, 0.0, 0.0])
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    sched = training.warmup_linear_schedule(opt, 4, 12)
    lrs = []
    for _ in range(12):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:5] == pytest.approx([0.0, 0.5, 1.0, 1.5, 2.0])
    assert lrs[-1] == pytest.approx(2.0 / 8) and max(lrs) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="warmup_steps <= total_steps"):
        training.warmup_linear_factor(0, 20, 10)


def test_optimizer_does_not_decay_biases_or_layernorm():
    model = tiny_classifier()
    opt = training.make_optimizer(model, 1e-3, weight_decay=0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    for group in opt.param_groups:
        group_names = [names[id(p)] for p in group["params"]]
        if group["weight_decay"] == 0:
            assert all(n.endswith("bias") or "LayerNorm" in n for n in group_names)
        else:
            assert group["weight_decay"] == 0.1
            assert not any(n.endswith("bias") or "LayerNorm" in n for n in group_names)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_train_step_clips_the_global_gradient_norm():
    model = tiny_classifier()
    batch = training.pad_batch(toy_examples(8), 0)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    loss, norm = training.train_step(model, batch, opt, max_grad_norm=1e-3)
    assert norm > 1e-3 and np.isfinite(loss)
    step = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before, strict=True)))
    assert step.item() == pytest.approx(1e-3, rel=1e-3)  # SGD with lr 1: the update is the clipped gradient


# --------------------------------------------------------------------------- the loop


def test_fit_learns_a_toy_task():
    model = tiny_classifier()
    train, test = toy_examples(64, seed=0), toy_examples(64, seed=1)
    cfg = training.TrainConfig(epochs=20, batch_size=32, lr=5e-3, patience=None, warmup_ratio=0.1)
    result = training.fit(model, train, cfg, pad_token_id=0, progress=False, log=None)
    preds = training.predict_labels(model, test, pad_token_id=0)
    assert training.accuracy(preds, [e["labels"] for e in test]) > 0.9
    assert result.examples_seen == 20 * 64
    assert result.step_lrs[0] == 0.0 and max(result.step_lrs) == pytest.approx(5e-3)


def test_early_stopping_restores_the_best_epoch():
    model = tiny_classifier()
    scores = iter([0.5, 0.9, 0.6, 0.4, 0.95])
    snapshots = []

    def eval_fn(m):
        snapshots.append({k: v.clone() for k, v in m.state_dict().items()})
        return next(scores)

    cfg = training.TrainConfig(epochs=5, batch_size=8, lr=1e-2, patience=2)
    result = training.fit(model, toy_examples(16), cfg, pad_token_id=0, eval_fn=eval_fn, progress=False, log=None)
    assert [r.epoch for r in result.history] == [1, 2, 3, 4] and result.stopped_early
    assert result.best_epoch == 2 and result.best_score == 0.9
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, snapshots[1][k])
    assert not torch.equal(snapshots[1]["classifier.weight"], snapshots[3]["classifier.weight"])


def test_fit_is_reproducible_with_a_seed():
    runs = []
    for _ in range(2):
        model = tiny_classifier(seed=3)
        cfg = training.TrainConfig(epochs=2, batch_size=8, lr=1e-3, seed=7)
        runs.append(training.fit(model, toy_examples(32), cfg, pad_token_id=0, progress=False, log=None).step_losses)
    assert runs[0] == runs[1]


# --------------------------------------------------------------------------- evaluation


def test_predictions_come_back_in_input_order():
    model = tiny_classifier().eval()
    examples = toy_examples(20, seed=4)
    batched = training.predict_logits(model, examples, pad_token_id=0, batch_size=6)
    for e, logits in zip(examples, batched, strict=True):
        one = model(**training.pad_batch([{"input_ids": e["input_ids"]}], 0)).logits[0].detach().numpy()
        np.testing.assert_allclose(logits, one, rtol=1e-4, atol=1e-5)


def test_eval_mode_is_deterministic_and_train_mode_is_not():
    model = tiny_classifier()
    model.config.hidden_dropout_prob = 0.5
    model = BertForSequenceClassification(model.config)
    examples = toy_examples(10)
    a, b = (np.stack(training.predict_logits(model, examples, pad_token_id=0)) for _ in range(2))
    np.testing.assert_array_equal(a, b)
    c, d = (np.stack(training.predict_logits(model, examples, pad_token_id=0, train_mode=True)) for _ in range(2))
    assert not np.allclose(c, d)


def test_token_predictions_and_word_level_tags():
    torch.manual_seed(0)
    model = BertForTokenClassification(tiny_config(num_labels=3))
    examples = [{"input_ids": [1, 7, 8, 2], "labels": [-100, 1, -100, -100]},
                {"input_ids": [1, 7, 8, 9, 10, 2], "labels": [-100, 0, 2, -100, 1, -100]}]
    preds = training.predict_labels(model, examples, pad_token_id=0)
    assert [p.shape for p in preds] == [(4,), (6,)]
    names = ["O", "B-x", "I-x"]
    pred_tags, gold_tags = training.word_level_tags([[0, 2, 0, 0], [0, 1, 1, 0, 0, 0]],
                                                    [e["labels"] for e in examples], names)
    assert gold_tags == [["B-x"], ["O", "I-x", "B-x"]]
    assert pred_tags == [["I-x"], ["B-x", "B-x", "O"]]


def test_accuracy_and_input_checks():
    assert training.accuracy([1, 0, 1, 1], [1, 1, 1, 0]) == 0.5
    with pytest.raises(ValueError, match="3 predictions for 2 labels"):
        training.accuracy([1, 0, 1], [1, 1])
    with pytest.raises(TypeError, match="not a single string"):
        training.encode_texts(None, "a sentence")
    with pytest.raises(ValueError, match="patience"):
        training.TrainConfig(patience=0)
