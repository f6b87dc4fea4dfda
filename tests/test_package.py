"""The package's module map is complete, and its imports run one way: from chapter modules down
to the foundations and the core, never back up and never in a circle."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from llmbook import execute

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_DIR = ROOT / "llmbook"

# Every llmbook module sits in a layer; a module may import only modules of its own layer or
# a lower one. 0: core (no chapter module), 1: foundations, 2: methods, 3: applications.
LAYERS = {
    **dict.fromkeys(["assets", "data", "profile", "runtime", "hardware", "models", "execute", "metrics"], 0),
    **dict.fromkeys(["losses", "stats", "encoding", "optim"], 1),
    **dict.fromkeys(["training", "evaluation", "calibration", "inference", "regularizers", "gpt", "forgetting",
                      "parameter_efficient", "comparisons", "augmentation"], 2),
    **dict.fromkeys(["tasks", "prompting"], 3),
}


def module_sources(name: str) -> list[tuple[Path, str]]:
    """The files of an llmbook module with the package each lives in (for relative imports)."""
    file = PACKAGE_DIR / f"{name}.py"
    if file.is_file():
        return [(file, "llmbook")]
    folder = PACKAGE_DIR / name
    return [(f, ".".join(("llmbook", *f.relative_to(PACKAGE_DIR).parent.parts)))
            for f in sorted(folder.rglob("*.py"))]


def imports_of(source: str, package: str, modules: set[str]) -> set[str]:
    """The llmbook modules (top-level names such as ``data``) that ``source`` imports."""
    return {name.split(".")[1] for name in execute.llmbook_imports(source, package)
            if name.count(".") >= 1 and name.split(".")[1] in modules}


def import_graph(modules: list[str]) -> dict[str, set[str]]:
    graph = {}
    for name in modules:
        found: set[str] = set()
        for file, package in module_sources(name):
            found |= imports_of(file.read_text(), package, set(modules))
        graph[name] = found - {name}
    return graph


def layer_problems(graph: dict[str, set[str]], layers: dict[str, int]) -> list[str]:
    """Why an import graph breaks the layers: a module in no layer, an import upwards, a cycle."""
    problems = [f"llmbook.{m} is in no layer: add it to LAYERS in tests/test_package.py"
                for m in sorted(graph) if m not in layers]
    for module, imported in sorted(graph.items()):
        for target in sorted(imported):
            if module in layers and target in layers and layers[target] > layers[module]:
                problems.append(f"llmbook.{module} (layer {layers[module]}) imports llmbook.{target} "
                                f"(layer {layers[target]}): a module imports only its own layer or lower ones")
    state: dict[str, str] = {}  # "open" while on the path, "done" after

    def visit(module: str, path: list[str]) -> None:
        state[module] = "open"
        for target in sorted(graph.get(module, ())):
            if state.get(target) == "open":
                cycle = path[path.index(target):] + [target]
                problems.append("import cycle: " + " -> ".join(f"llmbook.{m}" for m in cycle))
            elif target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    return problems


# --------------------------------------------------------------------------- the checker itself


def test_imports_of_reads_every_form_and_ignores_the_rest():
    source = """
import os
import llmbook.gpt as g
from llmbook import data, __version__
from llmbook.stats import paired_bootstrap
from .losses import IGNORE_INDEX
from numpy import llmbook

def later():
    from llmbook import tasks
