"""Execute notebooks in one profile; store their outputs and results records.

    python scripts/run_notebook.py notebooks/00_orientation.ipynb --profile cpu
    python scripts/run_notebook.py notebooks/*.ipynb --profile gpu --no-save

Each notebook runs top to bottom in a fresh kernel with ``COURSE_PROFILE`` set; its last
cell writes ``results/<stem>/<profile>.json`` (``smoke`` records go to a temporary folder:
they are never committed). The measured wall time, kernel start included, is written into
the notebook's runtime table. With ``--save`` (the default for the ``cpu`` profile) the
executed notebook, outputs included, replaces the committed file atomically, so readers see
the figures of that same run. Afterwards the README's tables are rebuilt.
"""
from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from course_lib.profiles import PROFILES  # noqa: E402
from course_lib.results import format_seconds  # noqa: E402


def set_runtime(nb, profile: str, seconds: float) -> None:
    """Replace the last column of the ``| `profile` | ... |`` row in the first cell's runtime table."""
    row = re.compile(rf"^(\| `{profile}` \|.*\| )[^|]*(\|)$", re.MULTILINE)
    first = nb.cells[0]
    if not row.search(first.source):
        raise ValueError(f"The first cell has no runtime row for `{profile}`.")
    first.source = row.sub(lambda m: f"{m.group(1)}{format_seconds(seconds)} {m.group(2)}", first.source)


def write_atomically(nb, path: Path) -> None:
    tmp = path.with_suffix(".ipynb.tmp")
    nbformat.write(nb, tmp)
    tmp.replace(path)


def execute(path: Path, profile: str, timeout: int, results: Path | None = None):
    """Run the notebook top to bottom in a fresh kernel, in memory; return it executed and its wall time.
    Its record goes to ``results`` (default: the committed results/ folder); the file is left as it is."""
    nb = nbformat.read(path, as_version=4)
    os.environ["COURSE_PROFILE"] = profile
    if results:
        os.environ["COURSE_RESULTS"] = str(results)
    else:
        os.environ.pop("COURSE_RESULTS", None)  # records go to the committed results/ folder
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - start


def run(path: Path, profile: str, save: bool, timeout: int) -> float:
    results = Path(tempfile.mkdtemp(prefix="course-results-")) if profile == "smoke" else None  # never committed
    nb, seconds = execute(path, profile, timeout, results)
    target = nb if save else nbformat.read(path, as_version=4)
    set_runtime(target, profile, seconds)
    write_atomically(target, path)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--profile", required=True, choices=PROFILES)
    parser.add_argument("--save", action=argparse.BooleanOptionalAction, default=None,
                        help="store outputs in the notebook (default: only for the cpu profile)")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    args = parser.parse_args(argv)
    save = args.profile == "cpu" if args.save is None else args.save
    for path in args.notebooks:
        seconds = run(path, args.profile, save, args.timeout)
        print(f"{path.name}: {seconds:.1f} s in profile {args.profile}" + (" (outputs saved)" if save else ""))
    from update_readme import main as update_readme

    return update_readme([])


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    sys.exit(main())
