"""Metric names, defined once for Python (``js/src/metrics.ts`` is their one home in the front
end; a test keeps the two equal)."""

from __future__ import annotations

__all__ = ["GRID_METRICS", "GRID_METRIC_LABELS", "TRACKED_METRICS", "RESULT_METRICS", "TRAJECTORY_METRICS", "COMPARE_METRICS", "DELTA_METRICS"]

#: What the widget's grid can colour by (the ``metric`` trait).
GRID_METRICS = ("top1_prob", "next_prob", "next_rank", "entropy", "kl", "tracked_prob", "tracked_logprob", "tracked_rank", "logit_diff")
#: Grid metrics of one tracked token (the ``metric_token`` trait chooses which): its probability,
#: log-probability (nats) and exact rank.
TRACKED_METRICS = ("tracked_prob", "tracked_logprob", "tracked_rank")
#: How the grid's legend names each metric (``js/src/metrics.ts`` ``METRIC_LABELS``; a test keeps them equal).
GRID_METRIC_LABELS = {
    "top1_prob": "top-1 prob",
    "next_prob": "next-token prob",
    "next_rank": "next-token rank",
    "entropy": "entropy (nats)",
    "kl": "KL to final (nats)",
    "tracked_prob": "tracked token prob",
    "tracked_logprob": "tracked token log-prob",
    "tracked_rank": "tracked token rank",
    "logit_diff": "logit diff a−b",
}
#: Grid metrics read straight off a result's per-cell arrays (no token to choose).
RESULT_METRICS = ("top1_prob", "next_prob", "next_rank", "entropy", "kl")
#: What a tracked token's trajectory along the layers can show.
TRAJECTORY_METRICS = ("prob", "logit", "rank")
#: What a comparison of two lenses (:class:`lens_widget.Comparison`, the widget's diff grid) can
#: show per aligned cell: Δ = b − a of the top-1 / next-token / tracked-token probability, of
#: entropy, KL and the logit difference; the next-token rank as log(rank_b / rank_a); the
#: Jensen–Shannon divergence of the two cells' distributions (nats); top-1 agreement (0/1).
COMPARE_METRICS = ("d_top1_prob", "d_next_prob", "next_rank_log_ratio", "d_entropy", "d_kl", "d_tracked_prob", "d_logit_diff", "js", "top1_agree")
#: Compare metrics that are signed (b − a): diverging colour scales centred on zero.
DELTA_METRICS = COMPARE_METRICS[:7]
