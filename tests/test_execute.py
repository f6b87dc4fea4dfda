"""The executor stamps a full run and the freshness check catches every kind of staleness."""

import os
from pathlib import Path

import nbformat
import pytest

from llmbook import execute, hardware

# A worker started the one way a notebook may: `python -m llmbook.<module>`. The kernel itself
# never imports llmbook.hardware here, so only the out-of-kernel scan can put it in the stamp.
WORKER_CELL = 'import subprocess, sys\nsubprocess.run([sys.executable, "-m", "llmbook.hardware"], check=True)'


@pytest.fixture(scope="module")
def executed(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nb")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# tiny"),
                nbformat.v4.new_code_cell("from llmbook import profile\nprint(profile.current(), 6 * 7)"),
                nbformat.v4.new_code_cell(f"import os\nprint(os.environ.get({hardware.PRECISION_ENV!r}))"),
                nbformat.v4.new_code_cell(WORKER_CELL)]
    path = folder / "tiny.ipynb"
    nbformat.write(nb, path)
    with pytest.MonkeyPatch.context() as env:
        env.setenv(hardware.PRECISION_ENV, "auto")  # a reader's setting: the stamped run ignores it
        assert execute.main([str(path)]) == 0
        assert os.environ[hardware.PRECISION_ENV] == "auto", "the executor must restore the variable"
    return path


def test_full_run_writes_outputs_and_a_complete_stamp(executed):
    nb = nbformat.read(executed, as_version=4)
    assert nb.cells[1].outputs[0]["text"] == "full 42\n"
    stamp = nb.metadata["llmbook"]
    assert stamp["profile"] == "full" and stamp["code_hash"] == execute.code_hash(nb)
    assert "llmbook/profile.py" in stamp["modules"] and "llmbook/data.py" not in stamp["modules"]
    assert set(stamp) >= {"wall_time_s", "versions", "device", "executed_at"}
    if stamp["device"].startswith("cpu"):  # the run time depends on it: the stamp says it
        assert f"; bf16 {hardware.cpu_bf16_support()}" in stamp["device"]
    assert len(nb.cells) == 4  # the module probe cell is removed again
    assert execute.check_notebook(executed) == []


def test_full_run_is_in_fp32_and_stamped_so(executed):
    nb = nbformat.read(executed, as_version=4)
    assert nb.cells[2].outputs[0]["text"] == "fp32\n"  # what the kernel saw, though the caller had "auto"
    assert nb.metadata["llmbook"]["precision"] == "fp32"


def test_stamp_hashes_the_modules_run_outside_the_kernel(executed):
    modules = nbformat.read(executed, as_version=4).metadata["llmbook"]["modules"]
    assert modules["llmbook/hardware.py"] == execute.file_hash(execute.PACKAGE_DIR / "hardware.py")


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
    for precision in ("auto", None):
        other = variant(lambda nb, p=precision: nb.metadata.llmbook.update(precision=p))
        assert any("not fp32" in p for p in execute.check_notebook(other)), precision
    unrecorded = variant(lambda nb: nb.metadata.llmbook.pop("precision"))
    assert any("not fp32" in p for p in execute.check_notebook(unrecorded))
    worker = variant(lambda nb: nb.metadata.llmbook.modules.update({"llmbook/hardware.py": "0" * 64}))
    assert any("llmbook/hardware.py changed" in p for p in execute.check_notebook(worker))
    unlisted = variant(lambda nb: nb.metadata.llmbook.modules.pop("llmbook/hardware.py"))
    assert any("runs llmbook/hardware.py outside the kernel" in p for p in execute.check_notebook(unlisted))
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


# --------------------------------------------------------------------------- code run outside the kernel


def _notebook(*sources: str) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(s) for s in sources]
    return nb


def test_llmbook_imports_reads_every_import_form():
    source = """
import os
import llmbook.data
from llmbook import models as m, __version__
from llmbook.profile import pick
from . import runtime
from .metrics import load
import numpy.llmbook

def later():
    from llmbook import assets
"""
    found = execute.llmbook_imports(source, package="llmbook")
    assert {"llmbook", "llmbook.data", "llmbook.models", "llmbook.profile", "llmbook.runtime",
            "llmbook.metrics", "llmbook.assets"} <= found
    assert not any(n.startswith(("os", "numpy")) for n in found)
    assert execute.llmbook_imports("from .. import data", package="llmbook.metrics") >= {"llmbook.data"}
    assert execute.llmbook_imports("import os\nfrom numpy import llmbook") == set()


def test_out_of_kernel_modules_follow_imports_transitively():
    listed = _notebook('import subprocess, sys\nsubprocess.Popen([sys.executable, "-m", "llmbook.execute", "--check"])')
    found = execute.out_of_kernel_modules(listed)
    # llmbook.execute imports llmbook.profile and llmbook.hardware; running it imports the package too
    assert {"llmbook", "llmbook.execute", "llmbook.profile", "llmbook.hardware"} <= found
    assert "llmbook.data" not in found and "llmbook.gpt" not in found
    shell = _notebook("x = 1", "!python -m llmbook.execute --check > log.txt 2>&1 &")
    assert execute.out_of_kernel_modules(shell) == found
    # `python -m llmbook` runs the package's __main__, which starts llmbook.assets
    assert {"llmbook.__main__", "llmbook.assets"} <= execute.out_of_kernel_modules(_notebook("!python -m llmbook list"))


