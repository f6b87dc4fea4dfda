"""Checks of the committed notebooks: fresh stamps, structure, glue keys, exercise format."""

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
# The headline numbers each chapter must glue (from its issue); book/results.md pastes them.
REQUIRED_GLUE = {
    "00_quickstart.ipynb": {"polarity_n_train", "ner_n_train", "shakespeare_n_chars"},
    "01_pretraining.ipynb": {"tokenizer_compression_ratio", "pretrain_char_val_loss", "pretrain_minutes",
                             "pretrain_bpc_ours", "pretrain_bpc_smollm2", "mlm_top1_acc"},
    "02_losses.ipynb": {"grad_max_abs_err", "adamw_vs_l2_gap"},
    "03a_fine_tuning_classification.ipynb": {"ft_acc_full", "ft_acc_majority", "ft_acc_tfidf", "ft_acc_probe"},
    "03b_fine_tuning_ner.ipynb": {"ner_entity_f1", "ner_token_acc_with_O"},
    "03c_fine_tuning_trainer.ipynb": {"ft_acc_trainer", "ft_acc_loop_parity", "ft_train_eps_loop",
                                      "ft_train_eps_trainer"},
    "03d_pretraining_transfer.ipynb": {"ft_acc_scratch", "ft_lc_gap_max", "ft_lc_gap_max_labels"},
    "05_prompting.ipynb": {"zs_acc_generate", "zs_acc_scoring", "zs_acc_calibrated", "fs_acc_best",
                           "emb_acc_k16"},
}
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
    assert REQUIRED_GLUE.get(path.name, set()) <= glued
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
