"""Rebuild the README's syllabus and results tables from the records in results/.

    python scripts/update_readme.py           # rewrite README.md between its markers
    python scripts/update_readme.py --check   # exit 1 if README.md is out of date

Only measured numbers appear: a profile without a record shows "not yet measured". A record made
before a change to the course_lib code its notebook runs (scripts/stale_records.py) is marked † in
every table that quotes it, with the changed files listed under the results table.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from course_lib.results import format_seconds, load_results  # noqa: E402
from stale_records import short_list, stale_records  # noqa: E402

README = ROOT / "README.md"
TIME_MODEL = ROOT / "results" / "time_model.json"  # scripts/time_model.py: estimated minutes per device

# (notebook stem, what you learn). Notebooks not yet in notebooks/ are listed as planned.
SYLLABUS = [
    ("00_orientation", "Tour of the course and course_lib; a first generative model: "
                       "a Gaussian mixture fitted by EM, sampled and checked"),
    ("01_generative_modelling_basics", "Maximum likelihood, forward vs reverse KL, sampling, held-out log-likelihood"),
    ("02_autoencoders", "Autoencoders and denoising autoencoders; why a plain AE is not a generator"),
    ("03_vae", "ELBO, reparameterization, IWAE bound, beta-VAE, posterior collapse"),
    ("04_gan_dcgan", "The minimax game, non-saturating loss, mode collapse, DCGAN"),
    ("05_conditional_gan_wgan", "Conditional GANs, WGAN and the gradient penalty"),
    ("06_cyclegan", "Unpaired image-to-image translation with cycle consistency"),
    ("07_ddpm", "Diffusion: forward process, noise schedules, epsilon-prediction, a small UNet"),
    ("08_ddim_guidance", "DDIM fast sampling, classifier-free guidance, spoken-digit diffusion"),
    ("08b_latent_text_to_image", "Latent diffusion with a frozen text encoder and cross-attention: "
                                 "text-to-image in miniature"),
    ("09_attention_transformer", "Scaled dot-product attention, masks, positional encodings, the Transformer block"),
    ("10_gpt", "A GPT language model on Shakespeare and Tang poems; BPE, sampling, KV cache"),
    ("11_seq2seq_translation", "Encoder-decoder translation on Multi30k, beam search, BLEU"),
    ("12_ner_finetuning", "Fine-tuning a pretrained encoder for named-entity recognition"),
    ("13_peft_lora_adapters", "LoRA and adapters on scarce vertical data"),
    ("14_evaluating_generative_models", "FCD, KID, precision/recall, memorization, CAS"),
    ("15_capstone_synthetic_data", "Capstone, gold mine or bubble: can synthetic data rescue "
                                   "a data-scarce domain, and what does it cost?"),
    ("16_scaling_out", "Appendix: data parallelism with torchrun and DDP, gradient accumulation, "
                       "mixed precision, when to shard (FSDP)"),
]

# Sections that an instructor in a CPU-only room can present from the committed outputs instead of running.
SHOW_FROM_OUTPUTS = {
    "05_conditional_gan_wgan": "the Fashion-MNIST prompt section",
    "06_cyclegan": "section 6 (training without the cycle loss)",
    "08_ddim_guidance": "the audio diffusion model",
    "10_gpt": "the nanoGPT baseline and the Tang poems",
    "11_seq2seq_translation": "the ablation (section 9)",
    "13_peft_lora_adapters": "the equal-time run and section 8 (the GPT example)",
}
RUN_AHEAD_S = 60  # a cell slower than this is started ahead (or during the preceding explanation)
STALE = "†"  # marks a record made before a change to the code its notebook runs
SEE_RESULTS = f"{STALE} recorded before a change to the course_lib code its notebook runs: see [Results](#results)."
STALE_NOTE = (f"{STALE} Recorded before a change to the code its notebook runs (docstrings and comments aside), so "
              "the numbers may have moved: `scripts/verify_cpu.py` re-runs the notebook in `cpu` and compares each "
              "metric with the record; `scripts/run_notebook.py` refreshes the record and the stored outputs.")

KEYS = ("syllabus", "results", "workshop", "references")
BEGIN = {key: f"<!-- {key}:begin -->" for key in KEYS}
END = {key: f"<!-- {key}:end -->" for key in KEYS}


def timed(seconds: float | None, stale: bool, exists: bool = True, estimate_min: float | None = None) -> str:
    """A record's wall time for a table cell, marked when the record is stale; without a record, the time
    model's estimate if there is one (``estimate_min``, minutes on a T4), marked as such."""
    if seconds is None:
        if estimate_min is not None and exists:
            return f"~{max(1, round(estimate_min))} min on a T4, estimated"
        return "not yet measured" if exists else ""
    return format_seconds(seconds) + (f" {STALE}" if stale else "")


