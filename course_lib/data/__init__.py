"""Datasets of the course, read from one data root (``COURSE_DATA``) and checked by sha256."""
from .audio import SAMPLE_RATE, AudioSplit, load_fsdd, read_wav
from .core import DATA_ENV, OFFLINE_ENV, DataError, data_root, downloads_allowed, verify
from .images import ImageSplit, load_fashion_mnist, load_images, load_mnist
from .toy import toy_2d
from .text import (
    CONLL_TAGS, MULTI30K_LANGUAGES, CharCorpus, Poem, Sentence,
    load_conll2003, load_multi30k, load_tang_poems, load_tiny_shakespeare, poem_texts,
)

__all__ = [
    "DATA_ENV", "OFFLINE_ENV", "DataError", "data_root", "downloads_allowed", "verify",
    "ImageSplit", "load_fashion_mnist", "load_images", "load_mnist",
    "CharCorpus", "load_tiny_shakespeare",
    "Poem", "load_tang_poems", "poem_texts",
    "CONLL_TAGS", "Sentence", "load_conll2003",
    "MULTI30K_LANGUAGES", "load_multi30k",
    "SAMPLE_RATE", "AudioSplit", "load_fsdd", "read_wav",
    "toy_2d",
]
