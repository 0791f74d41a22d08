"""Which results records predate a change to the course_lib code their notebook runs.

Each record notes ``commit``, the git HEAD when its notebook ran. A record is stale when a course_lib
file that its notebook executes differs between that commit and the working tree:

- the files: what the notebook's code imports (``import course_lib``, ``from course_lib.x import y``,
  ``course_lib.x.y`` and strings such as ``"course_lib.distributed"`` for ``python -m``), every package
  ``__init__.py`` on the way, and, transitively, what those modules import (relative imports included);
  plus the weights that ``fcd`` and ``zoo`` load (``READS``);
- "differs": for Python files, the parsed code (``ast.dump``) with docstrings removed, so comments,
  docstrings and layout do not count; other files byte for byte; a file absent at the commit counts.

    stale_modules("03_vae")  # e.g. ["course_lib/train.py", "course_lib/vae.py"]; [] when fresh

A record made from a working tree with uncommitted library changes notes the commit before them, so it
shows as stale: commit library changes first, then re-run the notebooks that import them.
"""
from __future__ import annotations

import ast
import functools
import json
import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "course_lib"
# Files a module reads at run time (globs relative to course_lib/): new weights move results like new code.
READS = {"course_lib/fcd.py": ["weights/fcd_*"], "course_lib/zoo.py": ["weights/ref_*", "weights/references.json"]}
_DOTTED = re.compile(rf"{PACKAGE}(\.\w+)+")
_FROM_IMPORT = re.compile(rf"from ({PACKAGE}[\w.]*) import \(?([\w\s,]+)")


# ---------------------------------------------------------------- what a notebook runs

def _course_names(tree: ast.AST, package: str | None = None) -> list[str]:
    """Dotted course_lib names a piece of code imports or mentions; ``package`` resolves relative imports."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level and package:  # from ..x import y inside course_lib: level 2 is the package's parent
                base = package.rsplit(".", node.level - 1)[0]
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names += [module] + [f"{module}.{alias.name}" for alias in node.names]  # y may be a submodule
        elif isinstance(node, ast.Attribute):  # course_lib.x.y(...) after `import course_lib`
            parts = []
            while isinstance(node, ast.Attribute):
                parts, node = [node.attr] + parts, node.value
            if isinstance(node, ast.Name):
                names.append(".".join([node.id] + parts))
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and _DOTTED.fullmatch(node.value):
            names.append(node.value)  # "-m", "course_lib.distributed"; mock.patch("course_lib.x.f")
    return [n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")]


def notebook_names(path: Path) -> list[str]:
    """course_lib names used by the notebook's code cells."""
    names = []
    for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:  # plain JSON: no schema check, fast
        source = "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]
        if cell["cell_type"] != "code" or PACKAGE not in source:
            continue
        try:
            names += _course_names(_parse_cell(source))
        except SyntaxError:  # a cell being edited: read the names from its text instead
            for module, imported in _FROM_IMPORT.findall(source):
                names += [module] + [f"{module}.{n}" for n in re.findall(r"\w+", imported)]
            names += re.findall(rf"\b{PACKAGE}(?:\.\w+)*", source)
    return names


def _parse_cell(source: str) -> ast.AST:
    try:
        return ast.parse(source)
    except SyntaxError:  # IPython syntax (%pip, !ls): turned into Python first
        from IPython.core.inputtransformer2 import TransformerManager

        return ast.parse(TransformerManager().transform_cell(source))


def module_file(name: str, root: Path = ROOT) -> Path | None:
    """course_lib/x.py or course_lib/x/__init__.py for ``course_lib.x``; None for a name inside a module."""
    base = root.joinpath(*name.split("."))
    return next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)


def executed_files(names: list[str], root: Path = ROOT) -> list[str]:
    """course_lib files (paths relative to root) that importing ``names`` executes, transitively."""
    todo, seen, files = list(names), set(), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # importing a.b.c runs a and a.b first
        path = module_file(name, root)
        if path is None:
            continue
        rel = path.relative_to(root).as_posix()
        files.add(rel)
        for pattern in READS.get(rel, []):
            files.update(p.relative_to(root).as_posix() for p in (root / PACKAGE).glob(pattern) if p.is_file())
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        todo += _module_names(path, package, path.stat().st_mtime_ns)
    return sorted(files)


