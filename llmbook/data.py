"""The book's datasets with fixed, seeded, documented splits.

Every chapter and every reader sees the same examples in the same split:
the splits depend only on the asset files (pinned by sha256) and on the seeds
below, and ``tests/test_data.py`` pins their sizes and content hashes.

- :func:`sentence_polarity`: movie-review sentences, binary label + valence score
- :func:`wnut_ner`: tweets with BIO entity tags
- :func:`shakespeare`: 38 plays, split into train/validation at play boundaries
- :func:`bbc_news`: optional topic classification set
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from llmbook import assets

POLARITY_SEED = 1234
NER_SEED = 2016
SHAKESPEARE_SEED = 1623
BBC_SEED = 2006
POLARITY_LABELS = ("negative", "positive")


def _split_indices(n: int, seed: int, fractions: tuple[float, float] = (0.1, 0.1)) -> dict[str, np.ndarray]:
    """Seeded permutation cut into train / validation / test (validation and test fractions given)."""
    if n < 3:
        raise ValueError(f"need at least 3 examples to split, got {n}")
    order = np.random.default_rng(seed).permutation(n)
    n_val, n_test = (max(1, round(f * n)) for f in fractions)
    return {
        "train": np.sort(order[n_val + n_test:]),
        "validation": np.sort(order[:n_val]),
        "test": np.sort(order[n_val:n_val + n_test]),
    }


def content_hash(dataset: Any) -> str:
    """sha256 (first 16 hex digits) of a ``datasets.Dataset``'s rows, in order."""
    digest = hashlib.sha256()
    for row in dataset:
        digest.update(json.dumps(row, sort_keys=True, ensure_ascii=False).encode())
    return digest.hexdigest()[:16]


# --------------------------------------------------------------------------- sentence polarity


def read_polarity_rows(path: Path | None = None) -> list[dict[str, Any]]:
    """Parse the ground-truth file: ``id<TAB>mean valence<TAB>sentence``.

    Sentences whose mean valence is exactly 0 have no polarity and are dropped
    (37 of them); two sentences appear twice with different scores, and only
    the first occurrence is kept so that no sentence sits in two splits.
    """
    path = path or assets.path("polarity") / "movieReviewSnippets_GroundTruth.txt"
    rows, seen = [], set()
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) != 3:
            raise ValueError(f"{path}:{line_no}: expected 3 tab-separated fields, got {len(parts)}")
        source_id, score, text = int(parts[0]), float(parts[1]), parts[2].strip()
        if score == 0.0 or text in seen:
            continue
        seen.add(text)
        rows.append({"id": source_id, "text": text, "label": int(score > 0), "valence": score})
    return rows


