"""Files that are either complete or absent (atomic writes, checksums), and paths as a learner should see them."""
from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb", encoding: str | None = None) -> Iterator[IO]:
    """Write through a temporary file next to ``path``, renamed to ``path`` only if the block succeeds.

    On an error the temporary file is removed and ``path`` is left as it was: no half-written files::

        with atomic_write("results/03_vae/cpu.json", "w", encoding="utf-8") as f:
            json.dump(record, f)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".part")
    try:
        with os.fdopen(fd, mode, encoding=encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; these files are meant to be read by others
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def sha256_of(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def checkout() -> Path | None:
    """The course's source checkout this course_lib runs from, or None when it is installed as a package."""
    root = Path(__file__).resolve().parents[1]
    return root if (root / "pyproject.toml").is_file() else None


def display_path(path: str | Path) -> str:
    """``path`` as printed for a learner, without the machine's own folders: under the home folder as
    ``~/...``; else, inside the course's checkout or beside it, relative to the checkout (``data``,
    ``../shared/data``); else as it is. Stored notebook outputs then read the same on every machine."""
    path = Path(path).expanduser().resolve()
    home = Path.home().resolve()
    if path == home or home in path.parents:
        return str(Path("~") / path.relative_to(home))
    root = checkout()
    if root is not None and (path == root.parent or root.parent in path.parents):
        return Path(os.path.relpath(path, root)).as_posix()
    return str(path)
