"""Reading the YAML files of runs and grids: a missing file or a syntax error is one line naming the
file (and the line and column), never a parser traceback."""

from __future__ import annotations

import os
from pathlib import Path

import yaml


def read_yaml(path: str | os.PathLike):
    """A YAML file's content ({} when empty)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{path}: not valid YAML{where}: {problem}") from e


def shipped_configs() -> Path:
    """The run configs shipped with the package: ``hf_attn_variants_research/configs`` in an
    installed package (package data), ``configs/`` beside the package in a checkout."""
    here = Path(__file__).resolve().parent
    for folder in (here / "configs", here.parent / "configs"):
        if (folder / "quickstart.yaml").is_file():
            return folder
    raise FileNotFoundError(f"no shipped run configs beside {here}")


def resolve_config(path: str) -> Path:
    """A run config's file: ``path`` itself, else a shipped config of that name (``quickstart``,
    ``mr/band``, ``configs/mr/band.yaml``)."""
    if Path(path).is_file():
        return Path(path)
    name = str(path).removeprefix("configs/")
    for candidate in (name, f"{name}.yaml"):
        shipped = shipped_configs() / candidate
        if shipped.is_file():
            return shipped
    raise FileNotFoundError(f"run config {path!r}: no such file, and no shipped config of that name "
                            f"(shipped: quickstart, mr/<variant>, snli/<variant>, shakespeare/<variant>, ...)")