def t4_estimates(path: Path = TIME_MODEL) -> dict[str, float]:
    """Notebook stem -> estimated minutes of the gpu profile on a T4, from scripts/time_model.py's output
    (empty if it has not been written)."""
    if not path.is_file():
        return {}
    notebooks = json.loads(path.read_text(encoding="utf-8"))["notebooks"]
    return {stem: v["gpu_minutes"]["T4"] for stem, v in notebooks.items()}


def syllabus_table(records: list[dict], stale: dict, estimates: dict[str, float] | None = None) -> str:
    times = {(r["notebook"], r["profile"]): r["wall_time_s"] for r in records}
    estimates = estimates or {}
    rows = ["| notebook | what you learn | cpu (2 cores) | gpu |", "|---|---|---|---|"]
    for stem, what in SYLLABUS:
        exists = (ROOT / "notebooks" / f"{stem}.ipynb").is_file()
        name = f"[{stem}](notebooks/{stem}.ipynb)" if exists else f"{stem} (planned)"
        cpu = timed(times.get((stem, "cpu")), (stem, "cpu") in stale, exists)
        gpu = timed(times.get((stem, "gpu")), (stem, "gpu") in stale, exists, estimates.get(stem))
        rows.append(f"| {name} | {what} | {cpu} | {gpu} |")
    return "\n".join(rows) + (f"\n\n{SEE_RESULTS}" if stale else "")


def results_table(records: list[dict], stale: dict) -> str:
    """One row per record; below the table, for each stale record, the files changed since its commit."""
    rows = ["| notebook | profile | device | wall time | metrics | commit |", "|---|---|---|---|---|---|"]
    notes = []
    for r in records:
        if r["profile"] == "smoke":
            continue
        key = (r["notebook"], r["profile"])
        metrics = ", ".join(f"{k} = {v:.4g}" for k, v in r["metrics"].items())
        rows.append(f"| {r['notebook']}{f' {STALE}' if key in stale else ''} | {r['profile']} | {r['device']} "
                    f"| {format_seconds(r['wall_time_s'])} | {metrics} | {r['commit']} |")
        if key in stale:
            path = f"notebooks/{r['notebook']}.ipynb"
            rerun = (f"python scripts/verify_cpu.py {path}" if r["profile"] == "cpu"
                     else f"python scripts/run_notebook.py {path} --profile {r['profile']}")
            notes.append(f"- {STALE} {r['notebook']} ({r['profile']}, {r['commit']}): recorded before a change to "
                         f"{short_list(stale[key])}; re-run with `{rerun}`")
    if len(rows) == 2:
        rows.append("| (no records yet) | | | | | |")
    if notes:  # a blank line first: a line right under a table would join it
        rows += ["", STALE_NOTE, ""] + notes
    return "\n".join(rows)


def slow_cells(path: Path, min_seconds: float = RUN_AHEAD_S) -> list[tuple[str, float]]:
    """(section heading, seconds) of the code cells that took longer than ``min_seconds`` in the stored
    run, from the execution timestamps nbclient writes into the cell metadata."""
    import nbformat

    slow, section = [], "start"
    for cell in nbformat.read(path, as_version=4).cells:
        if cell.cell_type == "markdown":
            headings = re.findall(r"^##+ (.+)$", cell.source, flags=re.MULTILINE)
            section = headings[-1].strip() if headings else section  # the last heading before the code
            continue
        times = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" in times and "shell.execute_reply" in times:
            seconds = (datetime.fromisoformat(times["shell.execute_reply"].replace("Z", "+00:00"))
                       - datetime.fromisoformat(times["iopub.execute_input"].replace("Z", "+00:00"))).total_seconds()
            if seconds > min_seconds:
                if slow and slow[-1][0] == section:
                    seconds += slow.pop()[1]
                slow.append((section, seconds))
    return slow


