"""Analysis instruments for attention (a tool, not Hub code): per-head metrics, ranks, rollout,
head importance, plots, and the all-MiniLM-L6-v2 study."""

from __future__ import annotations

from .metrics import per_head_metrics, per_query_metrics
from .viewer import view

__all__ = ["per_head_metrics", "per_query_metrics", "view"]
