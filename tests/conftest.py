"""Shared fixtures. Tests marked ``assets`` need the fetched asset cache."""

from __future__ import annotations

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
