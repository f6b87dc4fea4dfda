"""The nbval sanitize file (.ci/nbval-sanitize.cfg) must neutralise what legitimately varies
between two runs of a checked cell, and nothing that should be compared."""

from __future__ import annotations

import re
from pathlib import Path

from nbval.plugin import get_sanitize_patterns

CFG = Path(__file__).resolve().parents[1] / ".ci" / "nbval-sanitize.cfg"

REPORT = (
    "[transformers] \x1b[1mBertForTokenClassification LOAD REPORT\x1b[0m from: /root/.cache/llmbook/minilm\n"
    "Key                 | Status     | \n"
    "--------------------+------------+-\n"
    "pooler.dense.bias   | UNEXPECTED | \n"
    "pooler.dense.weight | UNEXPECTED | \n"
    "classifier.weight   | MISSING    | \n"
    "classifier.bias     | MISSING    | \n"
    "\nNotes:\n"
)


def sanitize(text: str) -> str:
    for regex, replace in get_sanitize_patterns(CFG.read_text()):
        text = re.sub(regex, replace, text)
    return text


def test_row_order_and_cache_path_do_not_matter():
    lines = REPORT.split("\n")
    lines[3], lines[4] = lines[4], lines[3]
    other = "\n".join(lines).replace("/root/.cache", "/home/ci/.cache")
    assert other != REPORT
    assert sanitize(other) == sanitize(REPORT)


def test_status_changes_are_still_caught():
    changed = REPORT.replace("classifier.bias     | MISSING   ", "classifier.bias     | UNEXPECTED")
    assert changed != REPORT
    assert sanitize(changed) != sanitize(REPORT)
    fewer = REPORT.replace("classifier.bias     | MISSING    | \n", "")
    assert sanitize(fewer) != sanitize(REPORT)


def test_ordinary_output_is_untouched():
    table = "token  word id  first sub-token\n[CLS]  None  -100\nmetro  0  B-company\n"
    assert sanitize(table) == table
    assert sanitize("a | b |") == "a | b |"  # only upper-case statuses are load-report rows
