"""The book's splits are fixed: these sizes and hashes change only on purpose."""

import pytest

from llmbook import data

pytestmark = pytest.mark.assets

POLARITY = {"train": (8452, "485a910469e02a49"), "validation": (1057, "577bf87c95fbdd83"),
            "test": (1057, "f169456dbe1a55ac")}
NER = {"train": (1916, "be62239da556abd6"), "validation": (239, "0fe64d9546e81d9b"),
       "test": (239, "7f641d8936ae626a")}


@pytest.fixture(scope="module")
def polarity():
    return data.sentence_polarity()


def test_polarity_split_sizes_and_hashes(polarity):
    got = {k: (len(v), data.content_hash(v)) for k, v in polarity.items()}
    assert got == POLARITY


def test_polarity_is_clean_and_disjoint(polarity):
    texts = [set(polarity[s]["text"]) for s in ("train", "validation", "test")]
    assert sum(len(t) for t in texts) == len(set().union(*texts)) == 10566  # 10,605 - 37 zeros - 2 repeats
    for split in polarity.values():
        for row in split.select(range(50)):
            assert row["label"] == int(row["valence"] > 0) and row["valence"] != 0
    assert polarity["train"].features["label"].names == ["negative", "positive"]
    assert 0.45 < sum(polarity["train"]["label"]) / len(polarity["train"]) < 0.55


def test_ner_split_sizes_hashes_and_labels():
    ner = data.wnut_ner()
    assert {k: (len(v), data.content_hash(v)) for k, v in ner.items()} == NER
    names = ner["train"].features["ner_tags"].feature.names
    assert names[0] == "O" and len(names) == 21  # O + B/I for 10 entity types
    assert sum(len(t) for s in ner.values() for t in s["tokens"]) == 46469
    for row in ner["train"].select(range(100)):
        assert len(row["tokens"]) == len(row["ner_tags"])


def test_shakespeare_splits_at_play_boundaries():
    sp = data.shakespeare()
    train, val = set(sp["train"]["play"]), set(sp["validation"]["play"])
    assert len(train) + len(val) == 38 and not train & val
    assert sorted(val) == ["henry-vi-part-2", "king-john", "much-ado-about-nothing", "titus-andronicus"]
    n_train = sum(len(t) for t in sp["train"]["text"])
    n_val = sum(len(t) for t in sp["validation"]["text"])
    assert (n_train, n_val) == (4294734, 487429)
    assert (data.content_hash(sp["train"]), data.content_hash(sp["validation"])) == (
        "66ad71ae28c90fb6", "1285f485e24d4bfd")


def test_flatten_play_keeps_speakers_and_lines_only():
    md = ("# A Play\n\n## ACT I\n\n### SCENE I. A room.\n\n_Enter HAMLET and\nHORATIO_\n\n"
          "**HAMLET**  \nTo be, or not to be\\--that is the question.  \n_\\[Aside]_  \n\n"
          "**HORATIO**  \n*Exit.*  \nMy lord.  \n")
    assert data.flatten_play(md) == "HAMLET:\nTo be, or not to be--that is the question.\n\nHORATIO:\nMy lord.\n"


def test_bad_inputs_are_clear_errors(tmp_path):
    bad = tmp_path / "ner.txt"
    bad.write_text("Paris\tB-geo-loc\nis nice\n")
    with pytest.raises(ValueError, match=r"ner.txt:2: expected 'token<TAB>tag'"):
        data.read_conll(bad)
    with pytest.raises(ValueError, match="outside the BIO scheme"):
        data.ner_label_names([["O", "X-person"]])
    with pytest.raises(ValueError, match="split must be 'train' or 'validation'"):
        data.shakespeare_text("test")
    with pytest.raises(ValueError, match="at least 3 examples"):
        data._split_indices(2, 0)
