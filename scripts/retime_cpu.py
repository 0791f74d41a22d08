"""Re-time notebooks in the cpu profile on this machine, for the time model's check; nothing else is kept.

    python scripts/retime_cpu.py notebooks/09_attention_transformer.ipynb notebooks/02_autoencoders.ipynb
    python scripts/time_model.py --retimed results/time_model_retimed.json

Each notebook runs top to bottom in a fresh kernel, in memory: its outputs are dropped, its results record
goes to a temporary folder (COURSE_RESULTS), and only the wall time, kernel start included, is merged into
results/time_model_retimed.json ({notebook: {"wall_s": seconds}}). Use it when the committed cpu records
come from another machine than the one that ran scripts/time_model_bench.py.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "results" / "time_model_retimed.json"


def main(paths: list[str]) -> int:
    os.environ["COURSE_PROFILE"] = "cpu"
    os.environ["COURSE_RESULTS"] = tempfile.mkdtemp(prefix="retime_")
    for path in map(Path, paths):
        nb = nbformat.read(path, as_version=4)
        start = time.perf_counter()
        where = {"metadata": {"path": str(path.parent)}}
        NotebookClient(nb, timeout=1800, kernel_name="python3", resources=where).execute()
        seconds = round(time.perf_counter() - start, 1)
        print(f"{path.stem}: {seconds} s", flush=True)
        done = json.loads(OUT.read_text()) if OUT.is_file() else {}
        done[path.stem] = {"wall_s": seconds}
        tmp = OUT.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(done, indent=1, sort_keys=True) + "\n")
        tmp.replace(OUT)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
