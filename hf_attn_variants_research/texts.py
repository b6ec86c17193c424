"""The research corpora as text sources of the analysis tools: importing this module registers
``mr``, ``snli`` and ``shakespeare`` with ``hf_attn_variants.analysis.run.register_text_source``, so
``load_texts("mr")`` and ``hf-attn-variants analyze --texts mr`` work. The tools never import the
research package; the research package plugs its data into them.
"""

from __future__ import annotations

from functools import partial

from hf_attn_variants.analysis.run import register_text_source

BUILTIN = ("mr", "snli", "shakespeare")


def builtin_texts(name: str, split: str = "train") -> list[str]:
    """The distinct texts of a built-in corpus split: MR sentences, SNLI premises and hypotheses,
    Shakespeare lines of at least four words."""
    from . import corpora

    data = corpora.load_builtin(name)[split]
    columns = [c for c in ("text", "sentence", "premise", "hypothesis") if c in data.column_names]
    texts = [t for c in columns for t in data[c]]
    if name == "shakespeare":
        texts = [line.strip() for t in texts for line in t.split("\n") if len(line.split()) >= 4]
    return sorted(set(t for t in texts if t and t.strip()))


for _name in BUILTIN:
    register_text_source(_name, partial(builtin_texts, _name))


def analyze(argv: list[str] | None = None) -> dict:
    """``hf-attn-variants analyze``: the tools' command, with the built-in corpora registered."""
    from hf_attn_variants.analysis.commands import analyze as tools_analyze

    return tools_analyze(argv)
