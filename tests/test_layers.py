"""The three layers stay apart: the library and its tools never import the research package (or the
benchmarks or tests), the tools import nothing of the research code, and no module outside the
tests edits ``sys.path``."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
UPWARD = ("hf_attn_variants_research", "benchmarks", "tests", "common", "conftest", "train", "corpora")


def imported_modules(path: Path) -> set[str]:
    """Absolute module names a file imports (anywhere in it, functions included)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant):
                names.add(str(node.args[0].value))
    return names


def test_library_and_tools_never_import_upward():
    found = {}
    for path in sorted((ROOT / "hf_attn_variants").rglob("*.py")):
        bad = sorted(m for m in imported_modules(path) if m.split(".")[0] in UPWARD)
        if bad:
            found[str(path.relative_to(ROOT))] = bad
    assert found == {}


def test_the_checker_sees_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from hf_attn_variants_research import corpora\n    import importlib\n"
                   "    return importlib.import_module('benchmarks.common')\n")
    assert {"hf_attn_variants_research", "benchmarks.common"} <= imported_modules(bad)


def test_no_sys_path_edits_outside_tests():
    files = [*ROOT.glob("hf_attn_variants/**/*.py"), *ROOT.glob("hf_attn_variants_research/*.py"),
             *ROOT.glob("benchmarks/*.py"), *ROOT.glob("configs/*.py")]
    editing = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr in ("insert", "append", "extend")
                    and isinstance(node.value, ast.Attribute) and node.value.attr == "path"
                    and getattr(node.value.value, "id", None) == "sys"):
                editing.append(str(path.relative_to(ROOT)))
    assert files and editing == []
