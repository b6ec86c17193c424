"""Analysis instruments for attention (the library's tools, not Hub code): per-head metrics, ranks,
rollout, head importance, plots and the viewer. They import the library only; the research package
(``hf_attn_variants_research``) builds on them (the MiniLM study, the built-in text corpora)."""

from __future__ import annotations

from .metrics import per_head_metrics, per_query_metrics
from .viewer import view

__all__ = ["per_head_metrics", "per_query_metrics", "view"]
