"""Shared fixtures. Tests marked ``assets`` need the fetched asset cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmbook import assets


def pytest_collection_modifyitems(config, items):
    missing = [a.name for a in assets.MANIFEST if not a.optional and not assets.is_ready(a)]
    if not missing:
        return
    skip = pytest.mark.skip(reason=f"assets not fetched ({', '.join(missing)}): run make assets")
    for item in items:
        if "assets" in item.keywords:
            item.add_marker(skip)


PACKAGE_DIR = Path(__file__).resolve().parents[1] / "llmbook"


def package_modules() -> list[str]:
    """The llmbook modules on disk: each ``llmbook/NAME.py`` except ``__init__``/``__main__``,
    and each sub-package folder (``llmbook/metrics``)."""
    files = {p.stem for p in PACKAGE_DIR.glob("*.py") if p.stem not in ("__init__", "__main__")}
    folders = {p.name for p in PACKAGE_DIR.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    return sorted(files | folders)


@pytest.fixture
def llmbook_modules() -> list[str]:
    return package_modules()
