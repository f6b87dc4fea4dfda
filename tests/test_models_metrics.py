import pytest
import torch

from llmbook import metrics, models, runtime


def test_mean_pool_ignores_padding():
    hidden = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(models.mean_pool(hidden, mask), torch.tensor([[2.0, 2.0]]))


def test_label_arguments_are_checked():
    assert models._label_kwargs(["neg", "pos"], None)["id2label"] == {0: "neg", 1: "pos"}
    with pytest.raises(ValueError, match="num_labels=3 but 2 labels"):
        models._label_kwargs(["neg", "pos"], 3)
    with pytest.raises(ValueError, match="unique"):
        models._label_kwargs(["a", "a"], None)
    with pytest.raises(ValueError, match="needs labels"):
        models._label_kwargs(None, None)
    with pytest.raises(ValueError, match="unknown encoder task 'mlm'"):
        models.load_encoder("mlm")


def test_device_and_seed():
    assert runtime.pick_device("cpu").type == "cpu"
    runtime.set_seed(3)
    a = torch.rand(3)
    runtime.set_seed(3)
    assert torch.equal(a, torch.rand(3))
    assert set(runtime.versions()) >= {"python", "torch", "transformers"}


def test_bundled_metrics_compute_known_values():
    assert metrics.load("accuracy").compute(predictions=[0, 1, 1, 1], references=[0, 1, 0, 1]) == {"accuracy": 0.75}
    # precision 2/3, recall 1 -> F1 0.8
    assert metrics.load("f1").compute(predictions=[0, 1, 1, 1], references=[0, 1, 0, 1])["f1"] == pytest.approx(0.8)
    result = metrics.load("seqeval").compute(
        predictions=[["B-person", "I-person", "O", "B-geo-loc"]],
        references=[["B-person", "I-person", "O", "B-company"]])
    assert result["overall_f1"] == pytest.approx(0.5)  # one of two entities right on each side
    assert result["overall_accuracy"] == pytest.approx(0.75)  # the token count that includes 'O'
    assert result["person"]["f1"] == 1.0 and result["company"]["recall"] == 0.0


def test_seqeval_counts_a_partial_span_as_wrong():
    result = metrics.load("seqeval").compute(predictions=[["B-person", "O"]], references=[["B-person", "I-person"]])
    assert result["overall_f1"] == 0.0


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(ValueError, match="no bundled metric 'bleu'; bundled metrics: accuracy, f1, seqeval"):
        metrics.load("bleu")


@pytest.mark.assets
def test_encoder_embeddings_rank_paraphrases_first():
    model, tok = models.load_encoder()
    assert sum(p.numel() for p in model.parameters()) == 22_713_216
    e = models.embed(model, tok, ["a great movie", "a wonderful film", "the tax form is due friday"])
    torch.testing.assert_close(e.norm(dim=1), torch.ones(3))
    assert e[0] @ e[1] > e[0] @ e[2] + 0.3
    with pytest.raises(TypeError, match="list of texts"):
        models.embed(model, tok, "one string")


@pytest.mark.assets
def test_causal_lm_loads_with_chat_template_and_answers():
    model, tok = models.load_causal_lm()
    assert sum(p.numel() for p in model.parameters()) == 134_515_008
    assert tok.chat_template and tok.padding_side == "left"
    assert "paris" in models.chat(model, tok, "What is the capital of France?", max_new_tokens=12).lower()
