"""The executor stamps a full run and the freshness check catches every kind of staleness."""

from pathlib import Path

import nbformat
import pytest

from llmbook import execute


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nb")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny"),
                nbformat.v4.new_code_cell("from llmbook import profile\nprint(profile.current(), 6 * 7)")]
    path = folder / "tiny.ipynb"
    nbformat.write(nb, path)
    assert execute.main([str(path)]) == 0
    return path


def test_full_run_writes_outputs_and_a_complete_stamp(executed):
    nb = nbformat.read(executed, as_version=4)
    assert nb.cells[1].outputs[0]["text"] == "full 42\n"
    stamp = nb.metadata["llmbook"]
    assert stamp["profile"] == "full" and stamp["code_hash"] == execute.code_hash(nb)
    assert "llmbook/profile.py" in stamp["modules"] and "llmbook/data.py" not in stamp["modules"]
    assert set(stamp) >= {"wall_time_s", "versions", "device", "executed_at"}
    if stamp["device"].startswith("cpu"):  # the run time depends on it: the stamp says it
        assert f"; bf16 {execute.cpu_bf16_support()}" in stamp["device"]
    assert len(nb.cells) == 2  # the module probe cell is removed again
    assert execute.check_notebook(executed) == []


def test_check_catches_code_module_profile_and_missing_stamp(executed, tmp_path):
    def variant(change) -> Path:
        nb = nbformat.read(executed, as_version=4)
        change(nb)
        out = tmp_path / f"v{len(list(tmp_path.iterdir()))}.ipynb"
        nbformat.write(nb, out)
        return out

    edited = variant(lambda nb: setattr(nb.cells[1], "source", nb.cells[1].source + "\n1"))
    assert any("code cells changed" in p for p in execute.check_notebook(edited))
    markdown_only = variant(lambda nb: setattr(nb.cells[0], "source", "# renamed"))
    assert execute.check_notebook(markdown_only) == []
    module = variant(lambda nb: nb.metadata.llmbook.modules.update({"llmbook/profile.py": "0" * 64}))
    assert any("llmbook/profile.py changed" in p for p in execute.check_notebook(module))
    smoke = variant(lambda nb: nb.metadata.llmbook.update(profile="smoke"))
    assert any("not 'full'" in p for p in execute.check_notebook(smoke))
    slow = variant(lambda nb: nb.metadata.llmbook.update(wall_time_s=execute.HARD_CAP_S + 1))
    assert any("over the" in p for p in execute.check_notebook(slow))
    unstamped = variant(lambda nb: nb.metadata.pop("llmbook"))
    assert "no execution stamp" in execute.check_notebook(unstamped)[0]


def test_smoke_run_never_overwrites_the_notebook(executed, tmp_path):
    before = executed.read_text()
    assert execute.main(["--profile", "smoke", str(executed)]) == 0
    assert executed.read_text() == before
    assert execute.main(["--profile", "smoke", "--output-dir", str(tmp_path / "out"), str(executed)]) == 0
    assert "smoke 42" in (tmp_path / "out" / "tiny.ipynb").read_text()


def test_failing_notebook_is_reported_and_left_alone(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LLMBOOK_FAILED_DIR", str(tmp_path / "failed"))
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('before')"), nbformat.v4.new_code_cell("raise ValueError('boom')")]
    path = tmp_path / "bad.ipynb"
    nbformat.write(nb, path)
    before = path.read_text()
    assert execute.main([str(path)]) == 1
    assert path.read_text() == before
    # the outputs up to the failure are kept elsewhere, unstamped and without the probe cell
    kept = tmp_path / "failed" / "bad.ipynb"
    assert str(kept) in capsys.readouterr().err
    failed = nbformat.read(kept, as_version=4)
    assert failed.cells[0].outputs[0]["text"] == "before\n" and len(failed.cells) == 2
    assert "llmbook" not in failed.metadata


def test_unknown_profile_is_refused(executed, capsys):
    assert execute.main(["--profile", "fast", str(executed)]) == 2
    assert "unknown profile 'fast'" in capsys.readouterr().err


def test_widget_outputs_become_their_final_text_bar():
    nb = nbformat.v4.new_notebook()
    view = {"model_id": "box", "version_major": 2, "version_minor": 0}
    nb.cells = [nbformat.v4.new_code_cell("", outputs=[nbformat.v4.new_output(
        "display_data", data={"application/vnd.jupyter.widget-view+json": view, "text/plain": "HBox()"})])]
    state = {"box": {"state": {"children": ["IPY_MODEL_l", "IPY_MODEL_b", "IPY_MODEL_r"]}},
             "l": {"state": {"value": "train: 100%"}}, "b": {"state": {"value": 5, "max": 5}},
             "r": {"state": {"value": " 5/5 [00:01&lt;00:00,  4.9it/s]"}}}
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": state}}
    assert execute.widgets_to_text(nb) == 1
    assert nb.cells[0].outputs[0]["text"] == "train: 100%|██████████| 5/5 [00:01<00:00,  4.9it/s]\n"
    assert "widgets" not in nb.metadata


@pytest.mark.parametrize("flags, expected", [
    ("fpu sse2 avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile", "native (AMX)"),
    ("fpu sse2 avx2 avx512f avx512_bf16", "native (AVX-512 BF16)"),
    ("fpu sse2 avx2 fma", "emulated"),
])
def test_cpu_bf16_support_reads_the_flags(flags, expected):
    cpuinfo = f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n"
    assert execute.cpu_bf16_support(cpuinfo) == expected


def test_cpu_bf16_support_arm_and_unknown():
    assert execute.cpu_bf16_support("Features\t: fp asimd bf16 i8mm\n") == "native (Arm BF16)"
    assert execute.cpu_bf16_support("Features\t: fp asimd\n") == "emulated"
    assert execute.cpu_bf16_support("no flags here\n") == "unknown"
