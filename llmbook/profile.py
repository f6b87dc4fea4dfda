"""Run profiles: one switch that sizes every experiment in the book.

``full`` (the default) is the run whose outputs the book shows; ``smoke`` is a
tiny version of the same code paths for CI. Notebooks never read the
environment variable themselves; they call :func:`pick`.
"""

from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")

ENV_VAR = "LLMBOOK_PROFILE"
PROFILES: tuple[str, ...] = ("full", "smoke")
DEFAULT = "full"


class ProfileError(ValueError):
    """An unknown profile name was given."""


def current() -> str:
    """Return the active profile name, validating ``$LLMBOOK_PROFILE``."""
    name = os.environ.get(ENV_VAR, DEFAULT).strip().lower() or DEFAULT
    if name not in PROFILES:
        raise ProfileError(
            f"{ENV_VAR}={os.environ.get(ENV_VAR)!r} is not a known profile; "
            f"use one of {', '.join(PROFILES)} (default {DEFAULT!r})."
        )
    return name


def is_smoke() -> bool:
    """True under the ``smoke`` profile (CI-sized runs)."""
    return current() == "smoke"


def pick(*, full: T, smoke: T) -> T:
    """Choose a value for the active profile: ``pick(full=3000, smoke=20)``."""
    return smoke if current() == "smoke" else full
