"""The course's text datasets: Tiny Shakespeare, the Complete Tang Poems, CoNLL-2003 NER, Multi30k.

Each file lives under the data root (``COURSE_DATA``) at the offline copy's relative path, is checked
against ``SHA256SUMS``, and is downloaded (atomically) from a pinned public source when it is missing
and downloads are allowed.
"""
from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple
from urllib.parse import quote

import numpy as np
import torch

from ..checks import check_choice
from .core import DATA_ENV, DataError, fetch, manifest

# -------------------------------------------------------------------- Tiny Shakespeare

_SHAKESPEARE_REL = "tinyshakespeare/input.txt"
# Every source is pinned to a commit whose files have the sha256 of SHA256SUMS (a branch would move under it).
_SHAKESPEARE_URL = ("https://raw.githubusercontent.com/karpathy/char-rnn/"
                    "6f9487a6fe5b420b7ca9afb0d7c078e37c1d1b4e/data/tinyshakespeare/input.txt")


@dataclass
class CharCorpus:
    """A text with its sorted character vocabulary and train / validation token ids."""

    text: str
    chars: list[str]  # sorted distinct characters; token id = position in this list
    train: torch.Tensor  # (N_train,) int64 token ids, the start of the text
    val: torch.Tensor  # (N_val,) int64 token ids, the end of the text
    stoi: dict[str, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, s: str) -> list[int]:
        """Characters -> token ids; every character must be in the vocabulary."""
        try:
            return [self.stoi[c] for c in s]
        except KeyError as err:
            raise ValueError(f"Character {err.args[0]!r} is not in this corpus' vocabulary.") from None

    def decode(self, ids: Iterable[int] | torch.Tensor) -> str:
        """Token ids (a list or a 1-D tensor) -> text."""
        if isinstance(ids, torch.Tensor):
            ids = ids.tolist()
        return "".join(self.chars[i] for i in ids)

    def __repr__(self) -> str:
        return (f"CharCorpus({len(self.text):,} characters, vocab_size={self.vocab_size}, "
                f"train={len(self.train):,}, val={len(self.val):,})")


def _encode_all(text: str, chars: list[str]) -> torch.Tensor:
    """Encode a long text fast: map code points to ids through a lookup table."""
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)  # (N,) code points
    table = np.zeros(max(map(ord, chars)) + 1, dtype=np.int64)
    table[[ord(c) for c in chars]] = np.arange(len(chars))
    return torch.from_numpy(table[codes])  # (N,) int64


def load_tiny_shakespeare(val_fraction: float = 0.1) -> CharCorpus:
    """Tiny Shakespeare (1,115,394 characters, 65 distinct) as a character-level corpus.

    The first ``1 - val_fraction`` of the text (90% by default) is ``train``, the rest ``val``.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    path = fetch(_SHAKESPEARE_REL, _SHAKESPEARE_URL)
    text = path.read_text(encoding="utf-8")
    chars = sorted(set(text))
    data = _encode_all(text, chars)  # (N,) int64
    n_train = int((1.0 - val_fraction) * len(data))
    return CharCorpus(text=text, chars=chars, train=data[:n_train], val=data[n_train:])


# -------------------------------------------------------------------- Complete Tang poems

_TANG_DIR = "chinese-poetry/全唐诗"
_TANG_URL = ("https://raw.githubusercontent.com/chinese-poetry/chinese-poetry/"
             "99ebbef7e1345c0985c44b9fd96a3f9e776f117b/" + quote("全唐诗") + "/{name}")
_TANG_300 = "唐诗三百首.json"


class Poem(NamedTuple):
    """One poem: its title, author and lines (``paragraphs`` in the source JSON)."""

    title: str
    author: str
    lines: list[str]

    @property
    def text(self) -> str:
        """The poem's lines joined into one string."""
        return "".join(self.lines)


def _tang_files(selection: str) -> list[str]:
    if selection == "300":
        return [f"{_TANG_DIR}/{_TANG_300}"]
    if selection == "all":
        prefix = f"{_TANG_DIR}/poet.tang."
        rels = [rel for rel in manifest() if rel.startswith(prefix) and rel.endswith(".json")]
        return sorted(rels, key=lambda rel: int(rel[len(prefix):-len(".json")]))
    raise ValueError(f"Unknown selection {selection!r}; choose 'all' (57,607 poems) or '300'.")


