"""Re-time notebooks in the cpu profile on this machine, for the time model's check; nothing else is kept.

    python scripts/retime_cpu.py notebooks/09_attention_transformer.ipynb notebooks/02_autoencoders.ipynb
    python scripts/time_model.py --retimed results/time_model_retimed.json

Each notebook runs top to bottom in a fresh kernel, in memory (``run_notebook.execute``): its outputs are
dropped, its results record goes to a temporary folder (COURSE_RESULTS), and only the wall time, kernel
start included, is merged into results/time_model_retimed.json ({notebook: {"wall_s": seconds}}). Use it
when the committed cpu records come from another machine than the one that ran scripts/time_model_bench.py.
"""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from course_lib.files import atomic_write  # noqa: E402
from run_notebook import execute  # noqa: E402  (scripts/ is on the path when this script runs)

OUT = ROOT / "results" / "time_model_retimed.json"


def main(paths: list[str]) -> int:
    results = Path(tempfile.mkdtemp(prefix="retime_"))
    for path in map(Path, paths):
        _, seconds = execute(path, "cpu", timeout=1800, results=results)   # the notebook file is left as it is
        seconds = round(seconds, 1)
        print(f"{path.stem}: {seconds} s", flush=True)
        done = json.loads(OUT.read_text()) if OUT.is_file() else {}
        done[path.stem] = {"wall_s": seconds}
        with atomic_write(OUT, "w", encoding="utf-8") as f:
            f.write(json.dumps(done, indent=1, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
