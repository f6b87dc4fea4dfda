"""Run chapter notebooks in a fresh kernel and stamp the ones run under ``full``.

    python -m llmbook.execute [--profile full|smoke] NOTEBOOK...
    python -m llmbook.execute --check [NOTEBOOK...]

After a successful ``full`` run the notebook is saved with its outputs and
``metadata.llmbook`` = {profile, code_hash, modules, wall_time_s, versions,
device, executed_at}. ``modules`` maps every ``llmbook`` file the kernel had
imported at the end of the run to its sha256, so changing one helper
invalidates only the notebooks that use it. Nothing else writes this stamp;
``--check`` (and the test suite) refuses notebooks whose stamp is missing,
not ``full``, or out of date.

A smoke run never overwrites the notebook; pass ``--output-dir`` to keep its result.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import os
import re
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat

from llmbook import profile as profiles

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
STAMP_KEY = "llmbook"
PROBE_MARK = "<<LLMBOOK-PROBE>>"
HARD_CAP_S = 20 * 60  # a chapter's full run must stay below this on the 2-core CPU
PROBE_CODE = f"""
import sys as _s, json as _j
_files = {{n: getattr(m, "__file__", None) for n, m in list(_s.modules.items())
           if n == "llmbook" or n.startswith("llmbook.")}}
from llmbook import runtime as _rt
print({PROBE_MARK!r} + _j.dumps({{"modules": _files, "versions": _rt.versions(),
                                  "device": _rt.device_description()}}))
"""


class StampError(RuntimeError):
    """A notebook could not be run or stamped."""


# --------------------------------------------------------------------------- hashes


def code_hash(nb: nbformat.NotebookNode) -> str:
    """sha256 of the notebook's code cells, in order (markdown edits do not invalidate)."""
    sources = [cell.source for cell in nb.cells if cell.cell_type == "code"]
    return hashlib.sha256(json.dumps(sources).encode()).hexdigest()


def file_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def module_files(module_names: list[str] | dict[str, str | None]) -> list[Path]:
    """Files behind the imported ``llmbook`` modules, plus bundled metric scripts when used."""
    files: set[Path] = set()
    for name in module_names:
        relative = Path(*name.split("."))
        for candidate in (REPO_ROOT / relative.with_suffix(".py"), REPO_ROOT / relative / "__init__.py"):
            if candidate.exists():
                files.add(candidate)
                break
        else:
            raise StampError(f"module {name} has no source file under {REPO_ROOT}")
        if name == "llmbook.metrics":  # evaluate loads these by path, outside sys.modules
            files.update((PACKAGE_DIR / "metrics").glob("*/*.py"))
    return sorted(files)


def module_hashes(module_names) -> dict[str, str]:
    return {f.relative_to(REPO_ROOT).as_posix(): file_hash(f) for f in module_files(module_names)}


# --------------------------------------------------------------------------- widgets


def _strip_html(text: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", text or "")).rstrip()


def widgets_to_text(nb: nbformat.NotebookNode) -> int:
    """Replace tqdm widget outputs by their final text bar and drop the saved widget state.

    GitHub and static HTML cannot render widgets without their state, and the state
    bloats the file; the final bar as text says everything a reader needs.
    """
    state = nb.metadata.get("widgets", {}).get("application/vnd.jupyter.widget-state+json", {})
    models = state.get("state", {})
    replaced = 0

    def child(ref: str) -> dict:
        return models.get(ref.removeprefix("IPY_MODEL_"), {}).get("state", {})

    for cell in nb.cells:
        for i, output in enumerate(cell.get("outputs", [])):
            view = output.get("data", {}).get("application/vnd.jupyter.widget-view+json")
            if not view:
                continue
            text = output["data"].get("text/plain", "")
            box = models.get(view.get("model_id"), {}).get("state", {})
            parts = [child(ref) for ref in box.get("children", [])]
            if len(parts) == 3:
                left, bar, right = parts
                frac = (bar.get("value") or 0) / (bar.get("max") or 1)
                filled = int(round(10 * min(max(frac, 0.0), 1.0)))
                text = f"{_strip_html(left.get('value', ''))}|{'█' * filled}{' ' * (10 - filled)}|" \
                       f"{_strip_html(right.get('value', ''))}"
            cell.outputs[i] = nbformat.v4.new_output("stream", name="stderr", text=text + "\n")
            replaced += 1
    nb.metadata.pop("widgets", None)
    return replaced


# --------------------------------------------------------------------------- running


def run_notebook(path: Path, profile: str, timeout: int = 3600,
                 kernel_name: str = "python3") -> tuple[nbformat.NotebookNode, dict]:
    """Execute ``path`` top to bottom in a fresh kernel; return the notebook and the probe result."""
    from nbclient import NotebookClient

    if profile not in profiles.PROFILES:
        raise profiles.ProfileError(f"unknown profile {profile!r}; use one of {', '.join(profiles.PROFILES)}")
    nb = nbformat.read(path, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE_CODE))
    previous = os.environ.get(profiles.ENV_VAR)
    os.environ[profiles.ENV_VAR] = profile
    try:
        client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name,
                                resources={"metadata": {"path": str(path.parent.resolve())}},
                                store_widget_state=True)
        start = time.perf_counter()
        try:
            client.execute()
        except Exception as err:
            kept = _keep_failed_run(nb, path)
            raise StampError(f"{err}\n  the outputs up to the failing cell are in {kept}") from err
        wall = time.perf_counter() - start
    finally:
        if previous is None:
            os.environ.pop(profiles.ENV_VAR, None)
        else:
            os.environ[profiles.ENV_VAR] = previous
    probe_cell = nb.cells.pop()
    text = "".join(o.get("text", "") for o in probe_cell.outputs if o.get("output_type") == "stream")
    if PROBE_MARK not in text:
        raise StampError(f"{path}: the kernel did not answer the module probe: {text[:500]}")
    probe = json.loads(text.split(PROBE_MARK, 1)[1].strip().splitlines()[0])
    for name, file in probe["modules"].items():
        if file and not Path(file).resolve().is_relative_to(PACKAGE_DIR):
            raise StampError(f"the kernel imported {name} from {file}, not from {PACKAGE_DIR}; "
                             "install the package with `pip install -e .` from this checkout")
    probe["wall_time_s"] = round(wall, 1)
    widgets_to_text(nb)
    return nb, probe


