"""Unit tests of llmbook.training on tiny models built from a config (no assets needed)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from tiny import bert_classifier as tiny_classifier
from tiny import toy_examples
from transformers import BertForSequenceClassification

from llmbook import evaluation, optim, regularizers, training
from llmbook.encoding import pad_batch


def no_dropout_classifier(seed: int = 0) -> BertForSequenceClassification:
    return tiny_classifier(seed, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def quiet_fit(model, examples, config, **kw) -> training.TrainResult:
    return training.fit(model, examples, config, pad_token_id=0, progress=False, log=None, **kw)


def scripted(scores):
    """An eval_fn that returns ``scores`` one by one and keeps a copy of the weights it scored."""
    remaining = iter(scores)
    snapshots = []

    def eval_fn(model):
        snapshots.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return next(remaining)

    return eval_fn, snapshots


def same_weights(model, state) -> bool:
    return all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


# --------------------------------------------------------------------------- one step


def test_train_step_clips_the_global_gradient_norm():
    model = tiny_classifier()
    batch = pad_batch(toy_examples(8), 0)
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    out = training.train_step(model, batch, opt, max_grad_norm=1e-3)
    assert isinstance(out, training.StepOutput)
    loss, norm, extra = out
    assert (out.loss, out.grad_norm) == (loss, norm) and extra is None
    assert norm > 1e-3 and np.isfinite(loss)
    step = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(model.parameters(), before, strict=True)))
    assert step.item() == pytest.approx(1e-3, rel=1e-3)  # SGD with lr 1: the update is the clipped gradient


def test_train_step_adds_the_extra_term_to_the_loss_it_returns():
    batch = pad_batch(toy_examples(8), 0)
    model = no_dropout_classifier()
    plain = training.train_step(model, batch, torch.optim.SGD(model.parameters(), lr=0.0), max_grad_norm=None)
    model = no_dropout_classifier()
    out = training.train_step(model, batch, torch.optim.SGD(model.parameters(), lr=0.0), max_grad_norm=None,
                              extra_loss=lambda m, b, o: torch.tensor(1.5))
    assert out.extra_loss == 1.5
    assert out.loss == pytest.approx(plain.loss + 1.5, abs=1e-6)
    assert out.grad_norm == pytest.approx(plain.grad_norm, rel=1e-6)


# --------------------------------------------------------------------------- the loop


def test_fit_learns_a_toy_task():
    model = tiny_classifier()
    train, test = toy_examples(64, seed=0), toy_examples(64, seed=1)
    cfg = training.TrainConfig(epochs=20, batch_size=32, lr=5e-3, patience=None, warmup_ratio=0.1)
    result = quiet_fit(model, train, cfg)
    preds = evaluation.predict_labels(model, test, pad_token_id=0)
    assert evaluation.accuracy(preds, [e["labels"] for e in test]) > 0.9
    assert result.examples_seen == 20 * 64
    assert result.step_lrs[0] == 0.0 and max(result.step_lrs) == pytest.approx(5e-3)


def test_early_stopping_restores_the_best_epoch():
    model = tiny_classifier()
    eval_fn, snapshots = scripted([0.5, 0.9, 0.6, 0.4, 0.95])
    cfg = training.TrainConfig(epochs=5, batch_size=8, lr=1e-2, patience=2)
    result = quiet_fit(model, toy_examples(16), cfg, eval_fn=eval_fn)
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
        runs.append(quiet_fit(model, toy_examples(32), cfg).step_losses)
    assert runs[0] == runs[1]


def test_train_config_refuses_bad_settings():
    with pytest.raises(ValueError, match="patience"):
        training.TrainConfig(patience=0)
    with pytest.raises(ValueError, match="max_grad_norm"):
        training.TrainConfig(max_grad_norm=0.0)
    with pytest.raises(ValueError, match="warmup_ratio"):
        training.TrainConfig(warmup_ratio=1.0)
    with pytest.raises(ValueError, match="no training examples"):
        quiet_fit(tiny_classifier(), [], training.TrainConfig())


# --------------------------------------------------------------------------- extra_loss


def test_extra_loss_is_called_once_per_step_with_model_batch_and_outputs():
    model = no_dropout_classifier()  # a second forward on the batch gives the same loss
    calls = []

    def extra(m, batch, outputs):
        with torch.no_grad():
            manual = float(m(**batch).loss)
        term = 0.01 * outputs.logits.pow(2).mean()
        calls.append({"model": m, "training": m.training, "keys": set(batch), "rows": len(batch["input_ids"]),
                      "task": float(outputs.loss.detach()), "manual": manual, "term": float(term.detach())})
        return term

    cfg = training.TrainConfig(epochs=2, batch_size=8, lr=1e-3, patience=None)
    result = quiet_fit(model, toy_examples(20), cfg, extra_loss=extra)
    assert len(calls) == len(result.steps) == 2 * 3
    assert sum(c["rows"] for c in calls) == result.examples_seen == 2 * 20
    for call, step in zip(calls, result.steps, strict=True):
        assert call["model"] is model and call["training"]
        assert call["keys"] == {"input_ids", "attention_mask", "labels"}
        assert call["task"] == pytest.approx(call["manual"], rel=1e-5)  # the outputs are this batch's forward
        assert step.extra_loss == pytest.approx(call["term"], rel=1e-6)
        assert step.loss == pytest.approx(call["task"] + call["term"], rel=1e-6)


def test_a_constant_extra_loss_raises_the_step_loss_and_leaves_the_gradients_alone():
    cfg = training.TrainConfig(epochs=2, batch_size=8, lr=1e-2, patience=None)
    plain_model, shifted_model = tiny_classifier(seed=1), tiny_classifier(seed=1)
    plain = quiet_fit(plain_model, toy_examples(20), cfg)
    shifted = quiet_fit(shifted_model, toy_examples(20), cfg, extra_loss=lambda m, b, o: torch.tensor(0.25))
    assert [s.extra_loss for s in plain.steps] == [None] * len(plain.steps)
    assert [s.extra_loss for s in shifted.steps] == [0.25] * len(plain.steps)
    assert shifted.step_losses == pytest.approx([x + 0.25 for x in plain.step_losses], abs=1e-6)
    assert [s.grad_norm for s in shifted.steps] == [s.grad_norm for s in plain.steps]
    for (name, a), b in zip(plain_model.named_parameters(), shifted_model.parameters(), strict=True):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("bad", [lambda m, b, o: torch.zeros(2), lambda m, b, o: torch.zeros(1),
                                 lambda m, b, o: 0.5])
def test_extra_loss_must_return_a_scalar_tensor(bad):
    with pytest.raises(ValueError, match="scalar tensor"):
        quiet_fit(tiny_classifier(), toy_examples(8), training.TrainConfig(epochs=1, batch_size=8), extra_loss=bad)


def test_l2_sp_extra_loss_keeps_the_weights_near_the_reference():
    def distance(model, reference):
        return math.sqrt(sum(float((p.detach() - reference[n]).pow(2).sum()) for n, p in model.named_parameters()))

    cfg = training.TrainConfig(epochs=6, batch_size=8, lr=1e-2, patience=None)
    free = tiny_classifier(seed=2)
    free_reference = regularizers.parameter_snapshot(free)
    quiet_fit(free, toy_examples(32), cfg)
    anchored = tiny_classifier(seed=2)
    reference = regularizers.parameter_snapshot(anchored)
    result = quiet_fit(anchored, toy_examples(32), cfg, extra_loss=regularizers.l2_sp_extra_loss(reference, 1e4))
    assert result.steps[0].extra_loss == 0.0  # the first step starts at the reference
    assert all(s.extra_loss >= 0 for s in result.steps)
    assert distance(anchored, reference) < 0.2 * distance(free, free_reference)


# --------------------------------------------------------------------------- trainable


def test_trainable_keeps_only_the_head_training():
    model = tiny_classifier()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    asked = []

    def head_only(name, param):
        asked.append((name, param))
        return name.startswith("classifier.")

    cfg = training.TrainConfig(epochs=2, batch_size=8, lr=1e-2, patience=None)
    quiet_fit(model, toy_examples(16), cfg, trainable=head_only)
    named = list(model.named_parameters())
    assert [n for n, _ in asked] == [n for n, _ in named]
    assert all(p is q for (_, p), (_, q) in zip(asked, named, strict=True))
    heads = [n for n, _ in named if n.startswith("classifier.")]
    assert heads == ["classifier.weight", "classifier.bias"]
    for name, p in named:
        if name in heads:
            assert p.requires_grad and not torch.equal(p.detach(), before[name]), name
        else:
            assert not p.requires_grad and torch.equal(p.detach(), before[name]), name


def test_trainable_refuses_an_empty_selection_and_a_ready_optimizer():
    model = tiny_classifier()
    cfg = training.TrainConfig(epochs=1, batch_size=8)
    with pytest.raises(ValueError, match="selected no parameter"):
        quiet_fit(model, toy_examples(8), cfg, trainable=lambda name, param: False)
    model = tiny_classifier()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with pytest.raises(ValueError, match="not both"):
        quiet_fit(model, toy_examples(8), cfg, trainable=lambda name, param: True,
                  optimizer=torch.optim.SGD(model.parameters(), lr=0.1))
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


# --------------------------------------------------------------------------- per-step records


def test_step_records_one_per_update_with_the_scheduled_learning_rate():
    cfg = training.TrainConfig(epochs=3, batch_size=8, lr=1e-3, warmup_ratio=0.3, patience=None)
    examples = toy_examples(20)  # 3 batches per epoch: 8, 8 and 4 examples
    result = quiet_fit(tiny_classifier(), examples, cfg)
    total, warmup = 9, math.ceil(0.3 * 9)
    assert len(result.steps) == total
    assert [s.step for s in result.steps] == list(range(total))
    assert [s.epoch for s in result.steps] == [1, 1, 1, 2, 2, 2, 3, 3, 3]
    assert result.step_lrs == [cfg.lr * optim.warmup_linear_factor(i, warmup, total) for i in range(total)]
    assert result.step_losses == [s.loss for s in result.steps]
    assert result.step_table().shape[0] == total
    # with a ready optimizer: one record per optimizer.step(), rates scaled from the optimizer's own
    model = tiny_classifier()
    opt = optim.make_optimizer(model, 4e-3, 0.0)
    updates = []
    opt.register_step_post_hook(lambda optimizer, args, kwargs: updates.append(1))
    result = quiet_fit(model, examples, cfg, optimizer=opt)
    assert len(result.steps) == len(updates) == total
    assert result.step_lrs == [4e-3 * optim.warmup_linear_factor(i, warmup, total) for i in range(total)]


@pytest.mark.parametrize("max_grad_norm, share", [(1e-8, 1.0), (None, 0.0), (0.3, "some")])
def test_step_records_say_when_the_gradient_was_clipped(max_grad_norm, share):
    cfg = training.TrainConfig(epochs=2, batch_size=8, lr=1e-2, patience=None, max_grad_norm=max_grad_norm)
    result = quiet_fit(tiny_classifier(), toy_examples(20), cfg)
    assert all(np.isfinite(s.grad_norm) and s.grad_norm > 0 for s in result.steps)
    limit = math.inf if max_grad_norm is None else max_grad_norm
    assert [s.clipped for s in result.steps] == [s.grad_norm > limit for s in result.steps]
    assert result.clipped_share == pytest.approx(np.mean([s.clipped for s in result.steps]))
    if share == "some":  # gradient norms of this run lie on both sides of 0.3
        assert 0 < result.clipped_share < 1
    else:
        assert result.clipped_share == share


def test_clipped_share_without_steps_is_nan():
    assert math.isnan(training.TrainResult([], 1, None, 0.0, 0).clipped_share)


# --------------------------------------------------------------------------- on_epoch_end


def test_on_epoch_end_is_called_after_each_epoch_and_can_stop_training():
    model = tiny_classifier()
    calls = []

    def stop_after_two(epoch, m, record):
        calls.append((epoch, m, record))
        return epoch == 2

    eval_fn, _ = scripted([0.1, 0.2, 0.3, 0.4])
    cfg = training.TrainConfig(epochs=4, batch_size=8, lr=1e-3, patience=None)
    result = quiet_fit(model, toy_examples(20), cfg, eval_fn=eval_fn, on_epoch_end=stop_after_two)
    assert [epoch for epoch, _, _ in calls] == [1, 2]
    assert all(m is model for _, m, _ in calls)
    assert all(record is kept for (_, _, record), kept in zip(calls, result.history, strict=True))
    assert [record.val_score for _, _, record in calls] == [0.1, 0.2]
    assert result.stopped_early and len(result.history) == 2 and len(result.steps) == 2 * 3
    assert result.best_epoch == 2


def test_on_epoch_end_returning_nothing_runs_every_epoch():
    seen = []
    cfg = training.TrainConfig(epochs=3, batch_size=8, lr=1e-3, patience=None)
    result = quiet_fit(tiny_classifier(), toy_examples(16), cfg, on_epoch_end=lambda e, m, r: seen.append(e))
    assert seen == [1, 2, 3] and not result.stopped_early and len(result.history) == 3
    stopped_last = quiet_fit(tiny_classifier(), toy_examples(16), cfg, on_epoch_end=lambda e, m, r: e == 3)
    assert len(stopped_last.history) == 3 and not stopped_last.stopped_early


# --------------------------------------------------------------------------- best epoch


def test_without_patience_the_last_epoch_is_kept_and_reported():
    model = tiny_classifier()
    eval_fn, snapshots = scripted([0.9, 0.5, 0.6])
    cfg = training.TrainConfig(epochs=3, batch_size=8, lr=1e-2, patience=None)
    result = quiet_fit(model, toy_examples(16), cfg, eval_fn=eval_fn)
    assert [r.val_score for r in result.history] == [0.9, 0.5, 0.6]
    assert result.best_epoch == 3 and result.best_score == 0.6 and not result.stopped_early
    assert same_weights(model, snapshots[2])
    assert not torch.equal(snapshots[0]["classifier.weight"], snapshots[2]["classifier.weight"])


def test_ties_are_not_improvements():
    model = tiny_classifier()
    eval_fn, snapshots = scripted([0.7, 0.7, 0.7, 0.7, 0.7])
    cfg = training.TrainConfig(epochs=5, batch_size=8, lr=1e-2, patience=2)
    result = quiet_fit(model, toy_examples(16), cfg, eval_fn=eval_fn)
    assert [r.epoch for r in result.history] == [1, 2, 3] and result.stopped_early
    assert result.best_epoch == 1 and result.best_score == 0.7
    assert same_weights(model, snapshots[0]) and not same_weights(model, snapshots[2])

    model = tiny_classifier()
    eval_fn, snapshots = scripted([0.5, 0.7, 0.7])
    cfg = training.TrainConfig(epochs=3, batch_size=8, lr=1e-2, patience=2)
    result = quiet_fit(model, toy_examples(16), cfg, eval_fn=eval_fn)
    assert len(result.history) == 3 and not result.stopped_early
    assert result.best_epoch == 2 and result.best_score == 0.7
    assert same_weights(model, snapshots[1]) and not same_weights(model, snapshots[2])


def test_a_ready_optimizer_must_hold_every_trainable_parameter():
    model = tiny_classifier()
    head_only = torch.optim.AdamW(model.classifier.parameters(), lr=1e-3)
    with pytest.raises(ValueError, match="not in the optimizer"):
        quiet_fit(model, toy_examples(8), training.TrainConfig(epochs=1, batch_size=4, patience=None),
                  optimizer=head_only)
    for name, p in model.named_parameters():  # freeze what the optimizer leaves out: now it trains
        p.requires_grad_(name.startswith("classifier."))
    quiet_fit(model, toy_examples(8), training.TrainConfig(epochs=1, batch_size=4, patience=None),
              optimizer=head_only)
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("classifier."))


def test_gradients_left_over_from_an_earlier_backward_do_not_leak_into_the_first_update():
    examples, cfg = toy_examples(8), training.TrainConfig(epochs=1, batch_size=4, patience=None, seed=3)
    clean, dirty = no_dropout_classifier(), no_dropout_classifier()
    dirty(**pad_batch(examples[:4], 0)).loss.mul(1000).backward()  # a demo backward in an earlier cell
    quiet_fit(clean, examples, cfg)
    quiet_fit(dirty, examples, cfg)
    assert same_weights(dirty, clean.state_dict())


@pytest.mark.parametrize("score", [float("nan"), float("inf")])
def test_a_non_finite_validation_score_is_refused(score):
    eval_fn, _ = scripted([0.5, score])
    with pytest.raises(FloatingPointError, match="after epoch 2"):
        quiet_fit(tiny_classifier(), toy_examples(8), training.TrainConfig(epochs=3, batch_size=4, patience=2),
                  eval_fn=eval_fn)


def test_a_non_finite_loss_is_refused_before_the_weights_change():
    model = tiny_classifier()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(FloatingPointError, match="the loss is nan"):
        quiet_fit(model, toy_examples(8), training.TrainConfig(epochs=1, batch_size=4, patience=None),
                  extra_loss=lambda m, b, o: torch.tensor(float("nan")))
    assert same_weights(model, before)


def test_a_hook_that_changes_the_weights_cannot_change_what_is_restored():
    # epoch 1 scores best; the hook then overwrites the weights; patience restores epoch 1 as scored
    eval_fn, snapshots = scripted([0.9, 0.1, 0.1])

    def scramble(epoch, model, record):
        with torch.no_grad():
            for p in model.parameters():
                p.add_(1.0)

    model = tiny_classifier()
    result = quiet_fit(model, toy_examples(8), training.TrainConfig(epochs=3, batch_size=4, patience=2),
                       eval_fn=eval_fn, on_epoch_end=scramble)
    assert result.best_epoch == 1 and result.best_score == 0.9
    assert same_weights(model, snapshots[0]), "the restored weights are the ones eval_fn scored"


def test_a_stop_from_the_hook_at_a_worse_epoch_still_restores_the_best():
    eval_fn, snapshots = scripted([0.8, 0.6])
    model = tiny_classifier()
    result = quiet_fit(model, toy_examples(8), training.TrainConfig(epochs=4, batch_size=4, patience=3),
                       eval_fn=eval_fn, on_epoch_end=lambda epoch, m, r: epoch == 2)
    assert result.stopped_early and len(result.history) == 2
    assert result.best_epoch == 1 and same_weights(model, snapshots[0])
