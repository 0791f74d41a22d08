"""Tests of the dataset loaders (``course_lib.data``): sizes and contents of every dataset
read from the offline copy in ``COURSE_DATA``, and the failure modes a learner can meet
(no data root, missing file while offline, corrupt file, interrupted download).

No test touches the network: downloads are exercised with ``urlopen`` replaced by fakes
that serve bytes from the offline copy or fail midway.
"""
from __future__ import annotations

import io
import os
import re
import shutil
import wave
import zipfile
from pathlib import Path
from urllib.parse import quote

import pytest
import torch

from course_lib.data import (
    CONLL_TAGS, DataError, data_root, downloads_allowed, load_conll2003, load_fashion_mnist, load_fsdd,
    load_mnist, load_multi30k, load_tang_poems, load_tiny_shakespeare, poem_texts, read_wav, verify,
)
from course_lib.data import audio, core, text

_ENV_ROOT = os.environ.get("COURSE_DATA")
REAL = Path(_ENV_ROOT).expanduser().resolve() if _ENV_ROOT else None
needs_data = pytest.mark.skipif(
    REAL is None or not REAL.is_dir(),
    reason="COURSE_DATA is not set to the offline data folder (e.g. COURSE_DATA=../shared/data)",
)


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """Every test starts offline and reading the real data root; tests override as needed."""
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    if REAL is not None:
        monkeypatch.setenv("COURSE_DATA", str(REAL))


@pytest.fixture
def tmp_root(tmp_path, monkeypatch):
    """An empty data root."""
    root = tmp_path / "data"
    root.mkdir()
    monkeypatch.setenv("COURSE_DATA", str(root))
    return root


def _copy(rels, root: Path) -> None:
    for rel in rels:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(REAL / rel, root / rel)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


# One entry per loader: how to call it, and the first file it needs (named in error messages).
LOADERS = {
    "mnist": (lambda: load_mnist("test"), "MNIST/raw/t10k-images-idx3-ubyte"),
    "fashion-mnist": (lambda: load_fashion_mnist("train"), "FashionMNIST/raw/train-images-idx3-ubyte"),
    "shakespeare": (load_tiny_shakespeare, "tinyshakespeare/input.txt"),
    "tang-all": (lambda: load_tang_poems("all"), "chinese-poetry/全唐诗/poet.tang.0.json"),
    "tang-300": (lambda: load_tang_poems("300"), "chinese-poetry/全唐诗/唐诗三百首.json"),
    "conll": (lambda: load_conll2003("valid"), "conll2003/valid.txt"),
    "multi30k": (lambda: load_multi30k("val", "en", "de"), "multi30k/val.en.gz"),
    "fsdd": (lambda: load_fsdd("test"), "fsdd/recordings/0_george_0.wav"),
}


# ---------------------------------------------------------------------------------------
# core
# ---------------------------------------------------------------------------------------

def test_data_root_and_offline_switch(tmp_root, monkeypatch):
    assert data_root() == tmp_root.resolve()
    assert not downloads_allowed()
    monkeypatch.setenv("COURSE_OFFLINE", "0")
    assert downloads_allowed()
    monkeypatch.delenv("COURSE_OFFLINE")
    assert downloads_allowed()


def test_manifest_lists_every_dataset():
    rels = core.manifest()
    assert sum(r.startswith("fsdd/recordings/") for r in rels) == 3000
    assert sum(r.startswith("chinese-poetry/全唐诗/poet.tang.") for r in rels) == 58
    for _, rel in LOADERS.values():
        assert rel in rels


@needs_data
def test_verify_accepts_the_offline_copy():
    assert verify("tinyshakespeare/input.txt") == REAL / "tinyshakespeare/input.txt"


# ---------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------

@needs_data
@pytest.mark.parametrize("loader", [load_mnist, load_fashion_mnist])
def test_image_datasets(loader):
    train, test = loader("train"), loader("test")
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert train.y.shape == (60000,) and test.y.shape == (10000,)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    assert 0.0 <= float(train.x.min()) and float(train.x.max()) == 1.0
    assert set(train.y.tolist()) == set(range(10)) and len(train.classes) == 10
    assert len(loader("test", limit=5)) == 5
    x, y = train.dataset()[0]
    assert x.shape == (1, 28, 28) and y.ndim == 0