def workshop_table(records: list[dict], stale: dict, estimates: dict[str, float] | None = None) -> str:
    times = {(r["notebook"], r["profile"]): r["wall_time_s"] for r in records}
    estimates = estimates or {}
    rows = ["| notebook | cpu | gpu | start ahead in the cpu profile (cells over 1 min, measured) "
            "| CPU-only room: show from the stored outputs |",
            "|---|---|---|---|---|"]
    for stem, _ in SYLLABUS:
        path = ROOT / "notebooks" / f"{stem}.ipynb"
        if not path.is_file():
            continue
        cpu = timed(times.get((stem, "cpu")), (stem, "cpu") in stale)
        gpu = timed(times.get((stem, "gpu")), (stem, "gpu") in stale, estimate_min=estimates.get(stem))
        slow = ("; ".join(f"{section} ({format_seconds(s)})" for section, s in slow_cells(path))
                or "nothing: run it live")
        rows.append(f"| {stem.split('_')[0]} | {cpu} | {gpu} | {slow} | {SHOW_FROM_OUTPUTS.get(stem, '')} |")
    return "\n".join(rows) + (f"\n\n{SEE_RESULTS}" if stale else "")


def references_table(manifest: dict) -> str:
    """The shipped reference generators, from course_lib/weights/references.json."""
    rows = ["| reference | model | data | training | machine | FCD (n, vs all test images) | class accuracy |",
            "|---|---|---|---|---|---|---|"]
    for name, e in sorted(manifest.items()):
        final = e["final"]
        acc = f"{final['class_accuracy']:.3f}" if "class_accuracy" in final else ""
        fcd_cell = (f"{final['fcd']:.2f} (n = {final['n']:,})" if "fcd" in final
                    else "- (audio: accuracy of a spoken-digit classifier)")
        rows.append(f"| `{name}` | {e['model']} | {e['dataset']} | {e['steps']:,} steps, "
                    f"{format_seconds(e['train_seconds'])} | {e['machine']} | {fcd_cell} | {acc} |")
    if len(rows) == 2:
        rows.append("| (none yet) | | | | | | |")
    return "\n".join(rows)


def render(text: str, records: list[dict], manifest: dict | None = None, stale: dict | None = None,
           estimates: dict[str, float] | None = None) -> str:
    """``text`` with its tables rebuilt; ``stale`` ({(notebook, profile): changed files}) defaults to git's answer,
    ``estimates`` (T4 minutes of the gpu profile per notebook) to results/time_model.json."""
    if manifest is None:
        from course_lib.zoo import references
        manifest = references()
    if stale is None:
        stale = stale_records([r for r in records if r["profile"] != "smoke"])
    if estimates is None:
        estimates = t4_estimates()
    tables = {"syllabus": syllabus_table(records, stale, estimates), "results": results_table(records, stale),
              "workshop": workshop_table(records, stale, estimates), "references": references_table(manifest)}
    for key, table in tables.items():
        start, end = text.find(BEGIN[key]), text.find(END[key])
        if start < 0 or end < start:
            raise ValueError(f"README.md lacks the markers {BEGIN[key]} ... {END[key]}.")
        text = text[: start + len(BEGIN[key])] + "\n" + table + "\n" + text[end:]
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--results", type=Path, default=ROOT / "results")
    args = parser.parse_args(argv)
    old = README.read_text(encoding="utf-8")
    new = render(old, load_results(args.results))
    if args.check:
        if new != old:
            print("README.md tables are out of date: run `python scripts/update_readme.py`.")
            return 1
        return 0
    if new != old:
        tmp = README.with_suffix(".md.tmp")
        tmp.write_text(new, encoding="utf-8")
        tmp.replace(README)
    print("README.md tables", "updated" if new != old else "already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
