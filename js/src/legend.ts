// The legend of the grid's metric: the lens, title, gradient bar, low / high labels, and the key
// of the next-token mark. Text through textContent.
import { N_COLORS, NEXT_MARK_COLOR } from "./color";
import type { MetricView } from "./metrics";
import { h } from "./dom";

/** What the corner mark of a cell means (the legend and the figures say it the same way). */
export const NEXT_MARK_TEXT = "top-1 = next token";

/** The key of the next-token mark: a corner triangle in its one colour, and what it means. */
export function nextMarkKey(): HTMLElement {
  const key = h("span", "lw-legend-mark", undefined, { title: "a cell whose top-1 token is the prompt's next token has this mark in its top-right corner" });
  const tri = h("span", "lw-mark-swatch", undefined, { "data-color": NEXT_MARK_COLOR });
  tri.style.borderTopColor = NEXT_MARK_COLOR;
  key.append(tri, h("span", "lw-legend-tick", NEXT_MARK_TEXT));
  return key;
}

/** The legend of `view`; `lensName` (the lens shown) leads it when given. */
export function renderLegend(host: HTMLElement, view: MetricView | null, lensName = ""): void {
  host.replaceChildren();
  if (!view) return;
  const s = view.scale;
  const title = h("span", "lw-legend-title", view.note ? `${view.label} — ${view.note}` : view.label);
  const lo = h("span", "lw-legend-tick", s.ticks[0]);
  const hi = h("span", "lw-legend-tick", s.ticks[1]);
  const bar = h("span", "lw-legend-bar");
  const cols = s.kind === "log" ? s.colors.slice().reverse() : s.colors;
  const stops = Array.from({ length: 9 }, (_, i) => cols[Math.round((i / 8) * (N_COLORS - 1))]);
  bar.style.background = `linear-gradient(to right, ${stops.join(",")})`;
  if (lensName) host.append(h("span", "lw-legend-lens", lensName));
  host.append(title, lo, bar, hi, nextMarkKey());
}
