"""The docs stay true: generated tables current (one source per fact), the README's test command is
the one CI runs, every relative link resolves inside the repository, and no page or docstring
cites a file that is not in the repository."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from hf_attn_variants_research import docs

ROOT = Path(__file__).resolve().parents[1]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_no_generated_block_is_stale():
    stale = [str(p.relative_to(ROOT)) for p in docs.stale_pages()]
    assert stale == [], f"run: python -m hf_attn_variants_research.docs ({stale})"


def test_the_pages_have_generated_blocks():
    """The variant table of the README and the tables copied from results files are generated."""
    readme = (ROOT / "README.md").read_text()
    assert "<!-- generated: variants " in readme
    import hf_attn_variants as hv

    block = docs.BLOCK.search(readme).group("body")
    assert [f"`{name}`" for name in hv.VARIANTS] == [row.split("|")[1].strip() for row in block.splitlines()[2:]]
    assert sum(p.read_text().count("<!-- generated: table ") for p in docs.pages()) >= 4


def test_a_stale_table_is_detected(tmp_path):
    page = tmp_path / "page.md"
    fresh = ("intro\n<!-- generated: table benchmarks/results/models.md 1 "
             "(python -m hf_attn_variants_research.docs) -->\n<!-- end generated -->\nafter\n")
    page.write_text(fresh)
    current = docs.regenerate(page)
    source_rows = docs.markdown_tables((ROOT / "benchmarks/results/models.md").read_text())[0].splitlines()
    assert source_rows[2] in current and current.endswith("<!-- end generated -->\nafter\n")
    page.write_text(current)
    assert docs.regenerate(page) == current  # idempotent
    tampered = current.replace(source_rows[2], source_rows[2].replace("|", "| 9 |", 2), 1)
    page.write_text(tampered)
    assert tampered != current and docs.regenerate(page) == current


def test_readme_test_command_is_what_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    installs = [line.strip().removeprefix("python -m ") for line in ci
                if line.strip().startswith("python -m pip install") and "--upgrade" not in line]
    pytest_line = [line.strip() for line in ci if "pytest" in line and not line.strip().startswith("#")]
    readme = (ROOT / "README.md").read_text()
    command = next(line for line in readme.splitlines() if "pytest" in line and line.startswith("python3 -m venv"))
    assert installs and len(pytest_line) == 1
    steps = [s.strip() for s in command.split("&&")]
    assert steps[-1] == pytest_line[0]
    for install in installs:
        assert shlex.split(install) in [shlex.split(s) for s in steps], install


def test_relative_links_resolve_inside_the_repository():
    broken = []
    for page in docs.pages():
        for target in LINK.findall(page.read_text()):
            if target.startswith(("http://", "https://", "#", "mailto:")):
                continue
            path = (page.parent / target.split("#")[0]).resolve()
            if not path.is_relative_to(ROOT) or not path.exists():
                broken.append(f"{page.relative_to(ROOT)}: {target}")
    assert broken == []


def test_nothing_cites_design_md_outside_the_repository():
    files = [*ROOT.glob("hf_attn_variants/**/*.py"), *ROOT.glob("hf_attn_variants_research/*.py"),
             *ROOT.glob("tests/*.py"), *docs.pages()]
    citing = [str(f.relative_to(ROOT)) for f in files if f.name != "test_docs.py" and "DESIGN.md" in f.read_text()]
    assert citing == []
