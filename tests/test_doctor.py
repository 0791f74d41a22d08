"""The doctor: each check fails on the problem it is for, says how to fix it, and passes here."""
import subprocess
import sys

import pytest

from course_lib import doctor
from course_lib.data import core


def test_python_version():
    assert doctor.check_python((3, 9, 18)).status == "fail"
    assert "3.10" in doctor.check_python((3, 9, 18)).fix
    assert doctor.check_python((3, 12, 1)).status == "ok"


def test_package_ranges():
    assert doctor.check_package("torch", ">=2.2", "2.1.0").status == "fail"
    assert doctor.check_package("torch", ">=2.2", "2.14.1+cu128").status == "ok"  # local build tags are fine
    missing = doctor.check_package("seqeval", ">=1.2", None)
    assert missing.status == "fail" and "pip install 'seqeval>=1.2'" in missing.fix
    # the ranges come from this package's metadata (pyproject.toml), not from a copy in the code
    ranges = doctor.required_ranges()
    assert ranges["torch"].startswith(">=") and "jupyterlab" not in ranges  # dev extra excluded


def test_missing_and_corrupt_data(tmp_path, monkeypatch):
    monkeypatch.setenv(core.DATA_ENV, str(tmp_path))
    checks = {c.name: c for c in doctor.check_data()}
    assert checks["data root"].status == "ok"
    mnist = checks["data: MNIST"]
    assert mnist.status == "fail" and "4 of 4 files missing" in mnist.detail
    assert "python -m course_lib.data mnist" in mnist.fix and "COURSE_DATA" in mnist.fix
    # a corrupt file is found only with --verify (hashing every file is slow)
    rel = next(r for r in core.manifest() if r.startswith("tinyshakespeare/"))
    (tmp_path / rel).parent.mkdir(parents=True)
    (tmp_path / rel).write_text("not the real file")
    assert {c.name: c for c in doctor.check_data()}["data: tinyshakespeare"].status == "ok"
    bad = {c.name: c for c in doctor.check_data(verify_hashes=True)}["data: tinyshakespeare"]
    assert bad.status == "fail" and "sha256" in bad.detail


def test_data_root_not_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(core.DATA_ENV, str(tmp_path / "nowhere"))
    (check,) = doctor.check_data()
    assert check.status == "fail" and "not a folder" in check.detail and "COURSE_DATA" in check.fix


def test_disk_space(tmp_path):
    assert doctor.check_disk(tmp_path / "results" / "not-yet", min_free_gb=0.0).status == "ok"
    low = doctor.check_disk(tmp_path, min_free_gb=1e9)  # a petabyte: always too little
    assert low.status == "warn" and "GB free" in low.detail and low.fix


def test_device_request_that_cannot_be_met(monkeypatch):
    import torch
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.setenv("COURSE_DEVICE", "cuda")
    check = doctor.check_device()
    assert check.status == "fail" and "COURSE_DEVICE" in check.fix


def test_report_and_exit_status(capsys, monkeypatch):
    monkeypatch.setattr(doctor, "run_checks", lambda verify_hashes=False: [
        doctor.Check("python", "ok", "Python 3.12"), doctor.Check("data: MNIST", "fail", "missing", "run this")])
    assert doctor.main([]) == 1
    out = capsys.readouterr().out
    assert "[FAIL] data: MNIST" in out and "fix: run this" in out and "1 problem(s)" in out
    monkeypatch.setattr(doctor, "run_checks",
                        lambda verify_hashes=False: [doctor.Check("device", "warn", "cpu", "get a GPU")])
    assert doctor.main([]) == 0


def test_command_line_on_this_machine():
    # this machine has everything the tests need, so the doctor must find no problem
    run = subprocess.run([sys.executable, "-m", "course_lib", "doctor"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "0 problem(s)" in run.stdout and "[ok  ] torch + torchvision" in run.stdout
    usage = subprocess.run([sys.executable, "-m", "course_lib"], capture_output=True, text=True, timeout=60)
    assert usage.returncode == 2 and "doctor" in usage.stdout


def test_missing_reference_weights(tmp_path, monkeypatch):
    from course_lib import zoo

    ok = doctor.check_references()
    assert ok.status == "ok" and f"{len(zoo.references())} present" in ok.detail
    manifest = tmp_path / "references.json"
    manifest.write_text(zoo.REFERENCES_MANIFEST.read_text())
    monkeypatch.setattr(zoo, "WEIGHTS_DIR", tmp_path)  # the manifest, but none of the weight files
    monkeypatch.setattr(zoo, "REFERENCES_MANIFEST", manifest)
    bad = doctor.check_references()
    assert bad.status == "fail" and "unusable" in bad.detail and "train_reference.py" in bad.fix
