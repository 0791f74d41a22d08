"""Datasets of the course, read from one data root (``COURSE_DATA``) and checked by sha256."""
from .core import DATA_ENV, OFFLINE_ENV, DataError, data_root, downloads_allowed, verify
from .images import ImageSplit, load_fashion_mnist, load_images, load_mnist

__all__ = [
    "DATA_ENV", "OFFLINE_ENV", "DataError", "data_root", "downloads_allowed", "verify",
    "ImageSplit", "load_fashion_mnist", "load_images", "load_mnist",
]
