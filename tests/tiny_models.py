"""A tiny randomly initialized BERT token classifier and token batches, shared by the LoRA and adapter tests."""
import torch
import transformers

D, FF, LAYERS, LABELS = 32, 64, 2, 5  # width, feed-forward width, layers, labels


def tiny_bert(seed=0):
    torch.manual_seed(seed)
    config = transformers.BertConfig(vocab_size=100, hidden_size=D, num_hidden_layers=LAYERS, num_attention_heads=4,
                                     intermediate_size=FF, num_labels=LABELS)
    return transformers.BertForTokenClassification(config).eval()


def tokens(B=3, T=7, seed=0):
    return torch.randint(0, 100, (B, T), generator=torch.Generator().manual_seed(seed))