@functools.cache
def _module_names(path: Path, package: str, mtime_ns: int) -> list[str]:
    """What a course_lib module imports; cached until the file changes."""
    return _course_names(ast.parse(path.read_bytes()), package)


# ---------------------------------------------------------------- what changed since a commit

def git(root: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise RuntimeError("git is not installed: the records' staleness is read from the git history. "
                           "Install git (e.g. `apt-get install git`).") from None
    if out.returncode:
        raise RuntimeError(f"`git {' '.join(args)}` failed in {root}: {out.stderr.strip()}")
    return out.stdout


def code(source: str | bytes) -> str:
    """The parsed code without docstrings (any string-only statement): what runs, not how it reads."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list):
            node.body = [s for s in body if not (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)
                                                 and isinstance(s.value.value, str))]
    return ast.dump(tree)  # no line numbers: comments and layout do not count


@functools.cache
def _blobs_at(root: Path, commit: str) -> dict[str, str]:
    """{path: blob id} of course_lib/ at ``commit``."""
    try:
        git(root, "rev-parse", "--git-dir")
    except RuntimeError:
        raise RuntimeError(f"{root} is not a git checkout, and the records' staleness is read from the git "
                           "history: work in a clone of the repository (`git clone`).") from None
    try:
        git(root, "rev-parse", "--verify", "--quiet", f"{commit}^{{commit}}")
    except RuntimeError:
        raise RuntimeError(f"Commit {commit!r} is not in the git history of {root}: fetch the full history "
                           "(`git fetch --unshallow`), or re-run the notebook for a record of this checkout.") from None
    lines = git(root, "ls-tree", "-r", "--full-tree", commit, "--", PACKAGE).splitlines()
    return {line.split("\t", 1)[1]: line.split()[2] for line in lines}  # "<mode> blob <id>\t<path>"


@functools.cache
def _code_of_blob(root: Path, blob: str) -> str | None:
    try:
        return code(git(root, "cat-file", "blob", blob))
    except SyntaxError:
        return None


def _code_now(path: Path) -> str:
    return _code_of_file(path, path.stat().st_mtime_ns)


@functools.cache
def _code_of_file(path: Path, mtime_ns: int) -> str:
    return code(path.read_bytes())


def changed_since(commit: str, files: list[str], root: Path = ROOT) -> list[str]:
    """The ``files`` whose code (or bytes, for non-Python files) differs between ``commit`` and the working tree."""
    if not files:
        return []
    then = _blobs_at(root, commit)
    now = dict(zip(files, git(root, "hash-object", "--", *files).split()))  # blob ids of the working files
    changed = []
    for f in files:
        if then.get(f) == now[f]:
            continue  # same bytes
        if f not in then or not f.endswith(".py") or _code_of_blob(root, then[f]) != _code_now(root / f):
            changed.append(f)
    return changed


def stale_modules(stem: str, commit: str | None = None, root: Path = ROOT) -> list[str]:
    """course_lib files the notebook executes whose code changed since ``commit`` (default: that of its cpu record)."""
    if commit is None:
        commit = json.loads((root / "results" / stem / "cpu.json").read_text(encoding="utf-8"))["commit"]
    files = executed_files(notebook_names(root / "notebooks" / f"{stem}.ipynb"), root)
    return changed_since(commit, files, root)


def stale_records(records: list[dict], root: Path = ROOT) -> dict[tuple[str, str], list[str]]:
    """{(notebook, profile): changed files} for every record that predates a change to its notebook's code."""
    stale = {}
    for r in records:
        if r["commit"] == "unknown":
            raise RuntimeError(f"results/{r['notebook']}/{r['profile']}.json was made outside a git checkout "
                               "(commit 'unknown'): re-run the notebook in a clone with scripts/run_notebook.py.")
        changed = stale_modules(r["notebook"], r["commit"], root)
        if changed:
            stale[(r["notebook"], r["profile"])] = changed
    return stale


def short_list(files: list[str]) -> str:
    """``course_lib/train.py, vae.py``: the package named once."""
    return ", ".join(f if i == 0 else f.removeprefix(PACKAGE + "/") for i, f in enumerate(files))
