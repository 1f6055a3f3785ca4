"""Helpers of the exported-page tests (a unique module name: test modules import it directly)."""

from __future__ import annotations

from typing import Any

from browser_support import CELL_H, CELL_W, HEAD_H, HEAD_W
from lens_widget.wire import result_to_wire


def widget_state(result: Any, **over: Any) -> dict[str, Any]:
    state = {
        "data": result_to_wire(result),
        "prompt": result.prompts[0],
        "metric": "top1_prob",
        "metric_token": -1,
        "diff_tokens": [int(i) for i in result.tracked_ids[:2]],
        "tracked": [int(i) for i in result.tracked_ids],
        "pinned": [],
        "selected": {},
        "transpose": False,
        "busy": False,
        "error": "",
        "height": 420,
    }
    state.update(over)
    return state


def cell_xy(page, row: int, col: int) -> tuple[float, float]:
    """Page coordinates of the centre of grid cell (display row, display column), no scroll."""
    box = page.locator("canvas.lw-canvas").bounding_box()
    return box["x"] + HEAD_W + col * CELL_W + CELL_W / 2, box["y"] + HEAD_H + row * CELL_H + CELL_H / 2
