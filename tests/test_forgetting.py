"""Unit tests of llmbook.forgetting: block drift, word vectors and the entity probe."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import bert_classifier, wordpiece_tokenizer

from llmbook import forgetting, regularizers


@pytest.mark.parametrize(("name", "block"), [
    ("bert.embeddings.word_embeddings.weight", "embeddings"),
    ("bert.encoder.layer.0.attention.self.query.weight", "layer 0"),
    ("bert.encoder.layer.11.output.dense.bias", "layer 11"),
    ("model.layers.3.mlp.up_proj.weight", "layer 3"),
    ("bert.pooler.dense.weight", "pooler"),
    ("classifier.weight", "head"),
])
def test_block_name(name, block):
    assert forgetting.block_name(name) == block


def test_block_name_refuses_a_non_name():
    with pytest.raises(ValueError, match="parameter name"):
        forgetting.block_name("")


def test_weight_drift_measures_the_moved_block_only():
    model = bert_classifier()
    reference = regularizers.parameter_snapshot(model, exclude=lambda n: n.startswith("classifier."))
    table = forgetting.weight_drift(model, reference)
    assert list(table.index) == ["embeddings", "layer 0", "pooler", "all"]
    assert (table["distance"] == 0).all()
    with torch.no_grad():
        w = model.bert.encoder.layer[0].output.dense.weight
        w.add_(torch.full_like(w, 0.5))
    table = forgetting.weight_drift(model, reference)
    expected = 0.5 * np.sqrt(w.numel())
    assert table.loc["layer 0", "distance"] == pytest.approx(expected)
    assert table.loc["embeddings", "distance"] == 0 and table.loc["pooler", "distance"] == 0
    assert table.loc["all", "distance"] == pytest.approx(expected)
    norm0 = float(torch.cat([v.flatten() for n, v in reference.items() if ".layer.0." in n]).norm())
    assert table.loc["layer 0", "relative"] == pytest.approx(expected / norm0, rel=1e-6)
    assert table.loc["all", "parameters"] == sum(v.numel() for v in reference.values())


def test_weight_drift_refuses_bad_references():
    model = bert_classifier()
    with pytest.raises(ValueError, match="empty"):
        forgetting.weight_drift(model, {})
    with pytest.raises(ValueError, match="does not have"):
        forgetting.weight_drift(model, {"nope.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="shape"):
        forgetting.weight_drift(model, {"classifier.bias": torch.zeros(5)})


def test_word_features_take_each_words_first_sub_token():
    tok = wordpiece_tokenizer()  # "yorkers" -> "york" "##ers"
    model = bert_classifier().eval()
    words = [["new", "yorkers", "love"], ["love"]]
    feats = forgetting.word_features(model, tok, words)
    assert feats.shape == (4, model.config.hidden_size)
    with torch.no_grad():
        ids = tok(words[0], is_split_into_words=True, return_tensors="pt")
        hidden = model.bert(**ids).last_hidden_state[0]
    # tokens: [CLS] new york ##ers love [SEP]; the words start at positions 1, 2 and 4
    np.testing.assert_allclose(feats[:3], hidden[[1, 2, 4]].numpy(), rtol=1e-5, atol=1e-6)
    model.train()
    assert np.array_equal(forgetting.word_features(model, tok, words), feats), "dropout is off while encoding"
    assert model.training, "the model's mode is put back"
    emb = forgetting.word_features(model, tok, words, layer=0)
    assert not np.allclose(emb, feats), "layer 0 (the embeddings) differs from the last layer"


def test_word_features_refuse_words_lost_to_truncation():
    tok = wordpiece_tokenizer()
    with pytest.raises(ValueError, match="cut off 1 of its 3 words"):
        forgetting.word_features(bert_classifier(), tok, [["new", "yorkers", "love"]], max_length=4)


def test_entity_probe_finds_a_separable_entity_class():
    rng = np.random.default_rng(0)
    tags = [[0, 0, 3, 4, 0] for _ in range(40)]
    y = np.array([t != 0 for seq in tags for t in seq])
    feats = rng.normal(size=(len(y), 8)).astype(np.float32)
    feats[y, 0] += 4.0  # the entity words stand out on one axis
    score = forgetting.entity_probe(feats, tags, feats, tags)
    assert score.f1 > 0.95 and score.n_words == len(y)
    noise = rng.normal(size=feats.shape).astype(np.float32)
    assert forgetting.entity_probe(noise, tags, noise[::-1].copy(), tags).f1 < score.f1 - 0.3


def test_entity_probe_refuses_mismatched_inputs():
    feats = np.zeros((5, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="5 word vectors but 4 tags"):
        forgetting.entity_probe(feats, [[0, 1, 0, 1]], feats, [[0, 1, 0, 1, 0]])
    with pytest.raises(ValueError, match="only one class"):
        forgetting.entity_probe(feats, [[0] * 5], feats, [[0] * 5])
    with pytest.raises(ValueError, match="C must be"):
        forgetting.entity_probe(feats, [[0, 1, 0, 1, 0]], feats, [[0, 1, 0, 1, 0]], C=0)
