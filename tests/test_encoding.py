"""Unit tests of llmbook.encoding: tokenisation without padding, label alignment, padding and batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tiny import bert_classifier as tiny_classifier
from tiny import wordpiece_tokenizer

from llmbook import encoding
from llmbook.losses import IGNORE_INDEX

# --------------------------------------------------------------------------- label alignment


def test_ignore_index_is_the_losses_constant():
    from llmbook import losses

    assert encoding.IGNORE_INDEX == losses.IGNORE_INDEX == -100


def test_first_subtoken_gets_the_label_and_the_rest_minus_100():
    # [CLS] New York ##er s [SEP]: word 0 = "New", word 1 = "Yorkers" split into three pieces
    word_ids = [None, 0, 1, 1, 1, None]
    assert encoding.align_labels_with_tokens(word_ids, [3, 4]) == [IGNORE_INDEX, 3, 4, IGNORE_INDEX,
                                                                    IGNORE_INDEX, IGNORE_INDEX]


def test_label_all_subtokens_repeats_or_maps_to_continuation():
    word_ids = [None, 0, 0, 1, None]
    assert encoding.align_labels_with_tokens(word_ids, [1, 0], label_all_subtokens=True) == [
        IGNORE_INDEX, 1, 1, 0, IGNORE_INDEX]
    # B-x (1) continues as I-x (2)
    assert encoding.align_labels_with_tokens(word_ids, [1, 0], label_all_subtokens=True,
                                             continuation_label={1: 2}) == [IGNORE_INDEX, 1, 2, 0, IGNORE_INDEX]


def test_alignment_rejects_word_ids_beyond_the_labels():
    with pytest.raises(ValueError, match="out of range"):
        encoding.align_labels_with_tokens([None, 0, 2, None], [1, 0])


def test_encode_words_labels_one_token_per_word():
    tok = wordpiece_tokenizer()
    (enc,) = encoding.encode_words(tok, [["yorkers", "love", "new", "york"]], [[1, 0, 1, 2]])
    assert enc["input_ids"] == [2, 5, 6, 7, 4, 5, 3]
    assert enc["labels"] == [IGNORE_INDEX, 1, IGNORE_INDEX, 0, 1, 2, IGNORE_INDEX]
    assert sum(label != IGNORE_INDEX for label in enc["labels"]) == 4  # one label per word
    with pytest.raises(ValueError, match="sentence 0 has 2 words but 1 labels"):
        encoding.encode_words(tok, [["new", "york"]], [[1]])


def test_encode_words_stores_the_word_count_before_truncation():
    tok = wordpiece_tokenizer()
    words = [["yorkers", "love", "new", "york"], ["love", "new"]]
    full = encoding.encode_words(tok, words, [[1, 0, 1, 2], [0, 1]])
    assert [e["n_words"] for e in full] == [4, 2]
    # 5 tokens: [CLS] york ##ers love [SEP]; "new" and "york" are cut off, n_words still counts them
    cut = encoding.encode_words(tok, words, [[1, 0, 1, 2], [0, 1]], max_length=5)
    assert cut[0]["input_ids"] == [2, 5, 6, 7, 3]
    assert cut[0]["n_words"] == 4 and sum(label != IGNORE_INDEX for label in cut[0]["labels"]) == 2
    assert cut[1]["n_words"] == 2 and cut[1]["labels"] == full[1]["labels"]
    assert "n_words" not in encoding.pad_batch(cut, tok.pad_token_id)


# --------------------------------------------------------------------------- padding and batches


def test_pad_batch_pads_to_the_longest_in_the_batch():
    batch = encoding.pad_batch([{"input_ids": [1, 7, 2], "labels": 1}, {"input_ids": [1, 2], "labels": 0}], 0)
    assert batch["input_ids"].tolist() == [[1, 7, 2], [1, 2, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert batch["labels"].tolist() == [1, 0]
    tokens = encoding.pad_batch([{"input_ids": [1, 2], "labels": [-100, -100]},
                                 {"input_ids": [1, 9, 9, 2], "labels": [-100, 3, -100, -100]}], 0)
    assert tokens["labels"].tolist() == [[-100, -100, -100, -100], [-100, 3, -100, -100]]
    with pytest.raises(ValueError, match="empty batch"):
        encoding.pad_batch([], 0)


def test_pad_sequences_right_and_left():
    seqs = [[5, 6, 7], [8], [9, 10]]
    ids, mask = encoding.pad_sequences(seqs, pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [9, 10, 0]]
    assert mask.tolist() == [[1, 1, 1], [1, 0, 0], [1, 1, 0]]
    left, left_mask = encoding.pad_sequences(seqs, pad_id=-1, side="left")
    assert left.tolist() == [[5, 6, 7], [-1, -1, 8], [-1, 9, 10]]
    assert left_mask.tolist() == [[1, 1, 1], [0, 0, 1], [0, 1, 1]]
    assert ids.dtype == left.dtype == mask.dtype == torch.long
    # every left-padded row ends at its last real token, which a causal LM continues from
    assert [row[-1] for row in left.tolist()] == [s[-1] for s in seqs]
    # the real tokens, read through the mask, are the sequences on either side
    for padded, m in ((ids, mask), (left, left_mask)):
        assert [r[k.bool()].tolist() for r, k in zip(padded, m, strict=True)] == seqs


def test_pad_sequences_refuses_an_unknown_side_and_an_empty_batch():
    with pytest.raises(ValueError, match="side must be one of"):
        encoding.pad_sequences([[1, 2]], 0, side="center")
    with pytest.raises(ValueError, match="empty batch"):
        encoding.pad_sequences([], 0)
    with pytest.raises(ValueError, match="empty batch"):
        encoding.pad_sequences([], 0, side="left")


def test_padding_does_not_change_the_logits():
    model = tiny_classifier().eval()
    alone = model(**encoding.pad_batch([{"input_ids": [1, 7, 2]}], 0)).logits
    padded = model(**encoding.pad_batch([{"input_ids": [1, 7, 2]}, {"input_ids": [1, 8, 9, 10, 11, 2]}], 0)).logits
    torch.testing.assert_close(padded[0], alone[0], rtol=1e-5, atol=1e-5)


def test_bucketed_batches_cover_every_example_once_with_less_padding():
    lengths = np.random.default_rng(0).integers(5, 60, size=1000)
    bucketed = encoding.length_bucketed_batches(lengths, 32, seed=1)
    shuffled = encoding.random_batches(1000, 32, seed=1)
    assert sorted(np.concatenate(bucketed).tolist()) == list(range(1000))
    assert all(len(b) <= 32 for b in bucketed)
    assert encoding.padding_fraction(lengths, bucketed) < 0.1 < encoding.padding_fraction(lengths, shuffled)
    again = encoding.length_bucketed_batches(lengths, 32, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip(bucketed, again, strict=True))
    other = encoding.length_bucketed_batches(lengths, 32, seed=2)
    assert not all(np.array_equal(a, b) for a, b in zip(bucketed, other, strict=False))


def test_length_order_is_stable_on_ties_in_both_directions():
    lengths = [3, 1, 3, 2, 1, 3]
    up = encoding.length_order(lengths)
    down = encoding.length_order(lengths, descending=True)
    assert up.tolist() == [1, 4, 3, 0, 2, 5]  # ties (1, 4) and (0, 2, 5) keep their input order
    assert down.tolist() == [0, 2, 5, 3, 1, 4]  # the same in descending order, not reversed
    assert down.tolist() != up[::-1].tolist()
    # results computed in that order go back to input order with out[order] = results
    results = np.asarray(lengths)[down] * 10
    out = np.empty(len(lengths), dtype=int)
    out[down] = results
    assert out.tolist() == [10 * n for n in lengths]
    with pytest.raises(ValueError, match="1-D"):
        encoding.length_order([[1, 2], [3, 4]])


def test_encode_texts_rejects_a_single_string():
    with pytest.raises(TypeError, match="not a single string"):
        encoding.encode_texts(None, "a sentence")


def test_length_order_and_buckets_sort_unsigned_lengths_longest_first():
    lengths = np.array([0, 5, 3], dtype=np.uint32)
    assert encoding.length_order(lengths, descending=True).tolist() == [1, 2, 0]
    (batch,) = encoding.length_bucketed_batches(lengths, 3, seed=0)
    assert batch.tolist() == [1, 2, 0]


def test_a_continuation_label_without_labelling_every_sub_token_is_refused():
    with pytest.raises(ValueError, match="label_all_subtokens"):
        encoding.align_labels_with_tokens([None, 0, 0, None], [1], continuation_label={1: 2})
