"""Fetch the course's datasets into the data root ahead of time (for a workshop or a flight).

    python -m course_lib.data            # everything (about 160 MB)
    python -m course_lib.data mnist conll2003
"""
import sys

from . import (data_root, load_conll2003, load_fashion_mnist, load_fsdd, load_mnist, load_multi30k,
               load_tang_poems, load_tiny_shakespeare)

LOADERS = {
    "mnist": lambda: (load_mnist("train"), load_mnist("test")),
    "fashion_mnist": lambda: (load_fashion_mnist("train"), load_fashion_mnist("test")),
    "tinyshakespeare": load_tiny_shakespeare,
    "tang_poems": lambda: (load_tang_poems("all"), load_tang_poems("300")),
    "conll2003": lambda: [load_conll2003(s) for s in ("train", "valid", "test")],
    "multi30k": lambda: [load_multi30k(s, "en", t) for s in ("train", "val", "test") for t in ("de", "fr")],
    "fsdd": lambda: load_fsdd("all"),
}


def main(names: list[str]) -> int:
    unknown = [n for n in names if n not in LOADERS]
    if unknown:
        print(f"Unknown dataset(s) {unknown}; choose from {', '.join(LOADERS)}.")
        return 2
    print(f"data root: {data_root()}")
    for name in names or LOADERS:
        LOADERS[name]()
        print(f"  {name}: ok (present and checked)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
