import pytest

from llmbook import profile


def test_default_is_full(monkeypatch):
    monkeypatch.delenv(profile.ENV_VAR, raising=False)
    assert profile.current() == "full"
    assert profile.pick(full=100, smoke=2) == 100


def test_smoke_picks_small_values(monkeypatch):
    monkeypatch.setenv(profile.ENV_VAR, "smoke")
    assert profile.is_smoke()
    assert profile.pick(full=100, smoke=2) == 2


def test_case_and_whitespace_are_forgiven(monkeypatch):
    monkeypatch.setenv(profile.ENV_VAR, " Smoke ")
    assert profile.current() == "smoke"


def test_unknown_profile_is_a_clear_error(monkeypatch):
    monkeypatch.setenv(profile.ENV_VAR, "fast")
    with pytest.raises(profile.ProfileError, match=r"'fast' is not a known profile; use one of full, smoke"):
        profile.pick(full=1, smoke=0)
