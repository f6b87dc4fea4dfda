"""Run chapter notebooks in a fresh kernel and stamp the ones run under ``full``.

    python -m llmbook.execute [--profile full|smoke] NOTEBOOK...
    python -m llmbook.execute --check [NOTEBOOK...]

After a successful ``full`` run the notebook is saved with its outputs and
``metadata.llmbook`` = {profile, precision, code_hash, modules, wall_time_s,
versions, device, executed_at}. ``modules`` maps every ``llmbook`` file the
kernel had imported at the end of the run to its sha256, so changing one helper
invalidates only the notebooks that use it. Code that a notebook runs outside
its kernel (a worker process, a server) must be an ``llmbook`` module started as
``python -m llmbook.<module>``; :func:`out_of_kernel_modules` finds those in the
code cells, and their files and the ``llmbook`` files they import are hashed
into ``modules`` too. :func:`disallowed_commands` names any other program a
cell would run.

A full run computes in fp32 on every machine (``$LLMBOOK_PRECISION=fp32`` in
the kernel), so the stamped numbers do not depend on the CPU that made them.
Nothing else writes this stamp; ``--check`` (and the test suite) refuses
notebooks whose stamp is missing, not ``full``, not fp32, or out of date.

A smoke run never overwrites the notebook; pass ``--output-dir`` to keep its result.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import html
import json
import os
import re
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import nbformat

from llmbook import hardware
from llmbook import profile as profiles

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
STAMP_KEY = "llmbook"
PROBE_MARK = "<<LLMBOOK-PROBE>>"
HARD_CAP_S = 20 * 60  # a chapter's full run must stay below this on the 2-core CPU
STAMP_PRECISION = hardware.DEFAULT_PRECISION  # "fp32": every stamped run, on every machine
PROBE_CODE = f"""
import sys as _s, json as _j, os as _o
_files = {{n: getattr(m, "__file__", None) for n, m in list(_s.modules.items())
           if n == "llmbook" or n.startswith("llmbook.")}}
from llmbook import runtime as _rt
print({PROBE_MARK!r} + _j.dumps({{"modules": _files, "versions": _rt.versions(),
                                  "device": _rt.device_description(),
                                  "precision": _o.environ.get({hardware.PRECISION_ENV!r})}}))
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
        source = _module_source(name)
        if source is None:
            raise StampError(f"module {name} has no source file under {REPO_ROOT}")
        files.add(source)
        if name == "llmbook.metrics":  # evaluate loads these by path, outside sys.modules
            files.update((PACKAGE_DIR / "metrics").glob("*/*.py"))
    return sorted(files)


def _module_source(name: str) -> Path | None:
    """``llmbook/x.py`` or ``llmbook/x/__init__.py`` for the module ``llmbook.x``."""
    relative = Path(*name.split("."))
    for candidate in (REPO_ROOT / relative.with_suffix(".py"), REPO_ROOT / relative / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_hashes(module_names) -> dict[str, str]:
    return {f.relative_to(REPO_ROOT).as_posix(): file_hash(f) for f in module_files(module_names)}


# --------------------------------------------------------------------------- code run outside the kernel

# `-m llmbook.x` in a shell string or in a list of arguments ("-m", "llmbook.x")
_DASH_M_LLMBOOK = re.compile(r"""(?<![\w-])-m["']?\s*(?:,\s*)?["']?(llmbook(?:\.\w+)*)\b""")


def llmbook_imports(source: str, package: str = "llmbook") -> set[str]:
    """Dotted names of the ``llmbook`` modules that ``source`` may import, found statically.

    Covers ``import llmbook.x``, ``from llmbook import x``, ``from llmbook.x import y`` and
    relative imports (resolved against ``package``, the package the source lives in), at any
    depth, inside functions too. A name may be an attribute rather than a module (``y`` in
    ``from llmbook.x import y``): callers keep the names that have a source file. Every parent
    package is included, as Python imports it first.
    """
    names: set[str] = set()

    def add(dotted: str) -> None:
        parts = dotted.split(".")
        if parts[0] == "llmbook":
            names.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                add(alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            if module.split(".")[0] != "llmbook":
                continue
            add(module)
            for alias in node.names:
                if alias.name != "*":
                    add(f"{module}.{alias.name}")
    return names


def out_of_kernel_modules(nb: nbformat.NotebookNode) -> set[str]:
    """The ``llmbook`` modules a notebook runs outside its kernel, with what they import.

    Every ``llmbook.<module>`` that a code cell passes after ``-m`` (in a list of arguments or
    a shell string) is run as ``python -m llmbook.<module>``; the result holds those modules,
    their packages and, found statically, every ``llmbook`` module they import, transitively.
    A name without a source file is kept, so that stamping reports it.
    """
    started: set[str] = set()
    for cell in nb.cells:
        if cell.cell_type == "code":
            started.update(_DASH_M_LLMBOOK.findall(cell.source))
    found: set[str] = set()
    todo = []
    for name in started:
        todo.append(name)
        source = _module_source(name)
        if source is not None and source.name == "__init__.py":
            todo.append(f"{name}.__main__")  # `python -m package` runs its __main__
    while todo:
        name = todo.pop()
        if name in found:
            continue
        found.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))
        file = _module_source(name)
        if file is None:
            continue
        package = name if file.name == "__init__.py" else ".".join(parts[:-1])
        todo.extend(m for m in llmbook_imports(file.read_text(), package) if _module_source(m) is not None)
    return {n for n in found if _module_source(n) is not None} | {n for n in started if _module_source(n) is None}