def test_image_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        load_mnist("valid")


# ---------------------------------------------------------------------------------------
# text
# ---------------------------------------------------------------------------------------

@needs_data
def test_tiny_shakespeare():
    corpus = load_tiny_shakespeare()
    assert len(corpus.text) == 1_115_394
    assert corpus.vocab_size == 65 and corpus.chars == sorted(set(corpus.text))
    assert len(corpus.train) == int(0.9 * 1_115_394) == 1_003_854 and len(corpus.val) == 111_540
    assert corpus.train.dtype == torch.int64
    assert corpus.decode(torch.cat([corpus.train, corpus.val])) == corpus.text
    assert corpus.text.startswith("First Citizen:")
    assert corpus.encode("First") == corpus.train[:5].tolist()
    assert corpus.decode(corpus.encode("To be, or not to be")) == "To be, or not to be"
    with pytest.raises(ValueError, match="vocabulary"):
        corpus.encode("é")


@needs_data
def test_tang_poems():
    poems = load_tang_poems()
    assert len(poems) == 57_607
    first = poems[0]
    assert first.author == "太宗皇帝" and first.title == "帝京篇十首 一"
    assert first.lines[0] == "秦川雄帝宅，函谷壯皇居。" and len(first.lines) == 4
    texts = poem_texts(poems)
    assert len(texts) == 57_607 and texts[0] == first.text == "".join(first.lines)
    assert poem_texts(poems[:1], sep="\n")[0].count("\n") == 3
    n_chars = sum(map(len, texts))
    assert 3_000_000 < n_chars < 4_500_000  # "about 3.7M characters"
    selection = load_tang_poems("300")
    assert len(selection) == 366 and all(p.lines for p in selection)  # 366 entries in this edition
    with pytest.raises(ValueError, match="selection"):
        load_tang_poems("100")


def test_conll_tags():
    assert CONLL_TAGS == ("O", "B-PER", "I-PER", "B-ORG", "I-ORG", "B-LOC", "I-LOC", "B-MISC", "I-MISC")


@needs_data
@pytest.mark.parametrize("split,count", [("train", 14_041), ("valid", 3_250), ("test", 3_453)])
def test_conll2003(split, count):
    sentences = load_conll2003(split)
    assert len(sentences) == count
    used = set()
    for tokens, tags in sentences:
        assert tokens and len(tokens) == len(tags)
        assert "-DOCSTART-" not in tokens
        assert all(t == t.strip() and t for t in tokens)  # the trailing space is gone
        prev = "O"
        for tag in tags:  # BIO2: an I- tag continues an entity of the same type
            assert not tag.startswith("I-") or prev[2:] == tag[2:]
            prev = tag
        used.update(tags)
    assert used == set(CONLL_TAGS)
    if split == "train":
        assert sentences[0].tokens == ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."]
        assert sentences[0].tags == ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"]


def test_conll_bad_split():
    with pytest.raises(ValueError, match="split"):
        load_conll2003("dev")


@needs_data
@pytest.mark.parametrize("split,count", [("train", 29_000), ("val", 1_014), ("test", 1_000)])
def test_multi30k(split, count):
    en_fr = load_multi30k(split)  # default src="en", tgt="fr"
    en_de = load_multi30k(split, src="en", tgt="de")
    de_en = load_multi30k(split, src="de", tgt="en")
    assert len(en_fr) == len(en_de) == len(de_en) == count
    assert [s for s, _ in en_fr] == [s for s, _ in en_de] == [t for _, t in de_en]  # line i aligned
    assert all(s and t and "\n" not in s + t for s, t in en_fr)
    if split == "train":
        assert en_fr[0] == ("Two young, White males are outside near many bushes.",
                            "Deux jeunes hommes blancs sont dehors près de buissons.")
        assert en_de[0][1] == "Zwei junge weiße Männer sind im Freien in der Nähe vieler Büsche."


