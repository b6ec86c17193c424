"""The ``hf-attn-variants`` command line: ``analyze``, ``convert``, ``view``.

Each command is a ``module:function`` taking argv, imported only when it is run.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, str] = {
    "analyze": "hf_attn_variants.analysis.commands:analyze",
    "convert": "hf_attn_variants.analysis.commands:convert",
    "view": "hf_attn_variants.analysis.viewer:main",
}
USAGE = "usage: hf-attn-variants {" + ",".join(COMMANDS) + "} ... (hf-attn-variants COMMAND --help for details)"


def resolve(name: str):
    """The function behind a command name; a clear error when its module is not installed."""
    if name not in COMMANDS:
        raise SystemExit(f"hf-attn-variants: unknown command {name!r}; expected one of {sorted(COMMANDS)}\n{USAGE}")
    module_name, func = COMMANDS[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        if e.name and module_name.startswith(e.name):
            raise SystemExit(f"hf-attn-variants {name}: this build has no {module_name} "
                             f"(the '{name}' command is not available here)") from e
        raise
    return getattr(module, func)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    resolve(argv[0])(argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