# Programs a code cell may start. Anything else (a script, another interpreter, a shell) is
# refused: code that runs outside the kernel must be an llmbook module, so that its hash is
# part of the stamp.
_EXEC_CALLS = {"subprocess.run", "subprocess.call", "subprocess.check_call", "subprocess.check_output",
               "subprocess.Popen"}
_SHELL_STRING_CALLS = {"os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput",
                       "asyncio.create_subprocess_shell"}
_NEVER_CALLS = re.compile(r"^(os\.(exec|spawn|posix_spawn)\w*|pty\.spawn)$")
_SCRIPT_CELL_MAGICS = {"bash", "sh", "script", "system", "sx", "python", "python2", "python3", "pypy",
                       "perl", "ruby", "cmd", "powershell"}
_PYTHON_BODY_MAGICS = {"time", "timeit", "capture", "prun"}
_SHELL_SPLIT = re.compile(r"\|\||&&|[;|&\n]")
_SHELL_REDIRECT = re.compile(r"\d*>&\d+|&>>?")
_SHELL_PREFIXES = ("nohup", "env", "exec", "time")
_COLAB_TEST = "'google.colab' in sys.modules"


def _is_python(word: str) -> bool:
    word = word.strip("'\"")
    return word in ("{sys.executable}", "sys.executable", "$PYTHON") or bool(
        re.fullmatch(r"python[\d.]*(\.exe)?", Path(word).name))


def _judge_argv(argv: list[str | None], pip_ok: bool) -> str | None:
    """Why running ``argv`` is refused, or None when it is allowed (a None word is not known
    statically). ``pip_ok``: whether pip may run here."""
    while argv and argv[0] is not None and (re.fullmatch(r"\w+=\S*", argv[0]) or argv[0] in _SHELL_PREFIXES):
        argv = argv[1:]  # FOO=1 nohup python -m ...
    if not argv:
        return None
    program = argv[0]
    if program is None:
        return "the program is not a literal"
    name = Path(program.strip("'\"")).name
    if name == "nvidia-smi":
        return None
    if name in ("pip", "pip3") or (_is_python(program) and argv[1:3] == ["-m", "pip"]):
        return None if pip_ok else "pip runs only in the Colab cell (under `if \"google.colab\" in sys.modules:`)"
    if _is_python(program):
        if len(argv) >= 3 and argv[1] == "-m":
            if argv[2] is not None and re.fullmatch(r"llmbook(\.\w+)*", argv[2]):
                return None
        elif len(argv) >= 2 and argv[1] is not None and re.fullmatch(r"-mllmbook(\.\w+)*", argv[1]):
            return None
        return "python may run only `-m llmbook.<module>`"
    return f"runs {name!r}; a notebook starts only `python -m llmbook.<module>` (and pip, nvidia-smi)"


def _judge_shell(command: str, pip_ok: bool) -> list[str]:
    """Why each command of a shell line is refused (none: allowed)."""
    reasons = []
    for part in _SHELL_SPLIT.split(_SHELL_REDIRECT.sub(" ", command)):
        if not part.strip():
            continue
        try:
            words = shlex.split(part)
        except ValueError:
            words = part.split()
        argv: list[str | None] = []
        skip = False
        for word in words:  # drop redirections: `> log.txt`, `2>err`, `<in`
            if skip:
                skip = False
            elif re.fullmatch(r"\d*(>>?|<)", word):
                skip = True
            elif not re.match(r"\d*(>>?|<)", word) and word not in ("(", ")", "{", "}"):
                argv.append(word)
        reason = _judge_argv(argv, pip_ok)
        if reason:
            reasons.append(f"{part.strip()!r}: {reason}")
    return reasons


