"""Execute notebooks in one profile; store their outputs and results records.

    python scripts/run_notebook.py notebooks/00_orientation.ipynb --profile cpu
    python scripts/run_notebook.py notebooks/*.ipynb --profile gpu --no-save

Each notebook runs top to bottom in a fresh kernel with ``COURSE_PROFILE`` set; its last
cell writes ``results/<stem>/<profile>.json``. With ``--save`` (the default for the ``cpu``
profile) the executed notebook, outputs included, replaces the committed file atomically,
so readers see the figures of that same run. Afterwards the README's tables are rebuilt.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from course_lib.profiles import PROFILES  # noqa: E402


def run(path: Path, profile: str, save: bool, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    os.environ["COURSE_PROFILE"] = profile
    os.environ.pop("COURSE_RESULTS", None)  # records go to the committed results/ folder
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    if save:
        tmp = path.with_suffix(".ipynb.tmp")
        nbformat.write(nb, tmp)
        tmp.replace(path)
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
