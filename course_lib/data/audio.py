"""The Free Spoken Digit Dataset (FSDD): 3,000 recordings of spoken digits as float32 tensors in [-1, 1].

Files ``fsdd/recordings/{digit}_{speaker}_{index}.wav`` under the data root, 8 kHz mono 16-bit:
6 speakers x 10 digits x 50 takes, read with the standard library's ``wave`` and numpy (no audio library).
The dataset's own split: takes 0-4 of every speaker and digit are the test set (300), 5-49 train (2,700).

The recordings are listed in ``SHA256SUMS`` and each is checked by sha256 (once per process). Missing
ones are extracted, when downloads are allowed, from the dataset's GitHub archive into a temporary
folder that is renamed into place, so an interrupted extraction leaves nothing half-written.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import wave
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import TensorDataset

from ..checks import check_choice
from ..files import sha256_of
from .core import (DATA_ENV, OFFLINE_ENV, DataError, _missing_message, atomic_download, data_root, downloads_allowed,
                   manifest, upstream_changed, verify)

SAMPLE_RATE = 8000
FSDD_SPLITS = ("train", "test", "all")
_DIR = "fsdd/recordings"
# The archive of a fixed commit (GitHub builds archives on demand, so the zip's own bytes are not stable:
# each extracted recording is checked against SHA256SUMS instead).
_ZIP_URL = ("https://github.com/Jakobovski/free-spoken-digit-dataset/archive/"
            "26eb9aaf76e81b692f806f9140c2d2777410d7a1.zip")
_NAME = re.compile(r"(\d)_([A-Za-z0-9]+)_(\d+)\.wav")
_TEST_TAKES = range(5)  # takes 0-4 of every speaker and digit are the test set


@dataclass
class AudioSplit:
    """One split of FSDD, held in memory."""

    # N tensors (T_i,), or (N, length) when a length was given; float32 in [-1, 1]
    waveforms: list[torch.Tensor] | torch.Tensor
    lengths: torch.Tensor  # (N,) int64 number of real (not padded) samples in each waveform
    labels: torch.Tensor  # (N,) int64 spoken digit 0-9
    speakers: list[str]  # N speaker names
    files: list[str]  # N file names, e.g. "7_jackson_32.wav"
    sample_rate: int = SAMPLE_RATE

    def __len__(self) -> int:
        return len(self.labels)

    def dataset(self) -> TensorDataset:
        """``(waveform, label)`` pairs; needs fixed-length waveforms (``load_fsdd(length=...)``)."""
        if not isinstance(self.waveforms, torch.Tensor):
            raise ValueError("Waveforms have different lengths; load with load_fsdd(..., length=8000) to stack them.")
        return TensorDataset(self.waveforms, self.labels)


def read_wav(path: str | Path) -> tuple[torch.Tensor, int]:
    """Read a mono 16-bit PCM wav file: ``(waveform (T,) float32 in [-1, 1], sample rate)``."""
    path = Path(path)
    try:
        with wave.open(str(path), "rb") as w:
            channels, width, rate, n = w.getnchannels(), w.getsampwidth(), w.getframerate(), w.getnframes()
            frames = w.readframes(n)
    except (wave.Error, EOFError, OSError) as err:
        raise DataError(
            f"Unreadable wav file {path}: {err}\n"
            f"Fix: delete it and run the loader again online to re-download it, or point {DATA_ENV} at an intact copy."
        ) from err
    if channels != 1 or width != 2:
        raise DataError(f"Unsupported wav file {path}: {channels} channel(s), {8 * width}-bit; "
                        "expected mono 16-bit PCM.")
    if len(frames) != 2 * n:
        raise DataError(
            f"Truncated wav file {path}: header says {n} samples, found {len(frames) // 2}.\n"
            f"Fix: delete it and run the loader again online to re-download it, or point {DATA_ENV} at an intact copy."
        )
    samples = np.frombuffer(frames, dtype="<i2").astype(np.float32) / 32768.0  # (T,)
    return torch.from_numpy(samples), rate


def _recordings() -> list[tuple[str, int, str, int]]:
    """(relative path, digit, speaker, take) of every recording the manifest lists, in a fixed order."""
    out = []
    for rel in manifest():
        folder, _, name = rel.rpartition("/")
        m = _NAME.fullmatch(name)
        if folder == _DIR and m:
            out.append((rel, int(m.group(1)), m.group(2), int(m.group(3))))
    out.sort(key=lambda r: (r[2], r[1], r[3]))
    return out


def _download_recordings(root: Path) -> None:
    """Fetch the GitHub archive and move the recordings that are missing into ``root/fsdd/recordings``."""
    folder = root / _DIR
    parent = folder.parent
    zip_path = atomic_download(_ZIP_URL, parent / "free-spoken-digit-dataset.zip")
    tmp = Path(tempfile.mkdtemp(dir=parent, prefix=".recordings.", suffix=".part"))
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info in zf.infolist():
                parts = info.filename.split("/")
                if len(parts) >= 2 and parts[-2] == "recordings" and _NAME.fullmatch(parts[-1]):
                    with zf.open(info) as src, open(tmp / parts[-1], "wb") as out:
                        shutil.copyfileobj(src, out)
        expected = manifest()
        for f in tmp.iterdir():  # before anything lands in place
            want, actual = expected.get(f"{_DIR}/{f.name}"), sha256_of(f)
            if want is not None and actual != want:
                raise DataError(upstream_changed(f"{_ZIP_URL} ({f.name})", actual, want))
        if not folder.exists():
            os.replace(tmp, folder)  # the whole folder appears at once
        else:
            for f in tmp.iterdir():  # keep what is there; add only what is missing
                if not (folder / f.name).exists():
                    os.replace(f, folder / f.name)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(
            f"Could not extract the recordings from {zip_path} (downloaded from {_ZIP_URL}): {err}\n"
            f"Fix: run the loader again, or point {DATA_ENV} at an offline copy of the data."
        ) from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        zip_path.unlink(missing_ok=True)


def _fix_length(x: torch.Tensor, length: int) -> torch.Tensor:
    """Crop to the first ``length`` samples, or pad with zeros at the end."""
    if len(x) >= length:
        return x[:length]
    return torch.nn.functional.pad(x, (0, length - len(x)))


def load_fsdd(split: str = "train", length: int | None = None) -> AudioSplit:
    """Free Spoken Digit Dataset: 2,700 train / 300 test recordings (``split="all"``: 3,000).

    Waveforms keep their own lengths (1,148 to 18,262 samples) unless ``length`` is given: then each is
    cropped or zero-padded at the end to ``length`` samples (8000 = one second), stacked to (N, length).
    """
    check_choice(split, FSDD_SPLITS, "split")
    if length is not None and length <= 0:
        raise ValueError(f"length must be a positive number of samples, got {length}.")
    root = data_root()
    recordings = _recordings()
    missing = [rel for rel, *_ in recordings if not (root / rel).is_file()]
    if missing:
        if not downloads_allowed():
            raise DataError(_missing_message(
                root / missing[0],
                f"unset {OFFLINE_ENV} (downloads are off) and call load_fsdd() again to download the "
                f"recordings from {_ZIP_URL} ({len(missing)} of {len(recordings)} are missing).",
            ))
        _download_recordings(root)
    if split != "all":
        recordings = [r for r in recordings if (r[3] in _TEST_TAKES) == (split == "test")]

    waves, labels, speakers, files = [], [], [], []
    for rel, digit, speaker, _take in recordings:
        path = verify(rel, root)
        x, rate = read_wav(path)  # (T,)
        if rate != SAMPLE_RATE:
            raise DataError(f"Unexpected sample rate in {path}: {rate} Hz, expected {SAMPLE_RATE} Hz.")
        waves.append(x)
        labels.append(digit)
        speakers.append(speaker)
        files.append(rel.rsplit("/", 1)[1])
    lengths = torch.tensor([len(x) for x in waves], dtype=torch.int64)  # (N,)
    if length is not None:
        waveforms: list[torch.Tensor] | torch.Tensor = torch.stack(
            [_fix_length(x, length) for x in waves])  # (N, length)
        lengths = lengths.clamp(max=length)
    else:
        waveforms = waves
    return AudioSplit(waveforms=waveforms, lengths=lengths, labels=torch.tensor(labels, dtype=torch.int64),
                      speakers=speakers, files=files)