def _keep_failed_run(nb: nbformat.NotebookNode, path: Path) -> Path:
    """Save a failed run's outputs, for the author to read, where no check mistakes it for the chapter.

    The folder is ``$LLMBOOK_FAILED_DIR``, by default ``llmbook-failed`` in the system's temporary folder.
    """
    if nb.cells and PROBE_MARK in nb.cells[-1].source:
        nb.cells.pop()
    widgets_to_text(nb)
    target = Path(os.environ.get("LLMBOOK_FAILED_DIR") or Path(tempfile.gettempdir()) / "llmbook-failed") / path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, target)
    return target


def cpu_bf16_support(cpuinfo: str | None = None) -> str:
    """Whether this CPU multiplies in bfloat16 natively: "native (AMX)", "native (AVX-512 BF16)",
    "native (Arm BF16)", "emulated" (none of these: bf16 runs many times slower than fp32) or
    "unknown" (no flags to read).

    Stamped with each CPU run, because a chapter's run time depends on it as much as on the
    number of cores. ``cpuinfo`` is the text of ``/proc/cpuinfo`` (read when not given).
    """
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return "unknown"
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        if line.startswith(("flags", "Features")):
            flags.update(line.split(":", 1)[-1].split())
    if not flags:
        return "unknown"
    if "amx_bf16" in flags:
        return "native (AMX)"
    if "avx512_bf16" in flags:
        return "native (AVX-512 BF16)"
    if "bf16" in flags:  # Arm (Features line)
        return "native (Arm BF16)"
    return "emulated"


def _device_with_bf16(device: str) -> str:
    return f"{device}; bf16 {cpu_bf16_support()}" if device.startswith("cpu") else device


def make_stamp(nb: nbformat.NotebookNode, probe: dict, profile: str) -> dict:
    return {
        "profile": profile,
        "code_hash": code_hash(nb),
        "modules": module_hashes(sorted(probe["modules"])),
        "wall_time_s": probe["wall_time_s"],
        "versions": probe["versions"],
        "device": _device_with_bf16(probe["device"]),
        "executed_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def check_notebook(path: Path) -> list[str]:
    """Problems with a notebook's stamp; an empty list means it is fresh."""
    nb = nbformat.read(path, as_version=4)
    stamp = nb.metadata.get(STAMP_KEY)
    if not stamp:
        return [f"{path}: no execution stamp; run `python -m llmbook.execute {path}`"]
    problems = []
    if stamp.get("profile") != "full":
        problems.append(f"{path}: stamped under profile {stamp.get('profile')!r}, not 'full'")
    if stamp.get("code_hash") != code_hash(nb):
        problems.append(f"{path}: code cells changed since the stamped run")
    for rel, digest in stamp.get("modules", {}).items():
        file = REPO_ROOT / rel
        if not file.exists():
            problems.append(f"{path}: imported {rel}, which no longer exists")
        elif file_hash(file) != digest:
            problems.append(f"{path}: {rel} changed since the stamped run")
    if not stamp.get("modules"):
        problems.append(f"{path}: the stamp lists no llmbook module; every chapter imports llmbook")
    if float(stamp.get("wall_time_s", 0)) > HARD_CAP_S:
        problems.append(f"{path}: full run took {stamp['wall_time_s']} s, over the {HARD_CAP_S} s cap")
    if problems:
        problems.append(f"  -> re-run: python -m llmbook.execute {path}")
    return problems


def all_notebooks() -> list[Path]:
    return sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m llmbook.execute", description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", type=Path, help="default: every notebook in notebooks/")
    parser.add_argument("--profile", default=None, help="full (default, stamps) or smoke")
    parser.add_argument("--check", action="store_true", help="only check that the stamps are fresh")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    parser.add_argument("--output-dir", type=Path, default=None, help="write results here instead")
    args = parser.parse_args(argv)
    notebooks = args.notebooks or all_notebooks()
    if args.check:
        problems = [p for nb in notebooks for p in check_notebook(nb)]
        print("\n".join(problems) or f"{len(notebooks)} notebooks stamped 'full' and fresh")
        return 1 if problems else 0
    profile = args.profile or profiles.current()
    if profile not in profiles.PROFILES:
        print(f"error: unknown profile {profile!r}; use one of {', '.join(profiles.PROFILES)}", file=sys.stderr)
        return 2
    failed = 0
    for path in notebooks:
        print(f"[{profile}] {path} ...", flush=True)
        try:
            nb, probe = run_notebook(path, profile, timeout=args.timeout)
        except Exception as err:  # report and go on with the next notebook
            failed += 1
            print(f"  FAILED: {type(err).__name__}: {str(err)[-3000:]}", file=sys.stderr)
            continue
        if profile == "full":
            nb.metadata[STAMP_KEY] = make_stamp(nb, probe, profile)
        target = (args.output_dir / path.name) if args.output_dir else (path if profile == "full" else None)
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, target)
        print(f"  ok in {probe['wall_time_s']:.0f} s on {_device_with_bf16(probe['device'])}"
              + (f"; written to {target}" if target else " (smoke run: notebook not overwritten)"))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
