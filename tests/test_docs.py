"""The glossary (docs/glossary.md): well-formed bilingual tables whose notebook links resolve,
linked from the README."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GLOSSARY = ROOT / "docs" / "glossary.md"
CJK = re.compile(r"[\u4e00-\u9fff]")


def glossary_rows():
    rows = []
    for line in GLOSSARY.read_text(encoding="utf-8").splitlines():
        if line.startswith("|") and not line.startswith("|---") and not line.startswith("| English"):
            rows.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    return rows


def test_glossary_rows_are_complete_and_bilingual():
    rows = glossary_rows()
    assert len(rows) >= 60
    for row in rows:
        assert len(row) == 4 and all(row), f"a glossary row needs English | 中文 | notebook | definition: {row}"
        assert CJK.search(row[1]), f"no Chinese term for {row[0]!r}"
    english = [row[0].lower() for row in rows]
    assert len(english) == len(set(english)), "a term is listed twice"
    for core in ["generative adversarial network (gan)", "variational autoencoder (vae)", "diffusion model",
                 "attention mechanism", "pre-training / fine-tuning"]:
        assert core in english


def test_glossary_notebook_links_resolve_and_cover_the_course():
    text = GLOSSARY.read_text(encoding="utf-8")
    links = re.findall(r"\]\((\.\./notebooks/[^)]+)\)", text)
    assert links
    for link in links:
        target = (GLOSSARY.parent / link).resolve()
        assert target.is_file(), f"glossary links to a missing notebook: {link}"
    linked = {Path(link).name for link in links}
    numbers = {re.match(r"\[([^\]]+)\]", row[2]).group(1) for row in glossary_rows()}  # "[08b](...)" -> "08b"
    for nb in sorted((ROOT / "notebooks").glob("[0-9][0-9]*_*.ipynb")):
        if nb.name.split("_")[0] not in numbers:
            raise AssertionError(f"no glossary term points to {nb.name}")
    assert linked <= {p.name for p in (ROOT / "notebooks").glob("*.ipynb")}


def test_readme_links_the_glossary():
    assert "docs/glossary.md" in (ROOT / "README.md").read_text(encoding="utf-8")
