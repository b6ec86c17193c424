"""The Hub code is safe to trust: whoever loads a checkpoint with ``trust_remote_code=True`` runs
exactly the files ``save_pretrained`` copied. Read those files (AST, never imported here) and fail on
any import outside torch, transformers, math, typing, dataclasses, collections.abc, __future__ and the
sibling files; on any call that runs programs, evaluates code, opens files or sockets, or unpickles;
and on any module-level statement other than imports, defs, classes, constant assignments, docstrings."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import FAMILIES, HEAD_CLASSES, tiny_model
from hub_helpers import AUTO_CLASS_NAME, PACKAGE_DIR, hub_code_files, reachable_files

import hf_attn_variants as hv

ALLOWED_MODULES = {"torch", "transformers", "math", "typing", "dataclasses", "__future__"}
ALLOWED_EXACT = {"collections.abc"}  # collections itself is not allowed, its abc submodule is
FORBIDDEN_NAMES = {"eval", "exec", "compile", "__import__", "open", "breakpoint", "input", "globals", "locals",
                   "vars", "__builtins__", "__loader__", "__spec__"}
FORBIDDEN_SEGMENTS = {"os", "sys", "subprocess", "socket", "pickle", "marshal", "shelve", "shutil", "importlib",
                      "ctypes", "urllib", "requests", "http", "builtins", "system", "popen", "spawn", "hub"}
FORBIDDEN_DOTTED = {"torch.load", "torch.jit.load", "torch.package", "torch.serialization", "torch.utils.cpp_extension",
                    "torch.ops.load_library", "torch.classes.load_library", "transformers.dynamic_module_utils",
                    "torch.save"}
# expressions a module-level (or class-level) constant may be built from: no calls, no comprehensions
CONSTANT_NODES = (ast.Constant, ast.Name, ast.Attribute, ast.Subscript, ast.Tuple, ast.List, ast.Dict, ast.Set,
                  ast.BinOp, ast.UnaryOp, ast.Load, ast.Slice, ast.operator, ast.unaryop, ast.keyword)


def dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a Name/Attribute chain, else None."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def import_violations(tree: ast.Module, siblings: set[str]) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in ALLOWED_MODULES and alias.name not in ALLOWED_EXACT:
                    out.append(f"line {node.lineno}: import {alias.name}")
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if (node.module or "").split(".")[0] not in ALLOWED_MODULES and node.module not in ALLOWED_EXACT:
                    out.append(f"line {node.lineno}: from {node.module} import ...")
            elif node.level > 1 or node.module is None or "." in node.module or node.module not in siblings:
                out.append(f"line {node.lineno}: from {'.' * node.level}{node.module or ''} import ... "
                           "(only `from .sibling import name`, sibling a copied file)")
    return out


def call_violations(tree: ast.Module) -> list[str]:
    """Forbidden names referenced anywhere (called or aliased) and forbidden dotted paths."""
    out = []
    for node in ast.walk(tree):
        name = None
        if isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            name = node.id
        elif isinstance(node, ast.Attribute):
            path = dotted(node)
            if path and (set(path.split(".")) & FORBIDDEN_SEGMENTS
                         or any(path == bad or path.startswith(bad + ".") for bad in FORBIDDEN_DOTTED)):
                name = path
        elif isinstance(node, ast.Call) and dotted(node.func) in {"getattr", "setattr", "delattr", "hasattr"}:
            for arg in node.args[1:2]:
                if isinstance(arg, ast.Constant) and arg.value in FORBIDDEN_NAMES | FORBIDDEN_SEGMENTS:
                    name = f"{dotted(node.func)}(..., {arg.value!r})"
        if name:
            out.append(f"line {node.lineno}: {name}")
    return out


def is_constant(node: ast.AST | None) -> bool:
    return node is None or all(isinstance(n, CONSTANT_NODES) for n in ast.walk(node))


def is_docstring(stmt: ast.stmt) -> bool:
    return isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant) and isinstance(stmt.value.value, str)


def _body_violations(body: list[ast.stmt], where: str) -> list[str]:
    out = []
    for stmt in body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.Pass)):
            continue
        if isinstance(stmt, ast.ClassDef):
            out += _body_violations(stmt.body, f"class {stmt.name}")
            continue
        if is_docstring(stmt):
            continue
        if isinstance(stmt, ast.Assign) and all(isinstance(t, ast.Name) for t in stmt.targets) \
                and is_constant(stmt.value):
            continue
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name) and is_constant(stmt.value):
            continue
        out.append(f"line {stmt.lineno}: {where} runs `{ast.unparse(stmt).splitlines()[0]}` at import time")
    return out


def import_time_violations(tree: ast.Module) -> list[str]:
    """Module (and class) bodies only import, define, and bind constants (literals, names, attribute
    paths, subscripts, containers of these): nothing is called while the file is imported.
    Decorators and default arguments are checked too."""
    out = _body_violations(tree.body, "module")
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            for deco in node.decorator_list:
                if dotted(deco.func if isinstance(deco, ast.Call) else deco) not in {"dataclass", "property",
                                                                                      "staticmethod", "classmethod"}:
                    out.append(f"line {deco.lineno}: decorator {ast.unparse(deco)}")
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for default in node.args.defaults + [d for d in node.args.kw_defaults if d is not None]:
                if not is_constant(default):
                    out.append(f"line {node.lineno}: default argument {ast.unparse(default)} is computed")
    return out


@pytest.fixture(scope="module")
def hub_files(tmp_path_factory) -> dict[str, Path]:
    """Every file save_pretrained copies, over every model class of both families (file name -> the
    copy in a saved folder); the AST walk of relative imports must reach exactly the same files."""
    files: dict[str, Path] = {}
    for family in FAMILIES:
        # every class an Auto class loads (GPT-2's DoubleHeadsModel has none, as in transformers: save_pretrained
        # copies only the config's code for it)
        for cls in [c for c in HEAD_CLASSES[family] if c.__name__ in AUTO_CLASS_NAME]:
            folder = tmp_path_factory.mktemp(f"{family}-{cls.__name__}")
            model = tiny_model(family, cls=cls)
            model.save_pretrained(folder)
            copied = hub_code_files(folder)
            walked = reachable_files(type(model).__module__.split(".")[-1]) | reachable_files(
                type(model.config).__module__.split(".")[-1])
            assert copied == walked, f"save_pretrained copied {copied}, relative imports reach {walked}"
            files |= {name: folder / name for name in copied}
    for cls in hv.FUSION_AUTO_CLASSES[hv.LSTMNFusionConfig].values():  # the LSTMN fusion pair classifier
        folder = tmp_path_factory.mktemp(f"fusion-{cls.__name__}")
        cls(hv.LSTMNFusionConfig(vocab_size=50, hidden_size=8)).save_pretrained(folder)
        copied = hub_code_files(folder)
        assert copied == reachable_files(cls.__module__.split(".")[-1]) | reachable_files("configuration_lstmn_fusion")
        files |= {name: folder / name for name in copied}
    assert {"hfav_attention.py", "hfav_kernels.py", "hfav_masks.py", "configuration_variants.py",
            "hfav_cross_attention.py", "modeling_lstmn_fusion.py", "configuration_lstmn_fusion.py"} <= set(files)
    return files


def _check(hub_files: dict[str, Path], check) -> dict[str, list[str]]:
    found = {}
    for name, path in sorted(hub_files.items()):
        tree = ast.parse(path.read_text(), filename=name)
        problems = check(tree, {n.removesuffix(".py") for n in hub_files})
        if problems:
            found[name] = problems
    return found


def test_copies_match_the_package(hub_files):
    for name, path in hub_files.items():
        assert path.read_text() == (PACKAGE_DIR / name).read_text()


def test_imports_only_torch_transformers_stdlib_basics_and_siblings(hub_files):
    assert _check(hub_files, import_violations) == {}


def test_no_code_execution_files_network_or_unpickling(hub_files):
    assert _check(hub_files, lambda tree, _: call_violations(tree)) == {}


def test_nothing_runs_at_import_time(hub_files):
    assert _check(hub_files, lambda tree, _: import_time_violations(tree)) == {}


# the checks themselves can fail: each snippet breaks one rule
BAD_SNIPPETS = [
    ("import os", import_violations),
    ("import collections", import_violations),
    ("from importlib import import_module", import_violations),
    ("from . import hfav_kernels", import_violations),
    ("from ..hfav_kernels import band_attention", import_violations),
    ("from .evil import x", import_violations),
    ("def f(cmd):\n    import subprocess\n    return subprocess.run(cmd)", import_violations),
    ("def f(x):\n    return eval(x)", call_violations),
    ("run = exec", call_violations),
    ("def f(s):\n    return compile(s, 'x', 'exec')", call_violations),
    ("def f():\n    return __import__('os')", call_violations),
    ("def f(p):\n    return open(p).read()", call_violations),
    ("def f(p):\n    return torch.load(p)", call_violations),
    ("def f(p):\n    return torch.serialization.pickle.loads(p)", call_violations),
    ("def f(o):\n    return o.os.system('ls')", call_violations),
    ("def f(m):\n    return getattr(m, 'system')", call_violations),
    ("def f():\n    return torch.hub.load('a', 'b')", call_violations),
    ("print('hello')", import_time_violations),
    ("x = torch.zeros(3)", import_time_violations),
    ("for i in range(3):\n    pass", import_time_violations),
    ("class A:\n    table = build()", import_time_violations),
    ("@register\ndef f():\n    pass", import_time_violations),
    ("def f(x=torch.ones(2)):\n    pass", import_time_violations),
]
GOOD_SNIPPET = '''"""doc"""
from __future__ import annotations
import math
from collections.abc import Callable
from dataclasses import dataclass
import torch
from .hfav_kernels import band_attention
Tensor = torch.Tensor
TABLE: dict[str, int] = {"a": 1, "b": -2}
SIZE = 1 << 22
@dataclass(kw_only=True)
class A:
    x: int = 3
    def f(self, y: Tensor | None = None) -> float:
        return math.sqrt(torch.compile(band_attention)(y).sum())
'''


@pytest.mark.parametrize(("source", "check"), BAD_SNIPPETS, ids=[s.splitlines()[-1][:40] for s, _ in BAD_SNIPPETS])
def test_each_check_catches_its_violation(source, check):
    tree = ast.parse(source)
    assert check(tree, {"hfav_kernels"}) if check is import_violations else check(tree)


def test_the_checks_accept_plain_definitions():
    tree = ast.parse(GOOD_SNIPPET)
    assert import_violations(tree, {"hfav_kernels"}) == []
    assert call_violations(tree) == []
    assert import_time_violations(tree) == []