def load_tang_poems(selection: str = "all") -> list[Poem]:
    """Tang poems in traditional characters, in the source files' order.

    ``selection="all"``: the 57,607 poems of the Complete Tang Poems (``poet.tang.*.json``);
    ``selection="300"``: the classic selection ``唐诗三百首.json`` (366 entries in this edition).
    """
    poems: list[Poem] = []
    for rel in _tang_files(selection):
        name = rel.rsplit("/", 1)[1]
        path = fetch(rel, _TANG_URL.format(name=quote(name)))
        try:
            records = json.loads(path.read_text(encoding="utf-8"))
            poems.extend(Poem(r.get("title", ""), r.get("author", ""), list(r["paragraphs"])) for r in records)
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            raise DataError(f"Unreadable poem file {path}: {err!r}\n"
                            "Fix: delete it and run the loader again online, "
                            f"or point {DATA_ENV} at an intact copy.") from err
    return poems


def poem_texts(poems: Iterable[Poem], sep: str = "") -> list[str]:
    """One string per poem: its lines joined with ``sep`` (``"\\n"`` keeps the line breaks)."""
    return [sep.join(p.lines) for p in poems]


# -------------------------------------------------------------------- CoNLL-2003 NER

CONLL_TAGS = ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")
_CONLL_URL = ("https://raw.githubusercontent.com/heathher/Named-Entity-Recognition/"
              "f58fe48cefba693c6f454c3e94d89b37dcb7ce98/conll2003/{split}.txt")
_CONLL_SPLITS = ("train", "valid", "test")


class Sentence(NamedTuple):
    """One CoNLL sentence: tokens and their BIO2 tags (same length)."""

    tokens: list[str]
    tags: list[str]


def load_conll2003(split: str = "train") -> list[Sentence]:
    """CoNLL-2003 English NER: 14,041 / 3,250 / 3,453 sentences for train / valid / test.

    Each sentence is ``(tokens, tags)`` with tags from ``CONLL_TAGS``; ``-DOCSTART-`` lines
    and empty sentences are dropped.
    """
    check_choice(split, _CONLL_SPLITS, "split")
    path = fetch(f"conll2003/{split}.txt", _CONLL_URL.format(split=split))
    known = set(CONLL_TAGS)
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            parts = line.split()  # lines end with a trailing space in this copy
            if not parts:
                if tokens:
                    sentences.append(Sentence(tokens, tags))
                    tokens, tags = [], []
                continue
            if parts[0] == "-DOCSTART-":
                continue
            if len(parts) != 2 or parts[1] not in known:
                raise DataError(f"Unexpected line {lineno} in {path}: {line.rstrip()!r} "
                                f"(expected 'token TAG' with a tag from {list(CONLL_TAGS)}).")
            tokens.append(parts[0])
            tags.append(parts[1])
    if tokens:
        sentences.append(Sentence(tokens, tags))
    return sentences


# -------------------------------------------------------------------- Multi30k

MULTI30K_LANGUAGES = ("en", "de", "fr")
_MULTI30K_FILES = {"train": "train", "val": "val", "test": "test_2016_flickr"}
_MULTI30K_URL = ("https://raw.githubusercontent.com/multi30k/dataset/"
                 "a3d2e0d26b56f3846f66a952536ffed4e401d05a/data/task1/raw/{name}")


def _multi30k_lines(split: str, lang: str) -> list[str]:
    name = f"{_MULTI30K_FILES[split]}.{lang}.gz"
    path = fetch(f"multi30k/{name}", _MULTI30K_URL.format(name=name))
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return f.read().splitlines()


def load_multi30k(split: str = "train", src: str = "en", tgt: str = "fr") -> list[tuple[str, str]]:
    """Multi30k task 1 captions as aligned ``(source, target)`` pairs.

    29,000 / 1,014 / 1,000 pairs for ``split`` = train / val / test (the 2016 Flickr test set);
    ``src`` and ``tgt`` are each one of ``en``, ``de``, ``fr``.
    """
    check_choice(split, _MULTI30K_FILES, "split")
    for lang in (src, tgt):
        check_choice(lang, MULTI30K_LANGUAGES, "Multi30k language")
    source, target = _multi30k_lines(split, src), _multi30k_lines(split, tgt)
    if len(source) != len(target):
        raise DataError(f"Multi30k {split}: {len(source)} {src} lines but {len(target)} {tgt} lines; "
                        f"the files under the data root are not aligned.")
    return list(zip(source, target))
