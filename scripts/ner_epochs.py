"""What longer fine-tuning buys notebook 12: its `cpu` recipe trained for more epochs, scored after each.

Same encoder, head, batches (bucket 50, batch 32), AdamW (weight decay 0.01), peak learning rate 1e-4,
10% warm-up and a cosine decay to zero over the whole run, gradient clipping at 1: only the number of
epochs differs from the notebook's `cpu` profile. The learning rate is the notebook's, not re-tuned for
the longer run. After every epoch the model is scored on the full validation set; the test set is scored
once, at the end. Writes results/12_ner_finetuning/studies/epochs_<device>.json (atomically), which the
notebook reads and shows beside its own one-epoch run.

    COURSE_DATA=... python scripts/ner_epochs.py --epochs 3      # about 12 minutes on 2 CPU cores
"""
from __future__ import annotations

import argparse
import json
import platform
import subprocess
import time
from pathlib import Path

import torch

from course_lib.data.text import load_conll2003
from course_lib.files import atomic_write
from course_lib.ner import batches, encode, entity_scores, load_encoder, ner_loss, predict_tags
from course_lib.train import cosine_lr, fit

ROOT = Path(__file__).resolve().parents[1]
RECIPE = dict(max_length=128, batch_size=32, lr=1e-4, weight_decay=0.01, warmup_share=0.1, bucket=50, grad_clip=1.0)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None,
                        help="first N sentences per split: a quick try, written to /tmp")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    r = RECIPE
    splits = {name: load_conll2003(name)[: args.limit] for name in ("train", "valid", "test")}
    tokenizer, model = load_encoder()
    ex = {name: encode(s, tokenizer, max_length=r["max_length"]) for name, s in splits.items()}
    gold = {name: [s.tags for s in sents] for name, sents in splits.items()}
    loader = batches(ex["train"], r["batch_size"], shuffle=True, generator=torch.Generator().manual_seed(0),
                     pad_id=tokenizer.pad_token_id, bucket=r["bucket"])
    steps = args.epochs * len(loader)
    warmup = max(1, round(r["warmup_share"] * steps))
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=r["lr"], weight_decay=r["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_lr(s, steps, warmup, min_ratio=0.0))
    history, curve, train_s = None, [], 0.0
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        history = fit(model, optimizer, ner_loss, loader, steps=epoch * len(loader),
                      start_step=(epoch - 1) * len(loader), history=history, scheduler=scheduler,
                      grad_clip=r["grad_clip"], log_every=50, desc=f"epoch {epoch}")
        train_s += time.perf_counter() - start
        f1 = entity_scores(gold["valid"], predict_tags(model, ex["valid"], batch_size=64))["f1"]
        curve.append({"epoch": epoch, "valid_f1": round(f1, 4), "train_s": round(train_s, 1)})
        print(f"epoch {epoch}: validation F1 {f1:.4f}  ({train_s:.0f} s of training so far)", flush=True)
    test = entity_scores(gold["test"], predict_tags(model, ex["test"], batch_size=64))
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()
    out = {"study": "12_ner_finetuning epochs",
           "recipe": {**r, "epochs": args.epochs, "steps": steps, "warmup": warmup},
           "device": f"cpu ({args.threads} threads)", "machine": platform.machine(), "commit": commit,
           "curve": curve, "test_f1": round(test["f1"], 4), "test_precision": round(test["precision"], 4),
           "test_recall": round(test["recall"], 4)}
    path = ROOT / "results" / "12_ner_finetuning" / "studies" / "epochs_cpu.json"
    if args.limit is not None:
        path = Path("/tmp") / "ner_epochs_limited.json"
    with atomic_write(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
