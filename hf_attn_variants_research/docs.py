"""One source per fact: the tables of README.md and docs/*.md that come from the variant registry or
from results files are written by this script between marker comments, never by hand.

    python -m hf_attn_variants_research.docs            # rewrite every generated block
    python -m hf_attn_variants_research.docs --check    # exit 1 and name the stale pages

A block is

    <!-- generated: KIND ARGS... (python -m hf_attn_variants_research.docs) -->
    ...generated text...
    <!-- end generated -->

with KIND one of

- ``variants``: the variant table from the registry (``hf_attn_variants.VARIANTS``: name, paper,
  summary, the config fields it reads);
- ``table FILE N``: the N-th markdown table (from 1) of FILE, a path relative to the repository,
  copied verbatim, with a line naming its source.

``tests/test_docs.py`` fails when a page differs from what this script writes.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGES = ("README.md", "docs/*.md")
BLOCK = re.compile(r"(<!-- generated: (?P<spec>[^>]*?) \(python -m hf_attn_variants_research\.docs\) -->\n)"
                   r"(?P<body>.*?)"
                   r"(<!-- end generated -->)", re.S)


def markdown_tables(text: str) -> list[str]:
    """Every markdown table of a text (runs of lines starting with ``|``), in order."""
    tables, current = [], []
    for line in text.splitlines():
        if line.startswith("|"):
            current.append(line)
        elif current:
            tables.append("\n".join(current))
            current = []
    if current:
        tables.append("\n".join(current))
    return tables


def short_paper(citation: str) -> str:
    """'Guo, Qiu, Xue, Zhang, "Low-Rank ...", IEEE/ACM TASLP 27(12), 2019' -> 'Guo et al. 2019'."""
    authors = citation.split('"')[0]
    first = authors.split(",")[0].split(" et al.")[0].strip()
    year = re.findall(r"(?:19|20)\d\d", citation)[-1]
    return f"{first} et al. {year}"


def variant_table() -> str:
    import hf_attn_variants as hv
    from hf_attn_variants.hfav_variants import PAPERS

    rows = ["| variant | paper | what a head computes | config fields it reads |", "|---|---|---|---|"]
    for name, spec in hv.VARIANTS.items():
        summary = spec.summary.replace("|", "\\|")
        fields = ", ".join(f"`{f}`" for f in spec.settings) or "none"
        rows.append(f"| `{name}` | {short_paper(PAPERS[spec.paper])} | {summary} | {fields} |")
    return "\n".join(rows)


def source_table(path: str, index: str) -> str:
    tables = markdown_tables((ROOT / path).read_text())
    n = int(index)
    if not 1 <= n <= len(tables):
        raise ValueError(f"table {path} {index}: {path} has {len(tables)} tables")
    return f"{tables[n - 1]}\n\n(Table {n} of [`{path}`]({{link}}{path}).)"


def render(spec: str, page: Path) -> str:
    kind, *args = spec.split()
    if kind == "variants" and not args:
        text = variant_table()
    elif kind == "table" and len(args) == 2:
        text = source_table(*args)
    else:
        raise ValueError(f"{page}: generated block {spec!r}: expected 'variants' or 'table FILE N'")
    link = os.path.relpath(ROOT, page.parent).replace(os.sep, "/") + "/"
    return text.replace("{link}", "" if link == "./" else link) + "\n"


def regenerate(page: Path) -> str:
    """The page's text with every generated block rewritten."""
    return BLOCK.sub(lambda m: m.group(1) + render(m.group("spec"), page) + m.group(4), page.read_text())


def pages() -> list[Path]:
    return sorted(p for pattern in PAGES for p in ROOT.glob(pattern))


def stale_pages() -> list[Path]:
    return [p for p in pages() if regenerate(p) != p.read_text()]


def write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hf_attn_variants_research.docs",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="only report stale pages (exit 1 if any)")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages()
        for p in stale:
            print(f"stale: {p.relative_to(ROOT)} (python -m hf_attn_variants_research.docs rewrites it)")
        return 1 if stale else 0
    for p in pages():
        text = regenerate(p)
        if text != p.read_text():
            write_text(p, text)
            print(f"wrote {p.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
