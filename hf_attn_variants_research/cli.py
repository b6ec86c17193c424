"""The ``hf-attn-variants`` command line: one entry point for the library's tools (``analyze``,
``convert``, ``view``, ``costs``) and the research code (``train``, ``experiments``, ``study``, ``dates-length``,
``plot-alignment``, ``results``).

Each command is a ``module:function`` taking argv, imported only after the command name is read,
so ``--help`` and ``--version`` never import torch or transformers. Errors a user can fix (a bad
config value, a missing file) print one line naming what is wrong; ``--debug`` (before the command
name) shows the traceback instead.
"""

from __future__ import annotations

import importlib
import os
import sys

PROG = "hf-attn-variants"
# name -> (module:function, what it does)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("hf_attn_variants_research.train:main",
              "train (and test, and save Hub-ready) a model and its baselines from a YAML run config"),
    "experiments": ("hf_attn_variants_research.experiments:main",
                    "run, aggregate or list the experiment grid (configs/experiments/*.yaml)"),
    "analyze": ("hf_attn_variants_research.texts:analyze",
                "attention metrics, ranks, rollout and head importance of a model, per layer and head"),
    "view": ("hf_attn_variants.analysis.viewer:main",
             "write an interactive HTML page of a model's attention on a few texts"),
    "convert": ("hf_attn_variants.analysis.commands:convert",
                "convert a dense BERT/GPT-2 checkpoint to a variant (no training) into a Hub-ready folder"),
    "costs": ("hf_attn_variants.costs:main", "attended pairs, parameters and FLOPs of each variant at a size"),
    "study": ("hf_attn_variants_research.study:main",
              "the all-MiniLM-L6-v2 study: what attention does in a pretrained BERT, what converting costs"),
    "plot-alignment": ("hf_attn_variants_research.plot_alignment:main",
                       "cross-attention alignment pictures of trained date-normalisation models"),
    "dates-length": ("hf_attn_variants_research.dates_length:main",
                     "Bahdanau et al.'s length test: attention vs a fixed summary on k = 1..5 dates per source"),
    "results": ("hf_attn_variants_research.results:main",
                "regenerate every results table and figure from the committed records"),
}
# errors a user can fix from the message alone: shown as one line unless --debug
# (OSError covers missing files and folders, and transformers' "not a valid model identifier")
USER_ERRORS = (ValueError, OSError)


def version() -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("hf-attn-variants")
    except PackageNotFoundError:
        return "unknown (not installed)"


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: {PROG} [--debug] COMMAND [ARGS ...]", "",
             "Low-rank, band, additive and LSTMN attention for BERT- and GPT-2-style transformers models.", "",
             "commands:"]
    lines += [f"  {name:<{width}}  {what}" for name, (_, what) in COMMANDS.items()]
    lines += ["", "options:", "  -h, --help     this message", "  --version      the installed version",
              "  --debug        show the full traceback of an error", "",
              f"{PROG} COMMAND --help shows a command's own options."]
    return "\n".join(lines)


def resolve(name: str):
    """The function behind a command name; a clear error when its module is not installed."""
    if name not in COMMANDS:
        raise SystemExit(f"{PROG}: unknown command {name!r}; expected one of: {', '.join(COMMANDS)}\n"
                         f"({PROG} --help lists them)")
    module_name, func = COMMANDS[name][0].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise SystemExit(f"{PROG} {name}: this build has no {module_name} "
                             f"(the '{name}' command is not available here)") from e
        if e.name:
            raise SystemExit(f"{PROG} {name}: needs the Python package {e.name!r}, which is not installed "
                             "(pip install 'hf-attn-variants[train]')") from e
        raise
    return getattr(module, func)


def one_line(error: BaseException) -> str:
    """An exception as one line: its message, newlines folded."""
    text = str(error)
    text = " ".join(part.strip() for part in text.splitlines() if part.strip())
    return text or type(error).__name__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = bool(os.environ.get("HF_ATTN_VARIANTS_DEBUG"))
    while argv and argv[0] == "--debug":
        debug, argv = True, argv[1:]
    if not argv:
        print(usage(), file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if argv[0] == "--version":
        print(f"{PROG} {version()}")
        return 0
    name = argv[0]
    if name == "train" and argv[1:] in (["-h"], ["--help"]):  # the module's docstring, without importing torch
        import ast
        from pathlib import Path

        print(ast.get_docstring(ast.parse((Path(__file__).parent / "train.py").read_text())))
        return 0
    command = resolve(name)
    try:
        result = command(argv[1:])
    except USER_ERRORS as e:
        if debug:
            raise
        print(f"{PROG} {name}: error: {one_line(e)} (--debug for the traceback)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG} {name}: interrupted", file=sys.stderr)
        return 130
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


if __name__ == "__main__":
    sys.exit(main())
