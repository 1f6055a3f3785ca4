"""Metric names, defined once for Python (``js/src/metrics.ts`` is their one home in the front
end; a test keeps the two equal)."""

from __future__ import annotations

__all__ = ["GRID_METRICS", "RESULT_METRICS", "TRAJECTORY_METRICS"]

#: What the widget's grid can colour by (the ``metric`` trait).
GRID_METRICS = ("top1_prob", "next_prob", "next_rank", "entropy", "kl", "tracked_prob", "logit_diff")
#: Grid metrics read straight off a result's per-cell arrays (no token to choose).
RESULT_METRICS = ("top1_prob", "next_prob", "next_rank", "entropy", "kl")
#: What a tracked token's trajectory along the layers can show.
TRAJECTORY_METRICS = ("prob", "logit", "rank")
