"""Render every notebook, with its stored outputs, into a static HTML site with slides.

    python scripts/build_site.py                  # -> build/site/index.html
    python scripts/build_site.py --out DIR        # somewhere else
    python scripts/build_site.py --no-slides      # pages only (about half the time)

Nothing is executed: the pages show the outputs committed in notebooks/ (re-run a notebook with
scripts/run_notebook.py to refresh them). The site has

- ``index.html``: the table of contents (number, title, what you learn, links to page and slides);
- ``NN_name.html``: one page per notebook (nbconvert's HTML export, figures embedded), with
  previous / contents / next links at the top and bottom;
- ``slides/NN_name.slides.html``: the notebook as reveal.js slides (nbconvert's slides export;
  the slide breaks come from the cells' ``slideshow`` metadata that scripts/sync_notebooks.py
  writes: every ``#``/``##`` heading starts a slide, every ``###`` heading a sub-slide).

The pages load MathJax and reveal.js from their CDNs when opened, so formulas and slide
navigation need a network connection in the browser; text and figures do not.
The site is built in a temporary folder next to ``--out`` and then swapped in, so a failed
build leaves the previous site as it was.
"""
from __future__ import annotations

import argparse
import html
import os
import re
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nbformat

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
DEFAULT_OUT = ROOT / "build" / "site"
COURSE_TITLE = "Generative AI from scratch"

NAV_CSS = """<style>
.course-nav { display: flex; justify-content: space-between; gap: 1em; max-width: 1100px;
  margin: 0.5em auto; padding: 0.5em 1em; font: 15px/1.4 system-ui, sans-serif;
  border-bottom: 1px solid #ddd; }
.course-nav.bottom { border-top: 1px solid #ddd; border-bottom: none; }
.course-nav a { text-decoration: none; }
</style>"""


@dataclass
class Entry:
    path: Path
    number: str         # "03"
    title: str          # "03 · Variational autoencoders"
    description: str    # one line: what you learn

    @property
    def page(self) -> str:
        return f"{self.path.stem}.html"

    @property
    def slides(self) -> str:
        return f"slides/{self.path.stem}.slides.html"


def _syllabus() -> dict[str, str]:
    """The README's one-line descriptions (scripts/update_readme.py), where available."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import update_readme
        return dict(getattr(update_readme, "SYLLABUS", []))
    except Exception:  # noqa: BLE001  (the site does not depend on the README tooling)
        return {}


def describe(path: Path, syllabus: dict[str, str]) -> Entry:
    nb = nbformat.read(path, as_version=4)
    first = nb.cells[0].source if nb.cells else ""
    if not nb.cells or nb.cells[0].cell_type != "markdown" or not first.startswith("# "):
        raise ValueError(f"{path.name}: the first cell must be markdown starting with '# Title'.")
    title = first.partition("\n")[0][2:].strip()
    description = syllabus.get(path.stem)
    if not description:  # the first prose paragraph's first sentence
        paragraphs = [p.strip() for p in first.split("\n\n")[1:]]
        prose = next((p for p in paragraphs if p and not p.startswith(("[![", "|", "**", "-", "#"))), "")
        description = re.split(r"(?<=[.!?])\s", " ".join(prose.split()), maxsplit=1)[0]
    return Entry(path, path.stem.split("_")[0], title, description)


def _exporters():
    from nbconvert import HTMLExporter, SlidesExporter
    exporters = HTMLExporter(), SlidesExporter()
    for exporter in exporters:
        # nbconvert's templates run the Pygments-highlighted code of every cell through bleach,
        # even with sanitize_html off (the default, kept here: these are our own notebooks).
        # Pygments already escapes the source; skipping the second pass saves ~40% of the build.
        if not exporter.sanitize_html:
            exporter.register_filter("clean_html", lambda text: text)
    return exporters


_EXPORTERS = None


def render(path: Path, title: str, slides: bool) -> tuple[str, str | None]:
    """(page HTML, slides HTML or None) of one notebook, from its stored outputs."""
    global _EXPORTERS
    if _EXPORTERS is None:
        _EXPORTERS = _exporters()
    page_exporter, slides_exporter = _EXPORTERS
    nb = nbformat.read(path, as_version=4)
    resources = {"metadata": {"name": title}}
    page, _ = page_exporter.from_notebook_node(nb, resources=dict(resources))
    deck = slides_exporter.from_notebook_node(nb, resources=dict(resources))[0] if slides else None
    return page, deck


def _nav(entries: list[Entry], i: int, where: str) -> str:
    links = []
    if i > 0:
        links.append(f'<a href="{entries[i - 1].page}">&larr; {html.escape(entries[i - 1].title)}</a>')
    else:
        links.append("<span></span>")
    links.append(f'<a href="index.html">Contents</a> &middot; <a href="{entries[i].slides}">Slides</a>')
    if i + 1 < len(entries):
        links.append(f'<a href="{entries[i + 1].page}">{html.escape(entries[i + 1].title)} &rarr;</a>')
    else:
        links.append("<span></span>")
    return f'<nav class="course-nav {where}">' + "".join(links) + "</nav>"


def _link_notebooks(text: str, stems: set[str]) -> str:
    """Links between notebooks (``03_vae.ipynb``) point to their pages (``03_vae.html``)."""
    def repl(m: re.Match) -> str:
        stem = m.group(2)
        return f'href="{stem}.html{m.group(3) or ""}"' if stem in stems else m.group(0)
    return re.sub(r'href="((?:\.\./)?(?:notebooks/)?|\./)(\d\d[a-z]?_[\w-]+)\.ipynb(#[^"]*)?"', repl, text)


def decorate(page: str, entries: list[Entry], i: int, slides: bool) -> str:
    """Add the navigation bars and rewrite links between notebooks."""
    top, bottom = _nav(entries, i, "top"), _nav(entries, i, "bottom")
    if not slides:
        top = top.replace(f' &middot; <a href="{entries[i].slides}">Slides</a>', "")
        bottom = bottom.replace(f' &middot; <a href="{entries[i].slides}">Slides</a>', "")
    page = page.replace("</head>", NAV_CSS + "\n</head>", 1)
    page, n = re.subn(r"(<body[^>]*>)", lambda m: m.group(1) + "\n" + top, page, count=1)
    if n != 1:
        raise ValueError(f"{entries[i].path.name}: the exported page has no <body>")
    head, sep, tail = page.rpartition("</body>")
    page = head + bottom + "\n" + sep + tail
    return _link_notebooks(page, {e.path.stem for e in entries})


def index_page(entries: list[Entry], slides: bool) -> str:
    rows = []
    for e in entries:
        deck = f'<td><a href="{e.slides}">slides</a></td>' if slides else ""
        rows.append(f'<tr><td>{e.number}</td><td><a href="{e.page}">{html.escape(e.title)}</a></td>'
                    f"<td>{html.escape(e.description)}</td>{deck}</tr>")
    deck_head = "<th>slides</th>" if slides else ""
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{COURSE_TITLE}</title>
<style>
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; vertical-align: top; padding: 0.4em 0.6em; border-bottom: 1px solid #ddd; }}
</style>
</head>
<body>
<h1>{COURSE_TITLE}</h1>
<p>Every notebook of the course with the outputs of its last recorded run.
Open a notebook in Jupyter to run it yourself.</p>
<nav id="contents">
<h2>Contents</h2>
<table>
<thead><tr><th>#</th><th>notebook</th><th>what you learn</th>{deck_head}</tr></thead>
<tbody>
{chr(10).join(rows)}
</tbody>
</table>
</nav>
</body>
</html>
"""


