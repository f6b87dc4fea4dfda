"""Tiny models and data built from configs, shared by the unit tests (no assets needed)."""

from __future__ import annotations

import numpy as np
import torch

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CORPUS = [
    "a gripping film with a great cast", "a tedious mess of a movie", "the plot is thin but the acting is good",
    "positive negative good bad yes no", "Review: one of the best films of the year",
    "Sentiment: positive", "Sentiment: negative", "I would not watch it again",
] * 20


def chat_tokenizer():
    """A byte-level BPE tokenizer trained on :data:`CORPUS`, with a ChatML template, padding on the left."""
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


def wordpiece_tokenizer():
    """A fast WordPiece tokenizer over eight entries: "yorkers" splits into "york" + "##ers"."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from tokenizers.processors import TemplateProcessing
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "new": 4, "york": 5, "##ers": 6, "love": 7}
    backend = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]")


def single_token_words(tokenizer, n: int = 2) -> list[str]:
    words = [w for w in ["positive", "negative", "good", "bad", "great", "the", "a", "is", "film"]
             if len(tokenizer(w, add_special_tokens=False)["input_ids"]) == 1]
    assert len(words) >= n, "the test tokenizer should know a few whole words"
    return words[:n]


def bert_config(num_labels: int = 2, **kw):
    from transformers import BertConfig

    settings = dict(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                    intermediate_size=32, max_position_embeddings=32) | kw
    return BertConfig(num_labels=num_labels, **settings)


def bert_classifier(seed: int = 0, **kw):
    from transformers import BertForSequenceClassification

    torch.manual_seed(seed)
    return BertForSequenceClassification(bert_config(**kw))


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
