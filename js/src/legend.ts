// The legend of the grid's metric: the lens, title, gradient bar, low / high labels. Text through textContent.
import { N_COLORS } from "./color";
import type { MetricView } from "./metrics";
import { h } from "./dom";

/** The legend of `view`; `lensName` (the lens shown) leads it when given. */
export function renderLegend(host: HTMLElement, view: MetricView | null, lensName = ""): void {
  host.replaceChildren();
  if (!view) return;
  const s = view.scale;
  const title = h("span", "lw-legend-title", view.note ? `${view.label} — ${view.note}` : view.label);
  const lo = h("span", "lw-legend-tick", s.kind === "log" ? "rank 1" : s.format(s.lo));
  const hi = h("span", "lw-legend-tick", s.kind === "log" ? `rank ${s.format(s.hi)}` : s.format(s.hi));
  const bar = h("span", "lw-legend-bar");
  const cols = s.kind === "log" ? s.colors.slice().reverse() : s.colors;
  const stops = Array.from({ length: 9 }, (_, i) => cols[Math.round((i / 8) * (N_COLORS - 1))]);
  bar.style.background = `linear-gradient(to right, ${stops.join(",")})`;
  if (lensName) host.append(h("span", "lw-legend-lens", lensName));
  host.append(title, lo, bar, hi);
}