"""
    modules = {"data", "gpt", "stats", "losses", "tasks", "assets"}
    assert imports_of(source, "llmbook", modules) == {"gpt", "data", "stats", "losses", "tasks"}


def test_layer_checker_catches_upward_imports_cycles_and_unknown_modules():
    layers = {"data": 0, "assets": 0, "losses": 1, "stats": 1, "tasks": 3}
    assert layer_problems({"data": {"assets"}, "losses": {"data"}, "tasks": {"losses", "data"}}, layers) == []
    upward = layer_problems({"data": {"tasks"}, "tasks": set()}, layers)
    assert len(upward) == 1 and "llmbook.data (layer 0) imports llmbook.tasks (layer 3)" in upward[0]
    cycle = layer_problems({"losses": {"stats"}, "stats": {"losses"}}, layers)
    assert cycle == ["import cycle: llmbook.losses -> llmbook.stats -> llmbook.losses"]
    unknown = layer_problems({"serving": {"data"}, "data": set()}, layers)
    assert unknown == ["llmbook.serving is in no layer: add it to LAYERS in tests/test_package.py"]


def test_layer_checker_on_source_text():
    sources = {"assets": "import json", "data": "from llmbook import assets",
               "stats": "def f():\n    from llmbook.tasks import run\n", "tasks": "from llmbook import stats, data"}
    modules = set(sources)
    graph = {m: imports_of(src, "llmbook", modules) - {m} for m, src in sources.items()}
    problems = layer_problems(graph, LAYERS)
    assert any("llmbook.stats (layer 1) imports llmbook.tasks (layer 3)" in p for p in problems)
    assert any(p.startswith("import cycle:") and "llmbook.stats" in p and "llmbook.tasks" in p for p in problems)


# --------------------------------------------------------------------------- the package


def test_there_are_modules(llmbook_modules):
    assert {"assets", "data", "execute", "metrics"} <= set(llmbook_modules)


def test_imports_follow_the_layers(llmbook_modules):
    problems = layer_problems(import_graph(llmbook_modules), LAYERS)
    assert not problems, "\n".join(problems)


def test_core_modules_import_no_chapter_module(llmbook_modules):
    core = {m for m, layer in LAYERS.items() if layer == 0}
    graph = import_graph(llmbook_modules)
    for module in sorted(core & set(graph)):
        assert graph[module] <= core, f"llmbook.{module} imports {sorted(graph[module] - core)}"


def _package_map() -> str:
    """README.md's section "The llmbook package" (the map lives there, not in ``__init__.py``,
    whose hash is in every stamp)."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(r"^## The llmbook package\s*$(.*?)(?=^## |\Z)", readme, flags=re.M | re.S)
    assert match, "README.md has no '## The llmbook package' section"
    return match.group(1)


def package_map_names(text: str) -> set[str]:
    """Modules named in the package map as `llmbook.NAME` (or :mod:`llmbook.NAME`)."""
    return set(re.findall(r"`llmbook\.(\w+)`", text))


def readme_layout_names(readme: str) -> set[str]:
    """Modules named in README.md's Layout section: as `NAME` anywhere in it, or, in its
    directory listing, as a list after a colon in the ``llmbook/`` entry (``core: assets, data``)."""
    match = re.search(r"^## Layout\s*$(.*?)(?=^## |\Z)", readme, flags=re.M | re.S)
    assert match, "README.md has no '## Layout' section"
    section = match.group(1)
    names = set(re.findall(r"`([a-z_][a-z0-9_]*)`", section))
    entry = re.search(r"^llmbook/(.*?)(?=^\S|\Z)", section, flags=re.M | re.S)
    if entry:
        for listed in re.findall(r":\s*([a-z_]\w*(?:,\s*[a-z_]\w*)+)", entry.group(1)):
            names.update(re.split(r",\s*", listed))
    return names


def test_map_readers_find_the_names():
    doc = "Core:\n\n- `llmbook.assets`  the manifest\n- :mod:`llmbook.data`  splits; see llmbook.x\n"
    assert package_map_names(doc) == {"assets", "data"}
    readme = ("# Book\n\n`make` is the tool.\n\n## Layout\n\n```\nbook/      pages: intro, setup\n"
              "llmbook/   the package, one module per concept (map in llmbook/__init__.py):\n"
              "           core: assets, data;\n           methods: losses,\n           gpt\n"
              "tests/     checks: unit, notebooks\n```\n\nAlso `stats`.\n\n## Licenses\n\n`torch`\n")
    assert readme_layout_names(readme) == {"assets", "data", "losses", "gpt", "stats"}


@pytest.mark.parametrize("where, names", [
    ("the section 'The llmbook package' of README.md", lambda: package_map_names(_package_map())),
    ("the Layout section of README.md", lambda: readme_layout_names((ROOT / "README.md").read_text())),
], ids=["package-map", "readme-layout"])
def test_module_map_names_every_module_and_only_those(llmbook_modules, where, names):
    named = names()
    missing = sorted(set(llmbook_modules) - named)
    assert not missing, f"{where} does not name {missing}"
    stale = sorted(named - set(llmbook_modules))
    assert not stale, f"{where} names {stale}, which llmbook/ does not have"
