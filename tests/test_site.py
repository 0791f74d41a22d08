"""The static site and the slides (scripts/build_site.py): every notebook's page and deck builds
from the stored outputs, shows every stored figure, and is reachable from the contents page."""
import re
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
sys.path.insert(0, str(ROOT / "scripts"))

import build_site  # noqa: E402
import sync_notebooks  # noqa: E402


class Sections(HTMLParser):
    """Counts <section> elements: top-level ones (slides) and all (slides + sub-slides)."""

    def __init__(self):
        super().__init__()
        self.depth = self.top = self.total = 0

    def handle_starttag(self, tag, attrs):
        if tag == "section":
            self.top += self.depth == 0
            self.total += 1
            self.depth += 1

    def handle_endtag(self, tag):
        if tag == "section":
            self.depth -= 1


def png_outputs(nb) -> int:
    return sum("image/png" in o.get("data", {})
               for c in nb.cells if c.cell_type == "code" for o in c.outputs)


def hrefs(html: str) -> list[str]:
    return re.findall(r'<a href="([^"]+)"', html)


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site") / "site"
    entries = build_site.build_site(out)
    # what the site was built from: the notebooks on disk at that moment
    return out, {e.path.stem: (e, nbformat.read(e.path, as_version=4)) for e in entries}


def test_every_notebook_has_a_page_with_all_its_figures(site):
    out, built = site
    assert sorted(built) == [p.stem for p in NOTEBOOKS]
    for stem, (entry, nb) in built.items():
        page = (out / f"{stem}.html").read_text(encoding="utf-8")
        assert page.count('src="data:image/png;base64,') == png_outputs(nb), \
            f"{stem}.html: embedded PNG figures differ from the notebook's stored image/png outputs"
        assert entry.title and entry.title in page.replace("&middot;", "·")
        assert entry.title.startswith(stem.split("_")[0] + " · ")


def test_contents_page_links_every_page_in_order_and_pages_link_their_neighbours(site):
    out, built = site
    stems = list(built)
    index = (out / "index.html").read_text(encoding="utf-8")
    pages = [h for h in hrefs(index) if h.endswith(".html") and "/" not in h]
    assert pages == [f"{s}.html" for s in stems], "index.html must link every page, in order"
    for stem in stems:
        assert f'href="slides/{stem}.slides.html"' in index
        assert built[stem][0].description and built[stem][0].description in index.replace("&#x27;", "'")
    for i, stem in enumerate(stems):
        links = hrefs((out / f"{stem}.html").read_text(encoding="utf-8"))
        assert "index.html" in links, f"{stem}.html does not link back to the contents"
        if i > 0:
            assert f"{stems[i - 1]}.html" in links, f"{stem}.html lacks its 'previous' link"
        if i + 1 < len(stems):
            assert f"{stems[i + 1]}.html" in links, f"{stem}.html lacks its 'next' link"
    assert all((out / h).is_file() for h in hrefs(index)), "index.html links a missing file"


def test_slides_follow_the_notebook_structure(site):
    out, built = site
    for stem, (_, nb) in built.items():
        kinds = [c.metadata.get("slideshow", {}).get("slide_type") for c in nb.cells]
        assert kinds == [sync_notebooks.slide_type(c) for c in nb.cells], \
            f"{stem}: slideshow metadata is stale: run `python scripts/sync_notebooks.py`"
        sections = Sections()
        sections.feed((out / "slides" / f"{stem}.slides.html").read_text(encoding="utf-8"))
        n_slide, n_sub = kinds.count("slide"), kinds.count("subslide")
        assert sections.top > 1 and sections.top == n_slide, \
            f"{stem}: {sections.top} slides for {n_slide} cells that start a slide"
        # reveal.js nests each slide's sub-slides as <section>s, the first one implicit
        assert sections.total == 2 * n_slide + n_sub, f"{stem}: {sections.total} <section>s"
        assert sections.depth == 0, f"{stem}: unbalanced <section> tags"


def test_slide_types_come_from_headings():
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    setup = code("", metadata={"tags": ["setup"]})
    solution = code("x = 1", metadata={"jupyter": {"source_hidden": True}})
    cells = [md("# 00 · Title"), setup, md("## 1. Part"), code("1"), md("### Detail"),
             md("Text with a\n## heading inside"), solution]
    assert [sync_notebooks.slide_type(c) for c in cells] == \
        ["slide", "skip", "slide", "-", "subslide", "-", "skip"]


def _tiny_notebook(path: Path, title: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {title}\n\nA tiny notebook. It has one part."),
                nbformat.v4.new_markdown_cell("## Part"), nbformat.v4.new_code_cell("1")]
    for cell in nb.cells:
        cell.metadata["slideshow"] = {"slide_type": sync_notebooks.slide_type(cell)}
    nbformat.write(nb, path)
    return path


def test_the_site_is_replaced_as_a_whole_and_a_failed_build_keeps_the_old_one(tmp_path, monkeypatch):
    out = tmp_path / "site"
    out.mkdir()
    (out / "stale.html").write_text("from an earlier build")
    good = _tiny_notebook(tmp_path / "98_tiny.ipynb", "98 · Tiny")
    build_site.build_site(out, notebooks=[good], jobs=1)
    assert sorted(p.name for p in out.iterdir()) == ["98_tiny.html", "index.html", "slides"]
    assert "A tiny notebook" in (out / "index.html").read_text()  # description fallback
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "temporary folders left"

    bad = tmp_path / "99_bad.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("no title")]), bad)
    with pytest.raises(ValueError, match="first cell"):
        build_site.build_site(out, notebooks=[good, bad], jobs=1)
    other = _tiny_notebook(tmp_path / "97_other.ipynb", "97 · Other")

    def disk_full(page, entries, i, slides):
        if i == 1:
            raise OSError("disk full")
        return page
    monkeypatch.setattr(build_site, "decorate", disk_full)  # fails half-way through writing
    with pytest.raises(OSError, match="disk full"):
        build_site.build_site(out, notebooks=[other, good], jobs=1)
    assert sorted(p.name for p in out.iterdir()) == ["98_tiny.html", "index.html", "slides"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == [], "temporary folders left"
