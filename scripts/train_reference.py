"""Train the course's reference generators (``course_lib/weights/ref_<name>.pt``), one at a time.

    python scripts/train_reference.py cfg_mnist                # one model (see REFERENCES below)
    python scripts/train_reference.py --list                   # the recipes
    python scripts/train_reference.py cfg_mnist --device cuda  # minutes on a GPU
    python scripts/train_reference.py cfg_mnist --study        # then its sampler study: the guidance sweep,
                                                               # the chosen scale scored and adopted, the steps

A reference model is a course model trained far longer than a notebook's ``cpu`` budget allows, through
exactly the code the notebooks use (``course_lib.zoo.Run``), deterministically from a seed. Training is
resumable: a checkpoint is written every ``--segment`` steps to ``runs/references/<name>.ckpt`` (git
ignores ``runs/``), and running the same command again continues from it with the same batches and
random numbers, so the weights equal those of an uninterrupted run.

While it trains, the script records the FCD-versus-training-time curve of the sampled weights (the
EMA weights where the recipe keeps an EMA): ``--curve-n`` samples against all 10,000 test images of the
dataset, every ``--curve-every`` steps. The spoken-digit model ``cfg_fsdd`` (notebook 08's audio UNet on
(1, 32, 32) log-mel images) is scored instead by the accuracy of notebook 08's spoken-digit classifier
(``course_lib.audio.train_digit_classifier``, trained on the real clips) on balanced samples. At the end
it writes, atomically,

    course_lib/weights/ref_<name>.pt       the weights (float16) and everything zoo.load needs
    course_lib/weights/references.json     one entry: file, sha256, recipe, steps, wall time, machine,
                                           torch version, commit, the curve, the final metrics and
                                           the small fixed-seed "check" that tests reproduce

All metrics are computed from the saved float16 weights, loaded back through ``zoo.load``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from course_lib import fcd, zoo  # noqa: E402
from course_lib.audio import SpectrogramConfig, train_digit_classifier, waveform_to_image  # noqa: E402
from course_lib.data import load_fashion_mnist, load_fsdd, load_mnist  # noqa: E402
from course_lib.device import describe_device  # noqa: E402
from course_lib.files import atomic_write, sha256_of  # noqa: E402
from course_lib.results import git_commit  # noqa: E402
from course_lib.train import accuracy, count_parameters, load_checkpoint, save_checkpoint  # noqa: E402

SPEC = SpectrogramConfig()


def load_spectrograms(split: str) -> SimpleNamespace:
    """Spoken digits (FSDD) as notebook 08 sees them: log-mel images (N, 1, 32, 32), here mapped to [0, 1]."""
    fsdd = load_fsdd(split, length=SPEC.clip_length)
    return SimpleNamespace(x=(waveform_to_image(fsdd.waveforms, SPEC) + 1) / 2, y=fsdd.labels)


LOADERS = {"mnist": load_mnist, "fashion_mnist": load_fashion_mnist, "fsdd": load_spectrograms}
AUDIO = "fsdd"  # its metric is a spoken-digit classifier's accuracy (FCD's classifiers know only images)

# name -> the zoo model, its dataset, and the settings that differ from zoo.RECIPES; "sampler" are the
# diffusion sampler's settings stored with the weights (zoo.Trained.sample uses them by default; cfg_mnist's
# guidance scale is the one its study chose by FCD against the training images, see study());
# autocast="bf16" trains with bf16 autocast on the CPU (forward and loss in bf16 matrix products, weights,
# gradients and optimizer state in fp32), about 1.8x faster for the width-32 UNet on a CPU with native bf16
# units (AVX-512 BF16 / AMX), slower on one without. Sampling and every score are fp32.
REFERENCES = {
    "cfg_mnist": dict(model="cfg", dataset="mnist", steps=16_000, batch_size=64, lr=1e-3, width=32, ema_decay=0.999,
                      autocast="bf16", sampler=dict(ddim_steps=20, eta=0.0, guidance_scale=1.0), final_n=2_000),
    "ddpm_mnist": dict(model="ddpm", dataset="mnist", steps=16_000, batch_size=64, lr=1e-3, width=32, ema_decay=0.999,
                       autocast="bf16", sampler=dict(ddim_steps=20, eta=0.0, guidance_scale=1.0), final_n=10_000),
    "dcgan_fashion": dict(model="dcgan", dataset="fashion_mnist", steps=20_000, batch_size=64, lr=2e-4, width=48,
                          ema_decay=0.999, final_n=10_000),
    "dcgan_mnist": dict(model="dcgan", dataset="mnist", steps=8_000, batch_size=64, lr=2e-4, width=32, ema_decay=0.999,
                        final_n=10_000),
    "cgan_mnist": dict(model="cgan", dataset="mnist", steps=6_000, batch_size=64, lr=2e-4, width=32, ema_decay=0.999,
                       final_n=10_000),
    "cgan_fashion": dict(model="cgan", dataset="fashion_mnist", steps=6_000, batch_size=64, lr=2e-4, width=32,
                         ema_decay=0.999, final_n=10_000),
    "wgan_gp_mnist": dict(model="wgan_gp", dataset="mnist", steps=1_800, batch_size=64, lr=1e-4, width=32,
                          ema_decay=0.999, final_n=10_000),
    "cfg_fsdd": dict(model="cfg", dataset="fsdd", steps=3_000, batch_size=64, lr=1.5e-3, width=16, ema_decay=0.999,
                     sampler=dict(ddim_steps=20, eta=0.0, guidance_scale=2.0), final_n=1_000),
    "vae_mnist": dict(model="vae", dataset="mnist", steps=18_760, batch_size=128, lr=1e-3, width=512, ema_decay=0.0,
                      final_n=10_000),
}
# The sampler study of a class-conditional diffusion reference (notebook 08 shows it): FCD against all
# test images over DDIM step counts, and the guidance sweep with class accuracy and within-class spread.
STUDY = dict(n=2_000, steps=[5, 10, 20, 50, 100], sweep_steps=20, scales=[0.0, 1.0, 1.5, 2.0, 3.0, 4.0], best_n=10_000)
STUDY_PARTS = ("sweep", "best", "adopt", "steps")  # the order they run in
CHECK = dict(n=200, seed=0, ddim_steps=10)  # the small fixed-seed sample that tests/test_references.py re-scores
SEED = 0
SAMPLE_BATCH = 250  # images per sampler call (smaller batches run faster per image on a CPU)


def test_images(dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    test = LOADERS[dataset]("test")
    return test.x, test.y


def audio_classifier(device: torch.device | str = "cpu") -> torch.nn.Module:
    """Notebook 08's judge of generated spoken digits, with its ``cpu`` settings: a DigitClassifier trained
    for 500 steps on the real training spectrograms in [-1, 1] (``course_lib.audio.train_digit_classifier``)."""
    train = load_spectrograms("train")
    return train_digit_classifier(2 * train.x - 1, train.y, steps=500, device=device)


def judge(dataset: str, device: torch.device | str = "cpu"):
    """What samples are scored against: FCD statistics of all 10,000 test images, or the audio classifier."""
    if dataset == AUDIO:
        clf = audio_classifier(device)
        test_x, test_y = test_images(dataset)
        print(f"audio classifier: accuracy on real test clips {accuracy(clf, 2 * test_x - 1, test_y):.3f}", flush=True)
        return clf
    test_x, _ = test_images(dataset)
    return fcd.image_statistics(test_x, dataset)


def balanced_labels(n: int) -> torch.Tensor:
    return torch.arange(n) % zoo.NUM_CLASSES  # (n,) 0, 1, ..., 9, 0, 1, ...


def score(trained: zoo.Trained, dataset: str, ref_stats, n: int, seed: int, spread: bool = False,
          train_stats=None, **settings) -> dict:
    """FCD of n samples against the test set's statistics; class accuracy for conditional models, with
    ``spread`` their within-class spread, and with ``train_stats`` their FCD against those as well."""
    labels = balanced_labels(n)
    start = time.perf_counter()
    images = trained.sample(n, labels, torch.Generator().manual_seed(seed), batch_size=SAMPLE_BATCH, **settings)
    seconds = time.perf_counter() - start
    if dataset == AUDIO:  # ref_stats is the audio classifier; spectrograms live in [-1, 1]
        return {"n": n, "seed": seed, "class_accuracy": round(accuracy(ref_stats, 2 * images - 1, labels), 4),
                "sampling_s": round(seconds, 1), **settings}
    mu, sigma = fcd.image_statistics(images, dataset)
    out = {"n": n, "seed": seed, "fcd": round(fcd.frechet_distance(mu, sigma, *ref_stats), 3),
           "sampling_s": round(seconds, 1), **settings}
    if trained.conditional:
        out["class_accuracy"] = round(fcd.classifier_accuracy(images, labels, dataset), 4)
    if spread:
        out["within_class_spread"] = round(within_class_spread(images, labels), 4)
    if train_stats is not None:
        out["fcd_train"] = round(fcd.frechet_distance(mu, sigma, *train_stats), 3)
    return out


def within_class_spread(images: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean per-pixel standard deviation among images of the same class, averaged over the classes."""
    return torch.stack([images[labels == k].std(0).mean() for k in labels.unique()]).mean().item()


