"""Local ``evaluate`` metric modules, loaded by path so that no script is downloaded.

``evaluate.load("accuracy")`` fetches its script from the Hugging Face Hub; the
book ships the three metrics it uses and loads them with the real ``evaluate``
API: ``llmbook.metrics.load("accuracy")``.
"""

from __future__ import annotations

from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
AVAILABLE = ("accuracy", "f1", "seqeval")


def metric_path(name: str) -> Path:
    """Directory of a bundled metric module."""
    if name not in AVAILABLE:
        raise ValueError(f"no bundled metric {name!r}; bundled metrics: {', '.join(AVAILABLE)}")
    return METRICS_DIR / name


def load(name: str, **kwargs):
    """``evaluate.load`` of a bundled metric, by path (works offline)."""
    import evaluate

    return evaluate.load(str(metric_path(name)), **kwargs)
