"""MNIST and Fashion-MNIST as preloaded tensors: ``x`` (N, 1, 28, 28) float32 in [0, 1], labels ``y`` (N,).

Read through torchvision's dataset classes and scaled once: far faster on a CPU than per-image transforms.
"""
from __future__ import annotations

import gzip
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import TensorDataset

from ..checks import check_choice
from ..files import atomic_write
from .core import DataError, atomic_download, data_root, downloads_allowed, verify

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


@dataclass
class ImageSplit:
    """One split of an image dataset, held in memory."""

    x: torch.Tensor  # (N, 1, 28, 28) float32 in [0, 1]
    y: torch.Tensor  # (N,) int64 class labels
    classes: list[str]

    def __len__(self) -> int:
        return len(self.y)

    def dataset(self) -> TensorDataset:
        return TensorDataset(self.x, self.y)


def _torchvision_class(name: str):
    import torchvision

    classes = {"MNIST": torchvision.datasets.MNIST, "FashionMNIST": torchvision.datasets.FashionMNIST}
    return classes[check_choice(name, sorted(classes), "image dataset")]


def _download_raw(cls, name: str, root: Path) -> None:
    """Fetch the gzipped IDX files from torchvision's mirrors; unpack each atomically."""
    raw = root / name / "raw"
    for gz_name, _md5 in cls.resources:
        rel = f"{name}/raw/{gz_name[:-3]}"
        if (root / rel).is_file():
            continue
        errors = []
        for mirror in cls.mirrors:
            try:
                gz_path = atomic_download(mirror + gz_name, raw / gz_name)
                break
            except DataError as err:
                errors.append(str(err))
        else:
            raise DataError("\n".join(errors))
        with atomic_write(root / rel) as out, gzip.open(gz_path, "rb") as src:
            shutil.copyfileobj(src, out)
        gz_path.unlink()


def load_images(name: str, split: str = "train", limit: int | None = None) -> ImageSplit:
    """Load ``MNIST`` or ``FashionMNIST`` (``split`` = ``"train"`` or ``"test"``) as tensors.

    Files are checked against their published sha256 first; when they are missing and
    downloads are allowed they are fetched into the data root.
    """
    check_choice(split, _FILES, "split")
    cls = _torchvision_class(name)
    root = data_root()
    rels = [f"{name}/raw/{f}" for f in _FILES[split]]
    if not all((root / rel).is_file() for rel in rels) and downloads_allowed():
        _download_raw(cls, name, root)
    for rel in rels:
        verify(rel, root)
    ds = cls(root=str(root), train=(split == "train"), download=False)
    x = ds.data[:limit].unsqueeze(1).float().div_(255.0)  # (N, 1, 28, 28)
    y = ds.targets[:limit].long()  # (N,)
    return ImageSplit(x=x, y=y, classes=list(ds.classes))


def load_mnist(split: str = "train", limit: int | None = None) -> ImageSplit:
    """MNIST handwritten digits: 60k train / 10k test."""
    return load_images("MNIST", split, limit)


def load_fashion_mnist(split: str = "train", limit: int | None = None) -> ImageSplit:
    """Fashion-MNIST clothing images: 60k train / 10k test, 10 classes."""
    return load_images("FashionMNIST", split, limit)