def sentence_polarity(seed: int = POLARITY_SEED):
    """Movie-review sentence polarity: ``DatasetDict`` with train/validation/test (80/10/10).

    Columns: ``id`` (line in the source file), ``text``, ``label`` (0 negative,
    1 positive, the sign of the valence), ``valence`` (mean crowd rating in [-4, 4]).
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    rows = read_polarity_rows()
    features = Features({
        "id": Value("int32"), "text": Value("string"),
        "label": ClassLabel(names=list(POLARITY_LABELS)), "valence": Value("float32"),
    })
    splits = _split_indices(len(rows), seed)
    return DatasetDict({
        name: Dataset.from_list([rows[i] for i in idx], features=features)
        for name, idx in splits.items()
    })


# --------------------------------------------------------------------------- NER


def read_conll(path: Path) -> list[dict[str, list[str]]]:
    """Read a two-column ``token<TAB>tag`` file with blank lines between sentences."""
    sentences, tokens, tags = [], [], []
    for line_no, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            if tokens:
                sentences.append({"tokens": tokens, "tags": tags})
                tokens, tags = [], []
            continue
        parts = line.split("\t")
        if len(parts) != 2 or not parts[1]:
            raise ValueError(f"{path}:{line_no}: expected 'token<TAB>tag', got {line!r}")
        tokens.append(parts[0])
        tags.append(parts[1].strip())
    if tokens:
        sentences.append({"tokens": tokens, "tags": tags})
    return sentences


def ner_label_names(tag_sets: list[list[str]]) -> list[str]:
    """``O`` first, then ``B-type``/``I-type`` pairs sorted by entity type."""
    types = sorted({t[2:] for tags in tag_sets for t in tags if t != "O"})
    bad = sorted({t for tags in tag_sets for t in tags if t != "O" and t[:2] not in ("B-", "I-")})
    if bad:
        raise ValueError(f"tags outside the BIO scheme: {bad}")
    return ["O"] + [f"{p}-{t}" for t in types for p in ("B", "I")]


def wnut_ner(seed: int = NER_SEED):
    """Twitter NER (WNUT-16 style): ``DatasetDict`` train/validation/test (80/10/10) of tweets.

    Columns: ``id``, ``tokens`` (list of words), ``ner_tags`` (``ClassLabel`` ids);
    ``dataset["train"].features["ner_tags"].feature.names`` gives the label names.
    """
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Sequence, Value

    sentences = read_conll(assets.path("wnut") / "ner.txt")
    names = ner_label_names([s["tags"] for s in sentences])
    index = {n: i for i, n in enumerate(names)}
    rows = [{"id": i, "tokens": s["tokens"], "ner_tags": [index[t] for t in s["tags"]]}
            for i, s in enumerate(sentences)]
    features = Features({"id": Value("int32"), "tokens": Sequence(Value("string")),
                         "ner_tags": Sequence(ClassLabel(names=names))})
    splits = _split_indices(len(rows), seed)
    return DatasetDict({
        name: Dataset.from_list([rows[i] for i in idx], features=features)
        for name, idx in splits.items()
    })


# --------------------------------------------------------------------------- Shakespeare

_SPEAKER = re.compile(r"\*\*(.+?)\*\*")
_INLINE_DIRECTION = re.compile(r"\s*_\\?\[.*?\\?\]_")
_ESCAPE = re.compile(r"\\(.)")
_DIRECTION_LINE = re.compile(r"\[.*\]|\*.*\*")


def flatten_play(markdown: str) -> str:
    """Turn one play's markdown into ``SPEAKER:\\nline\\nline\\n\\n`` blocks.

    Headings (title, acts, scenes) and stage directions (``_Enter ..._``, also
    when they span lines) are dropped; markdown escapes are undone. This is the
    form of nanoGPT's tiny-shakespeare file.
    """
    blocks: list[str] = []
    speaker: str | None = None
    lines: list[str] = []
    in_direction = False

    def flush() -> None:
        if speaker and lines:
            blocks.append(f"{speaker}:\n" + "\n".join(lines) + "\n")

    for raw in markdown.splitlines():
        line = raw.strip()
        if in_direction:
            in_direction = not line.endswith(("_", "*"))
            continue
        if not line:
            continue
        if line.startswith("#"):
            flush()
            speaker, lines = None, []
            continue
        if match := _SPEAKER.fullmatch(line):
            flush()
            speaker, lines = match.group(1).strip(), []
            continue
        if line[0] in "_*":  # a stage direction, possibly spanning lines
            in_direction = not (len(line) > 1 and line.endswith(line[0]))
            continue
        line = _ESCAPE.sub(r"\1", _INLINE_DIRECTION.sub("", line)).strip().rstrip("_").strip()
        if line and not _DIRECTION_LINE.fullmatch(line):
            lines.append(line)
    flush()
    return "\n".join(blocks)


def shakespeare_plays() -> list[dict[str, str]]:
    """Every play as ``{"play", "genre", "text"}``, sorted by genre then title."""
    root = assets.path("shakespeare") / "plays"
    plays = []
    for file in sorted(root.glob("*/*.md")):
        plays.append({"play": file.stem, "genre": file.parent.name,
                      "text": flatten_play(file.read_text(encoding="utf-8"))})
    if not plays:
        raise FileNotFoundError(f"no plays under {root}; re-fetch: python -m llmbook.assets fetch shakespeare")
    return plays


def shakespeare(seed: int = SHAKESPEARE_SEED, validation_fraction: float = 0.1):
    """38 plays split at play boundaries: ``DatasetDict`` train/validation, one row per play.

    Plays are drawn in a seeded order into validation until it holds at least
    ``validation_fraction`` of all characters, so no play is in both splits.
    Join a split's ``text`` column with ``"\\n"`` (see :func:`shakespeare_text`).
    """
    from datasets import Dataset, DatasetDict

    plays = shakespeare_plays()
    total = sum(len(p["text"]) for p in plays)
    chosen, size = set(), 0
    for i in np.random.default_rng(seed).permutation(len(plays)):
        if size >= validation_fraction * total:
            break
        chosen.add(int(i))
        size += len(plays[i]["text"])
    return DatasetDict({
        "train": Dataset.from_list([p for i, p in enumerate(plays) if i not in chosen]),
        "validation": Dataset.from_list([p for i, p in enumerate(plays) if i in chosen]),
    })


def shakespeare_text(split: str = "train") -> str:
    """One split of the Shakespeare corpus as a single string."""
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', got {split!r}")
    return "\n".join(shakespeare()[split]["text"])


# --------------------------------------------------------------------------- BBC (optional)


def bbc_news(seed: int = BBC_SEED):
    """BBC News topic classification (optional asset; research use only), 80/10/10."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    root = assets.path("bbc") / "bbc"
    topics = sorted(p.name for p in root.iterdir() if p.is_dir())
    rows = []
    for label, topic in enumerate(topics):
        for file in sorted((root / topic).glob("*.txt")):
            rows.append({"text": file.read_bytes().decode("utf-8", "replace").strip(), "label": label})
    features = Features({"text": Value("string"), "label": ClassLabel(names=topics)})
    splits = _split_indices(len(rows), seed)
    return DatasetDict({
        name: Dataset.from_list([rows[i] for i in idx], features=features)
        for name, idx in splits.items()
    })