def test_multi30k_bad_arguments():
    with pytest.raises(ValueError, match="language"):
        load_multi30k("train", src="en", tgt="cs")
    with pytest.raises(ValueError, match="split"):
        load_multi30k("test_2017")


# ---------------------------------------------------------------------------------------
# audio
# ---------------------------------------------------------------------------------------

@needs_data
def test_fsdd_splits():
    everything = load_fsdd("all")
    train, test = load_fsdd("train"), load_fsdd("test")
    assert len(everything) == 3000 and len(train) == 2700 and len(test) == 300
    assert set(train.files).isdisjoint(test.files) and set(train.files) | set(test.files) == set(everything.files)
    for split, is_test in ((train, False), (test, True)):
        for name, digit, speaker in zip(split.files, split.labels.tolist(), split.speakers):
            d, spk, take = name[:-4].split("_")
            assert int(d) == digit and spk == speaker
            assert (int(take) <= 4) == is_test  # takes 0-4 of every speaker and digit are the test set
    speakers = sorted(set(everything.speakers))
    assert len(speakers) == 6
    for spk in speakers:
        assert test.speakers.count(spk) == 50 and train.speakers.count(spk) == 450
    assert torch.bincount(test.labels).tolist() == [30] * 10


@needs_data
def test_fsdd_waveforms():
    test = load_fsdd("test")
    assert test.sample_rate == 8000
    assert isinstance(test.waveforms, list)
    assert [len(w) for w in test.waveforms] == test.lengths.tolist()
    assert all(w.dtype == torch.float32 and w.ndim == 1 for w in test.waveforms)
    assert all(float(w.abs().max()) <= 1.0 for w in test.waveforms)
    assert int(test.lengths.min()) < 8000 < int(test.lengths.max())  # both padding and cropping happen below
    with pytest.raises(ValueError, match="length"):
        test.dataset()

    fixed = load_fsdd("test", length=8000)
    assert fixed.waveforms.shape == (300, 8000) and fixed.waveforms.dtype == torch.float32
    assert fixed.lengths.tolist() == test.lengths.clamp(max=8000).tolist()
    for w, full in zip(fixed.waveforms, test.waveforms):
        n = min(len(full), 8000)
        assert torch.equal(w[:n], full[:n]) and not w[n:].any()
    x, y = fixed.dataset()[0]
    assert x.shape == (8000,) and y == fixed.labels[0]

    # the reader agrees with the wave module's own view of a file
    path = REAL / "fsdd/recordings" / test.files[0]
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        n = w.getnframes()
    x, rate = read_wav(path)
    assert rate == 8000 and x.shape == (n,) and torch.equal(x, test.waveforms[0])


def test_fsdd_bad_arguments():
    with pytest.raises(ValueError, match="split"):
        load_fsdd("valid")
    with pytest.raises(ValueError, match="length"):
        load_fsdd("test", length=0)


def test_unreadable_wav_names_the_file(tmp_path):
    garbage = tmp_path / "7_nobody_0.wav"
    garbage.write_bytes(b"this is not a wav file")
    with pytest.raises(DataError, match="Unreadable wav") as err:
        read_wav(garbage)
    assert str(garbage) in str(err.value) and "Fix" in str(err.value)


@needs_data
def test_truncated_wav_names_the_file(tmp_path):
    short = tmp_path / "0_george_0.wav"
    data = (REAL / "fsdd/recordings/0_george_0.wav").read_bytes()
    short.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError) as err:
        read_wav(short)
    assert str(short) in str(err.value)


# ---------------------------------------------------------------------------------------
# failure modes
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", list(LOADERS))
def test_missing_data_root(name, tmp_path, monkeypatch):
    missing = tmp_path / "no-such-folder"
    monkeypatch.setenv("COURSE_DATA", str(missing))
    loader, _ = LOADERS[name]
    with pytest.raises(DataError) as err:
        loader()
    msg = str(err.value)
    assert str(missing) in msg and "COURSE_DATA" in msg and "Fix" in msg


