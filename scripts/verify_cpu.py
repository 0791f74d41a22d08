"""Re-run notebooks in the `cpu` profile and compare each metric with its committed record.

    python scripts/verify_cpu.py notebooks/05_*.ipynb                  # run, compare; exit 1 on any FAIL
    python scripts/verify_cpu.py notebooks/03_vae.ipynb --tolerance 0.05
    python scripts/verify_cpu.py --stale                               # list stale records; runs nothing

Run it before landing a change that can move results (course_lib code or weights, a notebook's code),
on the notebooks that change touches; `--stale` names the records that predate a change to the code
their notebook runs (the README marks them †). The `cpu` profile has the trained checks on
(`trained_checks=True`), so the notebook's assertions on trained models run too: a failed one fails.

Nothing committed is touched: the notebook runs in memory and writes its record to a temporary folder,
kept with the executed notebook for a look at what moved. A passing run does not refresh the record;
`python scripts/run_notebook.py <notebook> --profile cpu` does (outputs and record together).

Tolerance, by default 0.1 (10%) of the recorded value. On one machine with the same thread count the
runs are deterministic and match exactly; another thread count, BLAS build or torch version sums floats
in another order, and over thousands of training steps that moves trained-model metrics (FCD, losses,
accuracies) by a few percent. 10% lets that through and still catches a change of what is computed. A
notebook that trains for a wall-time budget (10_gpt, 13_peft_lora_adapters) does as many steps as the
machine allows, so it moves with the machine's speed. Timing metrics (names ending in `_s`, `_per_s`, `ms_per_step`,
`speedup`, `step_time`) and the wall time are reported, not judged. A recorded metric missing from the
re-run fails; a new one is reported. A recorded 0 passes only an exact 0, unless `--atol` allows slack.
"""
from __future__ import annotations

import argparse
import json
import math
import re
import sys
import tempfile
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]
from course_lib.results import load_results  # noqa: E402
from run_notebook import execute  # noqa: E402
from stale_records import short_list, stale_records  # noqa: E402

TOLERANCE = 0.1
TIMING = re.compile(r"(_s|ms_per_step|speedup|step_time)$")  # `_per_s` ends in `_s` too


def compare(recorded: dict, measured: dict, tolerance: float = TOLERANCE, atol: float = 0.0) -> list[tuple]:
    """(metric, recorded, re-measured, relative difference, verdict) for each metric of two records,
    verdict PASS / FAIL / timing (not judged) / new (only in the re-run); the wall time comes first."""
    old = {"wall_time_s": recorded["wall_time_s"], **recorded["metrics"]}
    new = {"wall_time_s": measured["wall_time_s"], **measured["metrics"]}
    rows = []
    for name in list(old) + [n for n in new if n not in old]:
        a, b = old.get(name), new.get(name)
        if a is None or b is None:
            rows.append((name, a, b, None, "new" if a is None else "FAIL"))  # a metric that vanished fails
            continue
        diff = abs(b - a)
        rel = diff / abs(a) if a else (0.0 if diff == 0 else math.inf)
        if TIMING.search(name):
            verdict = "timing"
        else:
            verdict = "PASS" if diff <= tolerance * abs(a) or diff <= atol else "FAIL"
        rows.append((name, a, b, rel, verdict))
    return rows


def report(rows: list[tuple]) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.4g}"  # noqa: E731
    width = max(len(r[0]) for r in rows)
    lines = [f"{'metric':<{width}}  {'recorded':>10}  {'re-run':>10}  {'rel. diff':>9}  verdict"]
    for name, a, b, rel, verdict in rows:
        rel_text = "-" if rel is None else f"{100 * rel:.2f}%"
        lines.append(f"{name:<{width}}  {fmt(a):>10}  {fmt(b):>10}  {rel_text:>9}  {verdict}")
    return "\n".join(lines)


def verify(path: Path, tolerance: float, atol: float, timeout: int) -> bool:
    """Re-run one notebook in cpu, print the comparison with its record; True when nothing fails."""
    record = ROOT / "results" / path.stem / "cpu.json"
    if not record.is_file():
        print(f"{path.name}: no record {record.relative_to(ROOT)} to compare with; "
              f"make one with `python scripts/run_notebook.py {path} --profile cpu`.")
        return False
    recorded = json.loads(record.read_text(encoding="utf-8"))
    out = Path(tempfile.mkdtemp(prefix=f"verify-{path.stem}-"))  # the re-run's record and notebook
    print(f"{path.name}: running in cpu (record and executed notebook go to {out}) ...", flush=True)
    try:
        nb, _ = execute(path, "cpu", timeout, results=out)
    except Exception as err:  # a cell raised: a trained check failed, or the code broke
        print(f"{path.name}: FAIL, the run stopped: {err}")
        return False
    nbformat.write(nb, out / path.name)
    measured = json.loads((out / path.stem / "cpu.json").read_text(encoding="utf-8"))
    rows = compare(recorded, measured, tolerance, atol)
    print(f"recorded at {recorded['commit']} on {recorded['device']}; re-run on {measured['device']}")
    print(report(rows))
    failed = [r[0] for r in rows if r[4] == "FAIL"]
    print(f"{path.name}: " + (f"FAIL, {len(failed)} metric(s) off by more than {tolerance:.0%}: {', '.join(failed)}"
                              if failed else f"PASS within {tolerance:.0%}") + "\n")
    return not failed


def list_stale(paths: list[Path]) -> None:
    records = [r for r in load_results(ROOT / "results") if r["profile"] != "smoke"]
    if paths:
        records = [r for r in records if r["notebook"] in {p.stem for p in paths}]
    stale = stale_records(records)
    for r in records:
        if (r["notebook"], r["profile"]) in stale:
            print(f"{r['notebook']} ({r['profile']}, {r['commit']}): {short_list(stale[r['notebook'], r['profile']])}")
    print(f"{len(stale)} of {len(records)} records predate a change to the code their notebook runs.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", type=Path)
    parser.add_argument("--tolerance", type=float, default=TOLERANCE, help="relative, default %(default)s")
    parser.add_argument("--atol", type=float, default=0.0, help="absolute slack, for metrics near 0")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell")
    parser.add_argument("--stale", action="store_true", help="list the stale records (of the notebooks given, "
                                                             "else all) and run nothing")
    args = parser.parse_args(argv)
    if args.stale:
        list_stale(args.notebooks)
        return 0
    if not args.notebooks:
        parser.error("name the notebooks to verify, e.g. notebooks/03_vae.ipynb (or --stale)")
    results = [verify(p, args.tolerance, args.atol, args.timeout) for p in args.notebooks]
    print(f"{sum(results)} of {len(results)} notebooks pass.")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