def _swap_in(tmp: Path, out: Path) -> None:
    """Replace ``out`` by ``tmp`` with renames, so readers see the old site or the new one."""
    if out.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        out.rename(old / out.name)
        tmp.rename(out)
        shutil.rmtree(old)
    else:
        tmp.rename(out)


def build_site(out: Path = DEFAULT_OUT, notebooks: list[Path] | None = None, slides: bool = True,
               jobs: int | None = None) -> list[Entry]:
    """Build the site into ``out`` (replaced as a whole); return its entries in order."""
    paths = sorted(notebooks if notebooks is not None else NOTEBOOKS.glob("*.ipynb"))
    if not paths:
        raise ValueError(f"no notebooks to render (looked in {NOTEBOOKS})")
    syllabus = _syllabus()
    entries = [describe(p, syllabus) for p in paths]
    jobs = max(1, min(jobs or os.cpu_count() or 1, len(entries)))
    if jobs > 1:
        with ProcessPoolExecutor(jobs) as pool:
            rendered = list(pool.map(render, paths, [e.title for e in entries], [slides] * len(paths)))
    else:
        rendered = [render(p, e.title, slides) for p, e in zip(paths, entries)]

    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        tmp.chmod(0o755)
        if slides:
            (tmp / "slides").mkdir()
        for i, (entry, (page, deck)) in enumerate(zip(entries, rendered)):
            (tmp / entry.page).write_text(decorate(page, entries, i, slides), encoding="utf-8")
            if slides:
                (tmp / entry.slides).write_text(deck, encoding="utf-8")
        (tmp / "index.html").write_text(index_page(entries, slides), encoding="utf-8")
        _swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return entries


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default {DEFAULT_OUT.relative_to(ROOT)})")
    parser.add_argument("--no-slides", dest="slides", action="store_false", help="skip the reveal.js slides")
    parser.add_argument("--jobs", type=int, default=None, help="parallel workers (default: one per CPU core)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    entries = build_site(args.out, slides=args.slides, jobs=args.jobs)
    print(f"Built {len(entries)} notebook pages{' and slides' if args.slides else ''} in "
          f"{time.perf_counter() - start:.1f} s: {Path(args.out).resolve() / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