def _literal_argv(node: ast.AST | None, assigned: dict[str, ast.AST]) -> list[str | None] | str | None:
    """A call's argument as a list of words (None for a word not known statically), a string
    (a shell command or one program name), or None when it cannot be read at all."""
    if isinstance(node, ast.Name) and node.id in assigned:
        node = assigned[node.id]
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else "{" + ast.unparse(v.value) + "}"
                       for v in node.values)
    if isinstance(node, (ast.List, ast.Tuple)):
        words: list[str | None] = []
        for item in node.elts:
            if isinstance(item, ast.Constant) and isinstance(item.value, str):
                words.append(item.value)
            elif ast.unparse(item) == "sys.executable":
                words.append("sys.executable")
            elif isinstance(item, ast.JoinedStr):
                words.append(_literal_argv(item, {}))  # type: ignore[arg-type]
            else:
                words.append(None)
        return words
    return None


def disallowed_commands(source: str) -> list[str]:
    """What a code cell runs outside the kernel that a notebook may not run, one line each.

    Allowed: ``python -m llmbook.<module>`` (through ``subprocess``/``os.system`` or a shell
    line such as ``!python -m llmbook.x``), ``!pip``/``%pip`` and ``!nvidia-smi``, and ``pip``
    through ``subprocess`` inside an ``if "google.colab" in sys.modules:`` block (the Colab
    install cell). Refused: any other program or script, ``%run``, script cell magics
    (``%%bash``, ``%%sh``, ``%%script``, ...), and calls whose command is not written out.
    """
    try:
        from IPython.core.inputtransformer2 import TransformerManager

        code = TransformerManager().transform_cell(source)
        tree = ast.parse(code)
    except SyntaxError as err:
        return [f"cannot parse the cell ({err.msg}); nothing it runs can be checked"]
    assigned = {node.targets[0].id: node.value for node in ast.walk(tree)
                if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)}
    aliases: dict[str, str] = {}  # import subprocess as sp / from os import system
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases.update({a.asname: a.name for a in node.names if a.asname})
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            aliases.update({a.asname or a.name: f"{node.module}.{a.name}" for a in node.names})
    problems: list[str] = []

    def canonical(func: ast.AST) -> str:
        name = ast.unparse(func)
        head, _, rest = name.partition(".")
        return aliases[head] + ("." + rest if rest else "") if head in aliases else name

    def visit(node: ast.AST, colab: bool) -> None:
        if isinstance(node, ast.If) and ast.unparse(node.test) == _COLAB_TEST:
            visit(node.test, colab)
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, colab)
            return
        if isinstance(node, ast.Call):
            check_call(node, colab)
        for child in ast.iter_child_nodes(node):
            visit(child, colab)

    def first_arg(call: ast.Call) -> ast.AST | None:
        if call.args:
            return call.args[0]
        return next((k.value for k in call.keywords if k.arg in ("args", "cmd", "command")), None)

    def check_call(call: ast.Call, colab: bool) -> None:
        func = canonical(call.func)
        where = f"line {call.lineno}: `{ast.unparse(call)[:120]}`"
        if _NEVER_CALLS.match(func):
            problems.append(f"{where}: {func} runs a program in place of python -m llmbook.<module>")
            return
        if func.endswith(("get_ipython().system", "get_ipython().getoutput")):
            arg = _literal_argv(first_arg(call), {})
            if isinstance(arg, str):  # a shell line: `!pip` is allowed anywhere
                problems.extend(f"{where}: {r}" for r in _judge_shell(arg, pip_ok=True))
            return
        if func.endswith("get_ipython().run_line_magic") and len(call.args) >= 2:
            name, line = (_literal_argv(a, {}) for a in call.args[:2])
            if name == "run":
                problems.append(f"{where}: %run runs a script or notebook; use python -m llmbook.<module>")
            elif name in ("system", "sx") and isinstance(line, str):
                problems.extend(f"{where}: {r}" for r in _judge_shell(line, pip_ok=True))
            elif name in _PYTHON_BODY_MAGICS and isinstance(line, str):
                problems.extend(f"{where}: {p}" for p in disallowed_commands(line))
            return
        if func.endswith("get_ipython().run_cell_magic") and len(call.args) >= 3:
            name, body = _literal_argv(call.args[0], {}), _literal_argv(call.args[2], {})
            if name in _SCRIPT_CELL_MAGICS:
                problems.append(f"{where}: %%{name} runs a script; use python -m llmbook.<module>")
            elif name in _PYTHON_BODY_MAGICS and isinstance(body, str):
                problems.extend(f"%%{name} body: {p}" for p in disallowed_commands(body))
            return
        shell_string = func in _SHELL_STRING_CALLS
        exec_call = func in _EXEC_CALLS or func == "asyncio.create_subprocess_exec"
        if not (shell_string or exec_call):
            return
        if func == "asyncio.create_subprocess_exec":
            argv = [_literal_argv(a, assigned) if not isinstance(a, ast.Starred) else None for a in call.args]
            argv = [a if isinstance(a, str) else None for a in argv]
        else:
            argv = _literal_argv(first_arg(call), assigned)
        shell = shell_string or any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and not k.value.value)
                                    for k in call.keywords)
        if argv is None:
            problems.append(f"{where}: the command is not written out in the cell, so what it runs "
                            "cannot be checked; pass a literal list such as "
                            "[sys.executable, \"-m\", \"llmbook.<module>\", ...]")
        elif isinstance(argv, str):
            reasons = _judge_shell(argv, pip_ok=colab) if shell else \
                ([r] if (r := _judge_argv([argv], pip_ok=colab)) else [])
            problems.extend(f"{where}: {r}" for r in reasons)
        else:
            if shell:
                problems.append(f"{where}: a list of arguments with shell=True runs only its first word")
            elif reason := _judge_argv(argv, pip_ok=colab):
                problems.append(f"{where}: {reason}")

    visit(tree, False)
    return problems


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
    environment = {profiles.ENV_VAR: profile}
    if profile == "full":  # the stamped run computes in fp32 on every machine
        environment[hardware.PRECISION_ENV] = STAMP_PRECISION
    previous = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
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
        for name, value in previous.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
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


