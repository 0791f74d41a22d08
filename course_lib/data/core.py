"""Where the course's data lives, how it is checked, and how it is fetched.

The data root is the environment variable ``COURSE_DATA`` (default: the ``data/`` folder of a source
checkout, else ``~/.cache/genai-course/data``). Every file the course reads is listed with its sha256
in ``SHA256SUMS`` next to this module and checked before use, with a message that names a bad file.
Downloads happen only when allowed (not when ``COURSE_OFFLINE`` is 1, true or yes) and go to a temporary file renamed
into place once complete, so an interrupted download never leaves a half-written file.
"""
from __future__ import annotations

import hashlib
import os
import urllib.request
from functools import lru_cache
from pathlib import Path

from ..files import atomic_write, sha256_of

DATA_ENV = "COURSE_DATA"
OFFLINE_ENV = "COURSE_OFFLINE"
_MANIFEST = Path(__file__).with_name("SHA256SUMS")


class DataError(RuntimeError):
    """A dataset file is missing or corrupt; the message says how to fix it."""


def data_root() -> Path:
    """The folder datasets are read from (and downloaded into)."""
    env = os.environ.get(DATA_ENV)
    if env:
        root = Path(env).expanduser().resolve()
        if not root.is_dir():
            raise DataError(
                f"{DATA_ENV}={env!r} points to {root}, which is not a folder.\n"
                f"Fix: set {DATA_ENV} to an existing folder (for example the course's data/ "
                f"folder or an offline copy such as ../shared/data), or unset it to use the default."
            )
        return root
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "pyproject.toml").is_file() and (checkout / "data").is_dir():
        return checkout / "data"
    return Path.home() / ".cache" / "genai-course" / "data"


def downloads_allowed() -> bool:
    """False when the environment says to stay offline (``COURSE_OFFLINE=1``)."""
    return os.environ.get(OFFLINE_ENV, "0").strip().lower() not in ("1", "true", "yes")


@lru_cache(maxsize=1)
def manifest() -> dict[str, str]:
    """Relative path -> expected sha256 for every file the course reads."""
    table = {}
    for line in _MANIFEST.read_text(encoding="utf-8").splitlines():
        digest, rel = line.split(None, 1)
        table[rel.strip()] = digest
    return table


_verified: dict[tuple[str, int, int], bool] = {}


def _missing_message(path: Path, how_to_get: str) -> str:
    root = data_root()
    return (
        f"Missing data file: {path}\n"
        f"Expected it under the data root {root} (set by {DATA_ENV}).\n"
        f"Fix, either:\n"
        f"  - point {DATA_ENV} at a folder that holds it, e.g. `export {DATA_ENV}=../shared/data`, or\n"
        f"  - {how_to_get}"
    )


def verify(rel: str, root: Path | None = None) -> Path:
    """Check that ``root/rel`` exists and has the published sha256; return its path.

    Results are remembered per (path, size, mtime) so repeated loads stay fast.
    """
    root = data_root() if root is None else root
    path = root / rel
    if not path.is_file():
        how = ("call the loader again online to download it." if downloads_allowed() else
               f"downloads are switched off ({OFFLINE_ENV}=1): unset {OFFLINE_ENV} and call the loader again online.")
        raise DataError(_missing_message(path, how))
    expected = manifest().get(rel)
    if expected is None:
        return path
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        actual = sha256_of(path)
        if actual != expected:
            raise DataError(
                f"Corrupt data file: {path}\n"
                f"sha256 is {actual}, expected {expected} (truncated download or edited file?).\n"
                f"Fix: delete the file and run the loader again online to re-download it, "
                f"or point {DATA_ENV} at an intact copy."
            )
        _verified[key] = True
    return path


def upstream_changed(source: str, actual: str, expected: str) -> str:
    """The message for a downloaded file whose sha256 is not the one in ``SHA256SUMS``."""
    return (
        f"Downloaded {source}, but its sha256 is {actual}, not the pinned {expected}.\n"
        "Every source is pinned to a fixed commit, so the file upstream has changed (history rewritten or "
        "the file replaced), or the download was altered on the way; trying again later will not help.\n"
        f"Fix, either: point {DATA_ENV} at an offline copy of the course data, or check the new file and then "
        "update its URL in course_lib/data and its line in course_lib/data/SHA256SUMS together."
    )


def atomic_download(url: str, dest: Path, expected_sha256: str | None = None) -> Path:
    """Download ``url`` to ``dest`` via a temporary file; rename only when complete and checked."""
    if not downloads_allowed():
        raise DataError(
            f"Missing data file: {dest}\n"
            f"Downloads are switched off ({OFFLINE_ENV}=1).\n"
            f"Fix: unset {OFFLINE_ENV} to download it from {url}, or point {DATA_ENV} at a folder that holds it."
        )
    try:
        with atomic_write(dest) as out, urllib.request.urlopen(url, timeout=60) as response:
            digest = hashlib.sha256()
            for block in iter(lambda: response.read(1 << 20), b""):
                digest.update(block)
                out.write(block)
            if expected_sha256 is not None and digest.hexdigest() != expected_sha256:
                raise DataError(upstream_changed(url, digest.hexdigest(), expected_sha256))
    except OSError as err:
        raise DataError(
            f"Could not download {url} to {dest}: {err}\n"
            f"Fix: check your internet connection, or point {DATA_ENV} at an offline copy of the data."
        ) from err
    return dest


def fetch(rel: str, url: str) -> Path:
    """Return the checked path of ``rel`` under the data root, downloading it first if missing."""
    root = data_root()
    path = root / rel
    if not path.is_file():
        atomic_download(url, path, manifest().get(rel))
    return verify(rel, root)