@pytest.mark.parametrize("name", list(LOADERS))
def test_missing_file_offline(name, tmp_root):
    loader, rel = LOADERS[name]
    with pytest.raises(DataError) as err:
        loader()
    msg = str(err.value)
    assert "Missing data file" in msg and str(tmp_root / rel) in msg
    assert "Fix" in msg and "COURSE_DATA" in msg
    assert "COURSE_OFFLINE" in msg  # every loader says that downloads are switched off
    assert list(tmp_root.iterdir()) == []  # nothing created while offline


# name -> (files to copy into the temporary root, the one to corrupt)
CORRUPT = {
    "mnist": (["MNIST/raw/t10k-images-idx3-ubyte", "MNIST/raw/t10k-labels-idx1-ubyte"],
              "MNIST/raw/t10k-labels-idx1-ubyte"),
    "shakespeare": (["tinyshakespeare/input.txt"], "tinyshakespeare/input.txt"),
    "tang-300": (["chinese-poetry/全唐诗/唐诗三百首.json"], "chinese-poetry/全唐诗/唐诗三百首.json"),
    "conll": (["conll2003/valid.txt"], "conll2003/valid.txt"),
    "multi30k": (["multi30k/val.en.gz", "multi30k/val.de.gz"], "multi30k/val.de.gz"),
    "fsdd": (None, "fsdd/recordings/3_theo_2.wav"),  # None: the whole recordings folder
}


@needs_data
@pytest.mark.parametrize("name", list(CORRUPT))
def test_corrupt_file(name, tmp_root):
    rels, bad = CORRUPT[name]
    if rels is None:
        shutil.copytree(REAL / "fsdd/recordings", tmp_root / "fsdd/recordings")
    else:
        _copy(rels, tmp_root)
    _flip_byte(tmp_root / bad)
    with pytest.raises(DataError) as err:
        LOADERS[name][0]()
    msg = str(err.value)
    assert "Corrupt" in msg and str(tmp_root / bad) in msg and "Fix" in msg


class _BrokenResponse:
    """A download that delivers a few blocks and then loses the connection."""

    def __init__(self, blocks: int = 3):
        self.blocks = blocks

    def read(self, n: int = -1) -> bytes:
        if self.blocks == 0:
            raise OSError("connection reset by peer (simulated)")
        self.blocks -= 1
        return b"x" * 4096

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _serve(monkeypatch, files: dict[str, bytes]) -> list[str]:
    """Replace urlopen with a fake internet that knows exactly ``files`` (url -> body)."""
    requested: list[str] = []

    def urlopen(url, timeout=None):
        requested.append(url)
        if url not in files:
            raise OSError(f"404 for {url} (fake internet)")
        body = files[url]
        return _BrokenResponse() if body is None else io.BytesIO(body)

    monkeypatch.setattr(core.urllib.request, "urlopen", urlopen)
    monkeypatch.setenv("COURSE_OFFLINE", "0")
    return requested


def test_interrupted_download_leaves_nothing(tmp_root, monkeypatch):
    url = text._SHAKESPEARE_URL
    requested = _serve(monkeypatch, {url: None})
    with pytest.raises(DataError) as err:
        load_tiny_shakespeare()
    assert requested == [url]
    msg = str(err.value)
    assert "Could not download" in msg and url in msg and str(tmp_root / "tinyshakespeare/input.txt") in msg
    assert "Fix" in msg
    folder = tmp_root / "tinyshakespeare"
    assert not (folder / "input.txt").exists()
    assert list(folder.iterdir()) == []  # no partial file, no *.part


def test_download_with_wrong_checksum_is_rejected(tmp_root, monkeypatch):
    url = "https://raw.githubusercontent.com/heathher/Named-Entity-Recognition/f58fe48cefba693c6f454c3e94d89b37dcb7ce98/conll2003/test.txt"
    _serve(monkeypatch, {url: b"EU B-ORG \n"})
    with pytest.raises(DataError) as err:
        load_conll2003("test")
    msg = str(err.value)
    assert url in msg and "sha256" in msg and "upstream has changed" in msg and "Fix" in msg
    assert "try again later" not in msg  # a pinned source does not heal by waiting
    assert list((tmp_root / "conll2003").iterdir()) == []


