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
