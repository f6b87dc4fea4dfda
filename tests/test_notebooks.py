"""Checks of the committed notebooks against the chapter registry (book/chapters.yml): fresh
stamps within each chapter's time cap, structure, glue keys, exercise format, what a notebook
runs outside its kernel, and which chapter owns each llmbook module."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest
import yaml

from llmbook import execute

pytestmark = pytest.mark.notebooks

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REGISTRY = yaml.safe_load((ROOT / "book" / "chapters.yml").read_text())
CHAPTER_KEYS = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "A"]
CHAPTER_OF = {nb: key for key, chapter in REGISTRY.items() for nb in chapter.get("notebooks") or []}
GLUE_MIME = "application/papermill.record/"


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _glued_values(nb) -> dict[str, str]:
    """Glue key -> the text/plain form that myst-nb pastes."""
    values = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if any(k.startswith(GLUE_MIME) for k in data):
                values[out["metadata"]["scrapbook"]["name"]] = data.get(GLUE_MIME + "text/plain", "")
    return values


def _glued(nb) -> set[str]:
    return set(_glued_values(nb))


def _registered_glue(notebook: str) -> set[str]:
    """The glue keys the registry lists for a notebook (its chapter's ``glue`` entry)."""
    chapter = REGISTRY.get(CHAPTER_OF.get(notebook), {})
    return set((chapter.get("glue") or {}).get(notebook) or [])


# {glue:text}`key:spec` or {glue:text}`../notebooks/x.ipynb::key:spec`
TEXT_PASTE = re.compile(r"\{glue:text\}`(?:([^`]+?\.ipynb)::)?([^`:]+)(?::([^`]*))?`")


def _text_pastes(source: str, default_notebook: Path):
    for match in TEXT_PASTE.finditer(source):
        notebook, key, spec = match.groups()
        path = (ROOT / "notebooks" / Path(notebook).name) if notebook else default_notebook
        yield path, key, spec or ""


def test_there_are_notebooks():
    assert NOTEBOOKS, "no notebooks found"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stamp_is_full_and_fresh(path):
    assert execute.check_notebook(path) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_outputs_are_clean(path):
    nb = _read(path)
    assert "widgets" not in nb.metadata, "saved widget state: re-run through llmbook.execute"
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out["output_type"] != "error", f"error output in {path.name}"
            assert "application/vnd.jupyter.widget-view+json" not in out.get("data", {})
        if cell.cell_type == "code":
            assert cell.execution_count is not None, f"unexecuted code cell in {path.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_colab_cell_matches_the_config(path):
    first_code = next(c for c in _read(path).cells if c.cell_type == "code")
    repo = CONFIG["repository"]["url"]
    assert '"google.colab" in sys.modules' in first_code.source
    assert f'REPO_URL = "{repo}"' in first_code.source
    owner_repo = repo.removeprefix("https://github.com/")
    badge = f"colab.research.google.com/github/{owner_repo}/blob/main/notebooks/{path.name}"
    assert badge in _read(path).cells[0].source, "the Colab badge must point at this notebook"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_required_glue_keys_and_prose_references(path):
    nb = _read(path)
    glued = _glued(nb)
    missing = _registered_glue(path.name) - glued
    assert not missing, f"{path.name} does not glue {sorted(missing)}, which book/chapters.yml requires"
    prose = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    # pastes from another notebook (`../notebooks/x.ipynb::key:spec`) are checked in
    # test_every_text_paste_formats against that notebook's outputs
    for key in re.findall(r"\{glue(?::\w+)?\}`(?![^`]*\.ipynb::)([^`:]+)", prose):
        assert key in glued, f"prose pastes {key!r}, which the notebook never glues"


PAGES_WITH_GLUE = [p for p in sorted((ROOT / "book").glob("*.md")) if "{glue" in p.read_text()]


@pytest.mark.parametrize("path", NOTEBOOKS + PAGES_WITH_GLUE, ids=lambda p: p.name)
def test_every_text_paste_formats(path):
    """myst-nb formats {glue:text}`key:.3f` with float() of the text/plain form; a numpy
    scalar glued as ``np.float64(0.8)`` cannot be parsed, so the book build would fail."""
    from myst_nb.core.variables import format_plain_text

    if path.suffix == ".ipynb":
        source = "\n".join(c.source for c in _read(path).cells if c.cell_type == "markdown")
    else:
        source = path.read_text()
    for notebook, key, spec in _text_pastes(source, path):
        if notebook != path:
            # myst-nb splits "path::key" on the last colon, so a cross-document paste without
            # a format spec is read as a key ending in ":" and the build warns (fails under -W)
            assert spec, f"{path.name}: {notebook.name}::{key} needs a format spec, e.g. :d or :s"
        values = _glued_values(_read(notebook))
        assert key in values, f"{path.name} pastes {key!r}, which {notebook.name} never glues"
        try:
            format_plain_text(values[key], spec)
        except (TypeError, ValueError) as exc:
            raise AssertionError(f"{path.name}: {key}={values[key]!r} cannot be formatted as {spec!r}: "
                                 "glue a plain float or int") from exc


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_exercises_follow_the_nbgrader_format(path):
    cells = _read(path).cells
    ids = set()
    for i, cell in enumerate(cells):
        meta = cell.metadata.get("nbgrader")
        if not meta:
            assert "### BEGIN SOLUTION" not in cell.source
            continue
        assert meta["grade_id"] not in ids, "duplicate nbgrader grade_id"
        ids.add(meta["grade_id"])
        if meta.get("solution"):
            assert "### BEGIN SOLUTION" in cell.source and "### END SOLUTION" in cell.source
            assert "hide-input" in cell.metadata.get("tags", [])
            test = cells[i + 1]
            assert test.metadata.get("nbgrader", {}).get("grade") is True, "a solution needs a graded test cell after it"
            assert "assert" in test.source
        elif meta.get("grade"):
            assert meta.get("locked") is True and meta.get("points", 0) > 0


def test_every_notebook_and_page_is_in_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    for path in NOTEBOOKS:
        assert f"notebooks/{path.stem}" in toc, f"{path.name} is missing from _toc.yml"
    for page in (ROOT / "book").glob("*.md"):
        assert f"book/{page.stem}" in toc


def test_config_builds_from_committed_outputs():
    assert CONFIG["execute"]["execute_notebooks"] == "off"
    assert CONFIG["launch_buttons"]["colab_url"] and CONFIG["launch_buttons"]["binderhub_url"]


# --------------------------------------------------------------------------- the chapter registry


def test_registry_lists_every_chapter_with_its_fields():
    assert list(REGISTRY) == CHAPTER_KEYS
    for key, chapter in REGISTRY.items():
        assert set(chapter) >= {"title", "notebooks", "status", "time_cap_s", "glue", "modules"}, key
        assert chapter["title"] and isinstance(chapter["title"], str), key
        assert chapter["status"] in ("published", "planned"), key
        notebooks, glue = chapter["notebooks"], chapter["glue"]
        assert isinstance(notebooks, list) and isinstance(glue, dict) and isinstance(chapter["modules"], list), key
        assert bool(notebooks) == (chapter["status"] == "published"), f"chapter {key}: published iff it has notebooks"
        assert set(glue) <= set(notebooks), f"chapter {key} lists glue for a notebook it does not have"
        assert 0 < chapter["time_cap_s"] <= execute.HARD_CAP_S, key
        assert chapter.get("time_target_s", chapter["time_cap_s"]) <= chapter["time_cap_s"], key
    every = [nb for chapter in REGISTRY.values() for nb in chapter["notebooks"]]
    assert len(every) == len(set(every)), "a notebook is listed under two chapters"


def test_every_notebook_is_in_the_registry_and_the_toc():
    toc = (ROOT / "_toc.yml").read_text()
    for path in NOTEBOOKS:
        assert path.name in CHAPTER_OF, f"{path.name} is in no chapter of book/chapters.yml"
        assert f"notebooks/{path.stem}" in toc, f"{path.name} is missing from _toc.yml"


def test_every_registered_notebook_exists():
    toc = (ROOT / "_toc.yml").read_text()
    for key, chapter in REGISTRY.items():
        if chapter["status"] != "published":
            continue
        for name in chapter["notebooks"]:
            assert (ROOT / "notebooks" / name).is_file(), f"chapter {key} lists {name}, which does not exist"
            assert f"notebooks/{Path(name).stem}" in toc, f"chapter {key} lists {name}, which _toc.yml lacks"


RESULTS_PAGE = ROOT / "book" / "results.md"


def test_results_page_pastes_only_registered_keys():
    pastes = list(_text_pastes(RESULTS_PAGE.read_text(), RESULTS_PAGE))
    assert pastes, "book/results.md pastes no number"
    for notebook, key, _spec in pastes:
        assert key in _registered_glue(notebook.name), (
            f"book/results.md pastes {notebook.name}::{key}, which book/chapters.yml does not list for "
            "that notebook: add it to the chapter's glue")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stamped_wall_time_is_within_the_chapter_cap(path):
    stamp = _read(path).metadata.get("llmbook", {})
    cap = REGISTRY[CHAPTER_OF[path.name]]["time_cap_s"]
    assert "wall_time_s" in stamp, f"{path.name} has no stamped wall time"
    assert float(stamp["wall_time_s"]) <= cap, f"{path.name}: full run took {stamp['wall_time_s']} s, cap {cap} s"


def test_every_module_is_owned_by_exactly_one_chapter(llmbook_modules):
    owners: dict[str, list[str]] = {}
    for key, chapter in REGISTRY.items():
        for module in chapter["modules"]:
            owners.setdefault(module, []).append(key)
    shared = {m: keys for m, keys in owners.items() if len(keys) > 1}
    assert not shared, f"modules owned by several chapters: {shared}"
    unowned = sorted(set(llmbook_modules) - set(owners))
    assert not unowned, f"llmbook modules no chapter owns (add them to book/chapters.yml): {unowned}"
    missing = sorted(set(owners) - set(llmbook_modules))
    assert not missing, f"book/chapters.yml names modules that are not in llmbook/: {missing}"


# --------------------------------------------------------------------------- code run outside the kernel


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_no_other_script(path):
    """Outside its kernel a notebook starts only `python -m llmbook.<module>` (whose hash is in
    the stamp), pip and nvidia-smi, and pip through subprocess only in the Colab cell."""
    problems = [f"cell {i}: {problem}" for i, cell in enumerate(_read(path).cells) if cell.cell_type == "code"
                for problem in execute.disallowed_commands(cell.source)]
    assert not problems, f"{path.name} runs code the stamp cannot cover:\n" + "\n".join(problems)