def _module_urls() -> dict[str, str]:
    """Every module-level string constant of course_lib that holds a URL: "module.NAME" -> value."""
    import importlib
    import pkgutil

    import course_lib

    urls = {}
    for info in pkgutil.walk_packages(course_lib.__path__, "course_lib."):
        if info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, str) and "://" in value:
                urls[f"{info.name}.{name}"] = value
    return urls


def test_no_download_source_is_on_a_moving_branch():
    """Each source is pinned to a commit whose files match SHA256SUMS; a branch name would move under it."""
    urls = _module_urls()
    pinned = {"course_lib.data.text._SHAKESPEARE_URL", "course_lib.data.text._TANG_URL",
              "course_lib.data.text._CONLL_URL", "course_lib.data.text._MULTI30K_URL", "course_lib.data.audio._ZIP_URL"}
    assert pinned <= set(urls), sorted(urls)  # the test sees the sources
    for name, url in urls.items():
        assert not re.search(r"/(master|main|HEAD)(/|\.zip)|refs/heads", url), f"{name} = {url}"
        if "github" in url:
            assert re.search(r"/[0-9a-f]{40}(/|\.zip)", url), f"{name} = {url} names no commit"


@needs_data
def test_text_downloads_go_to_the_offline_layout(tmp_root, monkeypatch):
    """Every text loader fetches from its public URL into the same relative path as the offline copy."""
    gh = "https://raw.githubusercontent.com"
    urls = {
        text._SHAKESPEARE_URL: "tinyshakespeare/input.txt",
        f"{gh}/heathher/Named-Entity-Recognition/f58fe48cefba693c6f454c3e94d89b37dcb7ce98/conll2003/valid.txt":
            "conll2003/valid.txt",
        f"{gh}/multi30k/dataset/a3d2e0d26b56f3846f66a952536ffed4e401d05a/data/task1/raw/val.en.gz":
            "multi30k/val.en.gz",
        f"{gh}/multi30k/dataset/a3d2e0d26b56f3846f66a952536ffed4e401d05a/data/task1/raw/val.fr.gz":
            "multi30k/val.fr.gz",
        f"{gh}/chinese-poetry/chinese-poetry/99ebbef7e1345c0985c44b9fd96a3f9e776f117b/{quote('全唐诗')}/"
        f"{quote('唐诗三百首.json')}": "chinese-poetry/全唐诗/唐诗三百首.json",
    }
    requested = _serve(monkeypatch, {url: (REAL / rel).read_bytes() for url, rel in urls.items()})
    assert len(load_tiny_shakespeare().chars) == 65
    assert len(load_conll2003("valid")) == 3_250
    assert len(load_multi30k("val")) == 1_014
    assert len(load_tang_poems("300")) == 366
    assert len(load_tang_poems("300")) == 366  # the second call reads the local copy: no new request
    assert sorted(requested) == sorted(urls)
    for rel in urls.values():
        assert (tmp_root / rel).read_bytes() == (REAL / rel).read_bytes()
    assert not list(tmp_root.rglob("*.part"))