def _device_with_bf16(device: str) -> str:
    return f"{device}; bf16 {hardware.cpu_bf16_support()}" if device.startswith("cpu") else device


def make_stamp(nb: nbformat.NotebookNode, probe: dict, profile: str) -> dict:
    """The stamp of a run: ``probe`` is what :func:`run_notebook` returned with the notebook."""
    return {
        "profile": profile,
        "precision": probe.get("precision"),
        "code_hash": code_hash(nb),
        "modules": module_hashes(sorted(set(probe["modules"]) | out_of_kernel_modules(nb))),
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
    if stamp.get("precision") != STAMP_PRECISION:
        problems.append(f"{path}: stamped in {stamp.get('precision') or 'an unrecorded precision'}, "
                        f"not {STAMP_PRECISION}")
    if stamp.get("code_hash") != code_hash(nb):
        problems.append(f"{path}: code cells changed since the stamped run")
    for rel, digest in stamp.get("modules", {}).items():
        file = REPO_ROOT / rel
        if not file.exists():
            problems.append(f"{path}: imported {rel}, which no longer exists")
        elif file_hash(file) != digest:
            problems.append(f"{path}: {rel} changed since the stamped run")
    for name in sorted(out_of_kernel_modules(nb)):
        source = _module_source(name)
        if source is None:
            problems.append(f"{path}: runs {name} outside the kernel, which has no source file")
        elif source.relative_to(REPO_ROOT).as_posix() not in stamp.get("modules", {}):
            problems.append(f"{path}: runs {source.relative_to(REPO_ROOT).as_posix()} outside the kernel, "
                            "which the stamp does not list")
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
        print("\n".join(problems) or f"{len(notebooks)} notebooks stamped 'full' in {STAMP_PRECISION} and fresh")
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
            if profile == "full":
                nb.metadata[STAMP_KEY] = make_stamp(nb, probe, profile)
        except Exception as err:  # report and go on with the next notebook
            failed += 1
            print(f"  FAILED: {type(err).__name__}: {str(err)[-3000:]}", file=sys.stderr)
            continue
        target = (args.output_dir / path.name) if args.output_dir else (path if profile == "full" else None)
        if target is not None:
            target.parent.mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, target)
        print(f"  ok in {probe['wall_time_s']:.0f} s on {_device_with_bf16(probe['device'])}"
              + (f"; written to {target}" if target else " (smoke run: notebook not overwritten)"))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
