"""The shipped reference generators (course_lib/weights/ref_*.pt, listed in references.json).

Each reference must load offline by name with its sha256 checked, sample through the one interface
every generator shares, fail clearly when its file is missing or corrupt, and reproduce the small
fixed-seed "check" score that scripts/train_reference.py recorded when it wrote the weights.
Needs MNIST, Fashion-MNIST and the spoken digits under ``COURSE_DATA`` (the test runner points it at
the offline copy). The audio reference is scored as notebook 08 scores it: by a spoken-digit classifier
trained on the real training spectrograms, not by FCD.
"""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from course_lib import fcd, zoo
from course_lib.audio import SpectrogramConfig, train_digit_classifier, waveform_to_image
from course_lib.data import load_fashion_mnist, load_fsdd, load_mnist
from course_lib.train import accuracy

MANIFEST = zoo.references()
NAMES = sorted(MANIFEST)
LOADERS = {"mnist": load_mnist, "fashion_mnist": load_fashion_mnist}
AUDIO = "fsdd"  # spectrograms (N, 1, 32, 32); stored in [0, 1] like every zoo sample
ROOT_WEIGHTS = zoo.WEIGHTS_DIR  # the shipped folder (the error test points zoo at a copy)
ROOT = Path(__file__).resolve().parents[1]
MAX_TOTAL_BYTES = 40 * 2**20  # all reference weights together
CHECK_RTOL = 0.03  # the check is re-scored from the same weights and seed: only floating-point noise differs
AUDIO_CHECK_ABS = 0.06  # the audio check's accuracy (n = 200), judged by a classifier retrained in the test


@pytest.fixture(scope="module")
def test_statistics():
    cache = {}

    def get(dataset):
        if dataset not in cache:
            cache[dataset] = fcd.image_statistics(LOADERS[dataset]("test").x, dataset)
        return cache[dataset]

    return get


def test_every_reference_a_notebook_loads_is_shipped_and_the_weights_stay_small():
    notebooks = sorted((ROOT / "notebooks").glob("*.ipynb"))
    loaded = {name for nb in notebooks for name in re.findall(r'zoo\.load\(\\?"(\w+)\\?"', nb.read_text())}
    assert loaded, "no notebook loads a reference model"
    assert loaded <= set(NAMES), f"notebooks load references that are not shipped: {sorted(loaded - set(NAMES))}"
    total = sum((ROOT_WEIGHTS / e["file"]).stat().st_size for e in MANIFEST.values())
    assert total <= MAX_TOTAL_BYTES, f"reference weights take {total / 2**20:.1f} MB"


@pytest.mark.parametrize("name", NAMES)
def test_manifest_entry_is_complete(name):
    entry = MANIFEST[name]
    for key in ("file", "sha256", "model", "dataset", "recipe", "steps", "train_seconds", "machine", "torch_version",
                "commit", "curve", "final", "check"):
        assert key in entry, key
    assert entry["model"] in zoo.MODELS and entry["dataset"] in {*LOADERS, AUDIO}
    assert entry["curve"] and entry["curve"][-1]["step"] == entry["steps"]
    assert all(a["train_s"] < b["train_s"] for a, b in zip(entry["curve"], entry["curve"][1:]))


@pytest.mark.parametrize("name", NAMES)
def test_reference_loads_offline_and_samples_unit_images(name):
    ref = zoo.load(name, device="cpu")
    entry = MANIFEST[name]
    assert ref.name == entry["model"] and ref.steps == entry["steps"] and not ref.model.training
    labels = torch.arange(6) % zoo.NUM_CLASSES if ref.conditional else None
    out = ref.sample(6, labels, torch.Generator().manual_seed(0), ddim_steps=2)
    shape = (1, 32, 32) if entry["dataset"] == AUDIO else (1, 28, 28)
    assert out.shape == (6, *shape) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert out.min() >= 0 and out.max() <= 1 and torch.isfinite(out).all()
    again = ref.sample(6, labels, torch.Generator().manual_seed(0), ddim_steps=2)
    assert torch.equal(out, again)