def write_manifest(manifest: dict, path: Path | None = None) -> None:
    """Write the manifest of reference models atomically (default: zoo's), its entries sorted by name."""
    with atomic_write(path or zoo.REFERENCES_MANIFEST, mode="w", encoding="utf-8") as f:
        json.dump(dict(sorted(manifest.items())), f, indent=1)


def _save_study(name: str, part: dict) -> None:
    """Merge ``part`` into the ``study`` of reference ``name`` in the manifest (atomic), so each
    finished part is kept."""
    manifest = zoo.references()
    manifest[name].setdefault("study", {}).update(part)
    write_manifest(manifest)


def study(name: str, parts: list[str], sweep_n: int) -> None:
    """The sampler study of reference ``name`` (a diffusion model), stored as ``study`` in its manifest entry:
    "steps" (FCD over DDIM step counts, n = STUDY["n"]), "sweep" (guidance scales at sweep_steps, n = sweep_n,
    conditional models), "best" (the chosen scale re-scored with best_n samples) and "adopt" (the chosen scale
    becomes the reference's stored sampler setting; ``adopt_chosen_scale``)."""
    entry = zoo.references()[name]
    dataset = entry["dataset"]
    test_x, test_y = test_images(dataset)
    ref_stats = fcd.image_statistics(test_x, dataset)
    trained = zoo.load(name, device="cpu")
    if "sweep" in parts and trained.conditional:
        # each scale's samples are scored twice: against the test images (what is reported) and against the
        # training images ("fcd_train", what chooses the scale, so that no test score picks a setting)
        train_stats = fcd.image_statistics(LOADERS[dataset]("train").x, dataset)
        sweep = {}
        for w in STUDY["scales"]:
            sweep[f"{w:g}"] = score(trained, dataset, ref_stats, sweep_n, seed=4, spread=True, train_stats=train_stats,
                                    ddim_steps=STUDY["sweep_steps"], guidance_scale=w)
            print(f"w = {w:g}: {sweep[f'{w:g}']}", flush=True)
        _save_study(name, {"guidance": {"n": sweep_n, "ddim_steps": STUDY["sweep_steps"], "by_scale": sweep,
                                        "chosen_by": "lowest fcd_train (FCD against all 60,000 training images)"},
                           "real_test_within_class_spread": round(within_class_spread(test_x, test_y), 4)})
    if "best" in parts and trained.conditional:
        # the chosen scale (at sweep_steps), scored once with best_n samples
        best = score(trained, dataset, ref_stats, STUDY["best_n"], seed=6, ddim_steps=STUDY["sweep_steps"],
                     guidance_scale=chosen_scale(name))
        print(f"best: {best}", flush=True)
        _save_study(name, {"best": best})
    if "adopt" in parts and trained.conditional:
        adopt_chosen_scale(name, dataset, ref_stats)
    if "steps" in parts:  # after "adopt": at the sampler setting the reference now stores
        trained = zoo.load(name, device="cpu")
        n = STUDY["n"]
        train_x = LOADERS[dataset]("train").x
        idx = torch.randperm(len(train_x), generator=torch.Generator().manual_seed(5))[:n]
        real = fcd.frechet_distance(*fcd.image_statistics(train_x[idx], dataset), *ref_stats)
        steps = {str(k): score(trained, dataset, ref_stats, n, seed=3, ddim_steps=k) for k in STUDY["steps"]}
        print(json.dumps(steps), flush=True)
        _save_study(name, {"n": n, "fcd_reference": "all 10,000 test images", "real_train_fcd_same_n": round(real, 3),
                           "ddim_steps": steps})