@needs_data
def test_fsdd_download_extracts_into_place(tmp_root, tmp_path, monkeypatch):
    """The GitHub archive is unpacked so that only recordings/*.wav land in fsdd/recordings."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("free-spoken-digit-dataset-26eb9aaf76e81b692f806f9140c2d2777410d7a1/README.md", "FSDD")
        zf.writestr("free-spoken-digit-dataset-26eb9aaf76e81b692f806f9140c2d2777410d7a1/utils/spectogramer.py", "")
        for path in sorted((REAL / "fsdd/recordings").glob("*.wav")):
            zf.write(path, f"free-spoken-digit-dataset-26eb9aaf76e81b692f806f9140c2d2777410d7a1/recordings/{path.name}")
    url = audio._ZIP_URL
    requested = _serve(monkeypatch, {url: archive.getvalue()})
    # a few recordings already there: they are kept, the rest is added
    _copy(["fsdd/recordings/0_george_0.wav", "fsdd/recordings/9_theo_49.wav"], tmp_root)
    test = load_fsdd("test")
    assert requested == [url] and len(test) == 300
    assert sorted(p.name for p in (tmp_root / "fsdd").iterdir()) == ["recordings"]  # no zip, no temp folder
    assert len(list((tmp_root / "fsdd/recordings").iterdir())) == 3000
    assert len(load_fsdd("train")) == 2700 and requested == [url]


@needs_data
def test_fsdd_archive_with_a_changed_recording_is_rejected(tmp_root, monkeypatch):
    """The zip itself is rebuilt by GitHub on demand, so its recordings are what is checked, before any lands."""
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as zf:
        for path in sorted((REAL / "fsdd/recordings").glob("*.wav")):
            data = path.read_bytes()
            if path.name == "3_theo_7.wav":
                data = data[:-2] + b"\x00\x01"  # one sample edited upstream
            zf.writestr(f"free-spoken-digit-dataset/recordings/{path.name}", data)
    _serve(monkeypatch, {audio._ZIP_URL: archive.getvalue()})
    with pytest.raises(DataError) as err:
        load_fsdd("test")
    msg = str(err.value)
    assert "3_theo_7.wav" in msg and "upstream has changed" in msg and "Fix" in msg
    assert list((tmp_root / "fsdd").iterdir()) == []  # no recordings, no zip, no temp folder


def test_fsdd_bad_archive_leaves_nothing(tmp_root, monkeypatch):
    url = audio._ZIP_URL
    _serve(monkeypatch, {url: b"PK not really a zip"})
    with pytest.raises(DataError) as err:
        load_fsdd("test")
    assert url in str(err.value) and "Fix" in str(err.value)
    assert list((tmp_root / "fsdd").iterdir()) == []


def test_fsdd_interrupted_download_leaves_nothing(tmp_root, monkeypatch):
    url = audio._ZIP_URL
    _serve(monkeypatch, {url: None})
    with pytest.raises(DataError, match="Could not download"):
        load_fsdd("train")
    assert list((tmp_root / "fsdd").iterdir()) == []


@needs_data
def test_mnist_download_falls_back_to_the_next_mirror_and_unpacks_atomically(tmp_root, monkeypatch):
    """torchvision lists several mirrors; when the first fails the next one serves the .gz files, which are
    unpacked into MNIST/raw and removed. The train files are already there, so only the test files are fetched."""
    import gzip

    from course_lib.data.images import _torchvision_class

    _copy(["MNIST/raw/train-images-idx3-ubyte", "MNIST/raw/train-labels-idx1-ubyte"], tmp_root)
    first, second = _torchvision_class("MNIST").mirrors[:2]
    names = ["t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"]
    requested = _serve(monkeypatch, {second + f"{n}.gz": gzip.compress((REAL / "MNIST/raw" / n).read_bytes(), 1)
                                     for n in names})
    test = load_mnist("test")
    assert test.x.shape == (10_000, 1, 28, 28)
    assert requested == [mirror + f"{n}.gz" for n in names for mirror in (first, second)]  # first fails, then second
    for n in names:
        assert (tmp_root / "MNIST/raw" / n).read_bytes() == (REAL / "MNIST/raw" / n).read_bytes()
    assert not list(tmp_root.rglob("*.gz")) and not list(tmp_root.rglob("*.part"))


def test_mnist_download_failing_on_every_mirror_names_each_and_leaves_nothing(tmp_root, monkeypatch):
    from course_lib.data.images import _torchvision_class

    mirrors = _torchvision_class("MNIST").mirrors
    gz = "train-images-idx3-ubyte.gz"
    _serve(monkeypatch, {mirrors[0] + gz: None})  # the first mirror breaks off mid-file, the others 404
    with pytest.raises(DataError) as err:
        load_mnist("train")
    msg = str(err.value)
    assert all(mirror + gz in msg for mirror in mirrors) and "Fix" in msg
    assert not [p for p in tmp_root.rglob("*") if p.is_file()], "no partial .gz or unpacked file is left"