@pytest.mark.parametrize("name", NAMES)
def test_reference_reproduces_its_recorded_check(name, test_statistics):
    """Score the recorded fixed-seed sample again from the shipped weights; it must match the manifest."""
    entry = MANIFEST[name]
    check = entry["check"]
    ref = zoo.load(name, device="cpu")
    n = check["n"]
    labels = torch.arange(n) % zoo.NUM_CLASSES
    settings = {"ddim_steps": check["ddim_steps"]} if "ddim_steps" in check else {}
    images = ref.sample(n, labels, torch.Generator().manual_seed(check["seed"]), **settings)
    if entry["dataset"] == AUDIO:  # judged like notebook 08 (and scripts/train_reference.py): classifier accuracy
        spec = SpectrogramConfig()
        train = load_fsdd("train", length=spec.clip_length)
        clf = train_digit_classifier(waveform_to_image(train.waveforms, spec), train.labels, steps=500)
        # the judge is retrained here, and its weights depend on the number of threads (0.950 vs 0.960 on the
        # real test clips with 2 and 1 threads): a looser tolerance than the images' fixed classifiers need,
        # still far from what a broken reference scores (chance: 0.1)
        assert accuracy(clf, 2 * images - 1, labels) == pytest.approx(check["class_accuracy"], abs=AUDIO_CHECK_ABS)
        return
    mu, sigma = fcd.image_statistics(images, entry["dataset"])
    score = fcd.frechet_distance(mu, sigma, *test_statistics(entry["dataset"]))
    assert score == pytest.approx(check["fcd"], rel=CHECK_RTOL), (score, check["fcd"])
    if "class_accuracy" in check:
        acc = fcd.classifier_accuracy(images, labels, entry["dataset"])
        assert acc == pytest.approx(check["class_accuracy"], abs=0.02)


def test_missing_and_corrupt_weights_give_clear_errors(tmp_path, monkeypatch):
    name = NAMES[0]
    entry = MANIFEST[name]
    shutil.copy(zoo.REFERENCES_MANIFEST, tmp_path / "references.json")
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)
    monkeypatch.setattr(zoo, "REFERENCES_MANIFEST", tmp_path / "references.json")
    with pytest.raises(zoo.ReferenceError, match=rf"(?s){name}.*missing.*{entry['file']}.*train_reference.py {name}"):
        zoo.load(name)
    original = (ROOT_WEIGHTS / entry["file"]).read_bytes()
    (tmp_path / entry["file"]).write_bytes(original[:-10] + b"0123456789")
    with pytest.raises(zoo.ReferenceError, match=r"(?s)corrupt.*sha256.*git checkout"):
        zoo.load(name)
    (tmp_path / entry["file"]).write_bytes(original)
    assert zoo.load(name, device="cpu").name == entry["model"]
    with pytest.raises(zoo.ReferenceError, match="No reference model 'nope'"):
        zoo.reference_path("nope")
    with pytest.raises(zoo.ReferenceError, match=rf"No reference model 'nope'; available: .*{name}"):
        zoo.load("nope")  # a bare name that is not shipped, not "no checkpoint at nope"


def test_the_guidance_scale_is_chosen_on_training_images_and_stored_with_the_weights(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))
    import train_reference

    # the rule: the lowest FCD against the training images, even where the test images would pick another scale
    fake = {"m": {"study": {"guidance": {"by_scale": {"1": {"fcd": 9.0, "fcd_train": 5.0},
                                                      "2": {"fcd": 4.0, "fcd_train": 6.0}}}}}}
    monkeypatch.setattr(train_reference.zoo, "references", lambda: fake)
    assert train_reference.chosen_scale("m") == 1.0
    monkeypatch.undo()
    # every shipped reference with a guidance study samples at the scale it chose, and its "best" is that scale
    studied = [name for name, e in MANIFEST.items() if "guidance" in e.get("study", {})]
    assert studied, "no reference has a guidance study"
    for name in studied:
        chosen = train_reference.chosen_scale(name)
        assert MANIFEST[name]["recipe"]["sampler"]["guidance_scale"] == chosen, name
        assert MANIFEST[name]["study"]["best"]["guidance_scale"] == chosen, name
        assert zoo.load(name, device="cpu").extra["guidance_scale"] == chosen, name
        assert train_reference.REFERENCES[name]["sampler"]["guidance_scale"] == chosen, name  # a retrain keeps it