def test_out_of_kernel_modules_ignore_everything_else():
    nb = _notebook('import subprocess, sys\nsubprocess.run([sys.executable, "-m", "pip", "install", "x"])',
                   "from llmbook import data\nprint(data)")
    nb.cells.append(nbformat.v4.new_markdown_cell("run `python -m llmbook.gpt` yourself"))
    assert execute.out_of_kernel_modules(nb) == set()


def test_a_worker_module_without_a_file_cannot_be_stamped():
    nb = _notebook('!python -m llmbook.no_such_worker')
    assert "llmbook.no_such_worker" in execute.out_of_kernel_modules(nb)
    probe = {"modules": {"llmbook": None}, "wall_time_s": 1.0, "versions": {}, "device": "cuda", "precision": "fp32"}
    with pytest.raises(execute.StampError, match="no_such_worker"):
        execute.make_stamp(nb, probe, "full")


def test_make_stamp_adds_out_of_kernel_modules_to_the_kernel_ones():
    nb = _notebook('!python -m llmbook.hardware')
    probe = {"modules": {"llmbook": None, "llmbook.profile": None}, "wall_time_s": 1.0, "versions": {},
             "device": "cuda", "precision": "fp32"}
    stamp = execute.make_stamp(nb, probe, "full")
    assert set(stamp["modules"]) == {"llmbook/__init__.py", "llmbook/profile.py", "llmbook/hardware.py"}
    assert stamp["precision"] == "fp32"


# The first code cell of every chapter, as committed: it must pass.
COLAB_CELL = """# On Colab only: install the book's helper package (Colab's own torch is kept) and fetch the assets.
import sys

if "google.colab" in sys.modules:
    import subprocess

    REPO_URL = "https://github.com/runnable-llm-book/llm-book"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"llmbook @ git+{REPO_URL}"], check=True)
    subprocess.run([sys.executable, "-m", "llmbook.assets", "fetch"], check=True)
"""

ALLOWED_CELLS = {
    "colab install cell": COLAB_CELL,
    "colab cell with !pip": 'import sys\nif "google.colab" in sys.modules:\n    !pip install -q llmbook\n',
    "worker by list": 'import subprocess, sys\nsubprocess.run([sys.executable, "-m", "llmbook.serve", "--port", "8000"])',
    "worker by named list": 'import subprocess, sys\ncmd = [sys.executable, "-m", "llmbook.serve"]\nsubprocess.Popen(cmd)',
    "server in the background": "!python -m llmbook.serve --port 8000 > serve.log 2>&1 &",
    "python3 and sys.executable": "!python3 -m llmbook.x\n!{sys.executable} -m llmbook.y",
    "os.system worker": 'import os\nos.system("python -m llmbook.serve")',
    "pip and nvidia-smi": "!pip install -q seqeval\n%pip install x\n!nvidia-smi",
    "timed python": "%time total = sum(range(10))",
    "plain code": "import subprocess\nx = subprocess.DEVNULL\nprint('python train.py')",
}

REFUSED_CELLS = {
    "python script": "!python train.py",
    "python3 script": "!python3 tools/make_data.py --out x",
    "python -c": '!python -c "print(1)"',
    "%run": "%run helper.py",
    "%%bash": "%%bash\npip install x\n",
    "%%script": "%%script bash\necho hi\n",
    "!bash": "!bash run.sh",
    "!sh": "!sh run.sh",
    "other program": "!wget https://example.com/data.zip",
    "script after a worker": "!python -m llmbook.serve && python post.py",
    "subprocess script": 'import subprocess, sys\nsubprocess.run([sys.executable, "train.py"])',
    "Popen script": 'from subprocess import Popen\nPopen(["python", "serve.py"])',
    "aliased subprocess": 'import subprocess as sp\nsp.check_call(["bash", "x.sh"])',
    "os.system script": 'import os\nos.system("python train.py")',
    "shell=True script": 'import subprocess\nsubprocess.run("python train.py", shell=True)',
    "pip outside the Colab guard": 'import subprocess, sys\nsubprocess.run([sys.executable, "-m", "pip", "install", "x"])',
    "pip under a wrong guard": 'import subprocess, sys\nif "google.colab" not in sys.modules:\n'
                               '    subprocess.run([sys.executable, "-m", "pip", "install", "x"])',
    "command not written out": "import subprocess\nsubprocess.run(make_command())",
    "os.exec": 'import os\nos.execv("/bin/sh", ["sh"])',
    "script inside %%capture": "%%capture\n!python x.py\n",
}


@pytest.mark.parametrize("name", ALLOWED_CELLS)
def test_detector_allows_llmbook_workers_pip_and_the_colab_cell(name):
    assert execute.disallowed_commands(ALLOWED_CELLS[name]) == []


@pytest.mark.parametrize("name", REFUSED_CELLS)
def test_detector_refuses_every_other_script(name):
    assert execute.disallowed_commands(REFUSED_CELLS[name]), f"{name} should be refused"