def chosen_scale(name: str) -> float:
    """The guidance scale the sweep chose: the lowest FCD against the training images ("fcd_train"), so that
    no test score picks a setting."""
    by_scale = zoo.references()[name]["study"]["guidance"]["by_scale"]
    return float(min(by_scale.items(), key=lambda kv: kv[1]["fcd_train"])[0])


def adopt_chosen_scale(name: str, dataset: str, ref_stats) -> None:
    """Make the chosen scale the reference's own sampler setting: rewrite its weights file with that default
    (the weights stay bit-identical, checked), re-measure ``final`` and ``check`` with it and record both, with
    the new sha256, in the manifest. Nothing is rewritten when the scale is already the stored one. The new file
    replaces the old one only just before the manifest is written, so an interrupted run leaves both as they were."""
    manifest = zoo.references()
    entry = manifest[name]
    w, old_w = chosen_scale(name), entry["recipe"]["sampler"]["guidance_scale"]
    if w == old_w:
        print(f"{name}: the chosen scale w = {w:g} is already the stored one; nothing to adopt", flush=True)
        return
    curve_w = entry.setdefault("curve_guidance_scale", old_w)  # the scale the training curve was measured at
    trained = zoo.load(name, device="cpu")
    trained.extra["guidance_scale"] = w
    path = zoo.WEIGHTS_DIR / entry["file"]
    new_path = path.with_name(path.name + ".new")
    zoo.save(trained, new_path, half=True)
    again = zoo.load(new_path, device="cpu")
    for (key, a), b in zip(trained.model.state_dict().items(), again.model.state_dict().values()):
        if not torch.equal(a, b):
            new_path.unlink()
            raise RuntimeError(f"{name}: re-saving changed the weights of {key}; nothing was replaced.")
    final = score(again, dataset, ref_stats, entry["final"]["n"], seed=entry["final"]["seed"])
    check = score(again, dataset, ref_stats, CHECK["n"], CHECK["seed"], ddim_steps=CHECK["ddim_steps"])
    print(f"final {entry['final']} -> {final}\ncheck {entry['check']} -> {check}", flush=True)
    entry.update(sha256=sha256_of(new_path), size_bytes=new_path.stat().st_size, final=final, check=check)
    entry["recipe"]["sampler"]["guidance_scale"] = w
    entry.pop("note", None)
    if w != curve_w:
        entry["note"] = (f"The sampler's guidance scale is the one the study chose on the training images (w = {w:g}; "
                         f"the curve was measured during training with w = {curve_w:g} and DDIM 10); final and "
                         f"check were measured with w = {w:g}.")
    os.replace(new_path, path)
    write_manifest(manifest)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("name", nargs="?", choices=sorted(REFERENCES))
    parser.add_argument("--list", action="store_true", help="print the recipes and exit")
    parser.add_argument("--study", action="store_true", help="run the sampler study of a trained diffusion reference")
    parser.add_argument("--study-parts", default=",".join(STUDY_PARTS),
                        help="which parts of the study to run (always in the order sweep, best, adopt, steps)")
    parser.add_argument("--sweep-n", type=int, default=STUDY["n"], help="samples per guidance scale in the study")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--segment", type=int, default=250, help="steps between checkpoints")
    parser.add_argument("--curve-every", type=int, default=None,
                        help="steps between FCD points, a multiple of --segment (default: about steps / 5)")
    parser.add_argument("--curve-n", type=int, default=500)
    parser.add_argument("--checkpoints", type=Path, default=ROOT / "runs" / "references")
    parser.add_argument("--out", type=Path, default=zoo.WEIGHTS_DIR)
    parser.add_argument("--steps", type=int, default=None, help="override the recipe's steps (for a trial run)")
    parser.add_argument("--final-n", type=int, default=None, help="override the final sample size (for a trial run)")
    args = parser.parse_args()
    if args.list or args.name is None:
        print(json.dumps(REFERENCES, indent=1))
        return
    if args.study:
        parts = args.study_parts.split(",")
        if set(parts) - set(STUDY_PARTS):
            parser.error(f"unknown study parts {sorted(set(parts) - set(STUDY_PARTS))}; choose from {STUDY_PARTS}")
        study(args.name, parts, args.sweep_n)
        return
    spec = dict(REFERENCES[args.name])
    sampler = spec.pop("sampler", {})
    final_n = args.final_n or spec.pop("final_n")
    spec.pop("final_n", None)
    spec["steps"] = args.steps or spec["steps"]
    dataset = spec.pop("dataset")
    model = spec.pop("model")
    amp = spec.pop("autocast", None)
    device = torch.device(args.device)

    data = LOADERS[dataset]("train")
    ref_stats = judge(dataset)  # FCD statistics of all 10,000 test images, or the audio classifier
    run = zoo.Run(model, data.x, data.y, device=device, seed=SEED, **spec)
    ckpt = args.checkpoints / f"{args.name}.ckpt"
    curve = []
    if ckpt.is_file():
        state = load_checkpoint(ckpt, map_location=device)
        run.load_state_dict(state["run"])
        curve = state["curve"]
        print(f"resumed {args.name} at step {run.step} of {run.total_steps}")
    if args.curve_every and args.curve_every % args.segment:
        parser.error("--curve-every must be a multiple of --segment (points are taken between segments).")
    # a multiple of the segment
    curve_every = args.curve_every or args.segment * max(1, run.total_steps // 5 // args.segment)

    def sampled() -> zoo.Trained:
        trained = run.trained()
        trained.extra.update(sampler)
        return trained

    while run.step < run.total_steps:
        # cache_enabled=False: the bf16 copies of the weights are made anew at every forward pass (autocast
        # caches them until its block ends, which here spans many optimizer steps: stale weights, divergence).
        # The block covers the whole step (backward, clipping, optimizer, EMA), not only the forward pass as
        # train.fit(amp=True) would. The two round differently (a width-8 UNet's weights differ by up to 7.6e-3
        # after 4 steps, as much as bf16 differs from fp32), so the shipped weights are reproduced by this one.
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp == "bf16", cache_enabled=False):
            run.advance(min(args.segment, run.total_steps - run.step), progress=True)
        if run.step % curve_every == 0 or run.step == run.total_steps:
            point = score(sampled(), dataset, ref_stats, args.curve_n, seed=1,
                          **({"ddim_steps": 10} if sampler else {}))
            curve.append({"step": run.step, "train_s": round(run.seconds, 1),
                          **{k: point[k] for k in ("fcd", "class_accuracy") if k in point}})
            print(f"step {run.step}: {curve[-1]}", flush=True)
        save_checkpoint(ckpt, run=run.state_dict(), curve=curve)

    # Write the float16 weights, then measure everything from the file as zoo.load reads it.
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"ref_{args.name}.pt"
    zoo.save(sampled(), path, half=True)
    trained = zoo.load(path, device=device)
    final = score(trained, dataset, ref_stats, final_n, seed=2)
    check_settings = {"ddim_steps": CHECK["ddim_steps"]} if sampler else {}
    check = score(zoo.load(path, device="cpu"), dataset, ref_stats, CHECK["n"], CHECK["seed"], **check_settings)
    entry = {
        "file": path.name, "sha256": sha256_of(path), "size_bytes": path.stat().st_size, "model": model,
        "dataset": dataset, "recipe": {**spec, "seed": SEED, **({"autocast": amp} if amp else {}),
                                         **({"sampler": sampler} if sampler else {})},
        "steps": run.step, "train_seconds": round(run.seconds, 1), "machine": describe_device(device),
        "platform": platform.platform(), "torch_version": torch.__version__, "commit": git_commit(),
        "n_params": count_parameters(trained.model),
        "fcd_reference": "all 10,000 test images" if dataset != AUDIO else None,
        "metric": "fcd" if dataset != AUDIO else "class_accuracy of notebook 08's spoken-digit classifier",
        "curve_n": args.curve_n, "curve": curve, "final": final,
        "check": check,
    }
    manifest = zoo.references()
    manifest[args.name] = entry
    write_manifest(manifest, zoo.REFERENCES_MANIFEST if args.out == zoo.WEIGHTS_DIR else args.out / "references.json")
    print(json.dumps({k: entry[k] for k in ("steps", "train_seconds", "final", "check")}, indent=1))


if __name__ == "__main__":
    main()
