// Figure export of the grid shown: an SVG built from the data (one rect per cell in its colour,
// the top-1 tokens, the next-token marks, layer and token labels, the legend and the mark's key)
// and a PNG of that SVG at a pixel ratio of at least 2, behind two toolbar buttons that work in a
// notebook and in an exported page. Python writes the same SVG without a browser
// (lens_widget/figure.py, `LensResult.to_svg`); a browser test checks the two agree cell by cell.
// Every string is escaped (xmlText); characters XML cannot hold become U+FFFD.
import type { LensData } from "./data";
import type { MetricView } from "./metrics";
import { N_COLORS, NEXT_MARK_COLOR } from "./color";
import { NEXT_MARK_TEXT } from "./legend";
import { h, type Disposers } from "./dom";

/** Geometry of the figure (pixels), the same in lens_widget/figure.py `FIGURE`. */
export const FIGURE = {
  pad: 8,
  titleH: 22,
  headW: 64,
  headH: 84,
  cellW: 56,
  cellH: 20,
  legendH: 44,
  right: 72,
  minW: 600,
  cellChars: 8,
  labelChars: 18,
  barW: 160,
} as const;
const NO_VALUE_FILL = "#eeeeee";
const NONFINITE_FILL = "#999999";
const FONT = "system-ui, -apple-system, 'Segoe UI', sans-serif";
/** The PNG's pixels per figure pixel: the screen's, and never below 2 (print quality). */
export const MIN_PNG_RATIO = 2;

const NOT_XML = /[^\t\n\r\u0020-\uD7FF\uE000-\uFFFD\u{10000}-\u{10FFFF}]/gu;

/** `s` safe inside an XML element or a quoted attribute. */
export function xmlText(s: string): string {
  return String(s)
    .replace(NOT_XML, "\uFFFD")
    .replace(/&/g, "&amp;")
    .replace(/</g, "&lt;")
    .replace(/>/g, "&gt;")
    .replace(/"/g, "&quot;")
    .replace(/'/g, "&#39;");
}

/** `s` cut to at most `n` code points, the last an ellipsis when cut. */
export function fitChars(s: string, n: number): string {
  const chars = Array.from(s);
  return chars.length <= n ? s : chars.slice(0, n - 1).join("") + "…";
}

/** The legend bar's 9 stops, low to high (a rank scale reversed, as the page's legend). */
function gradient(view: MetricView): string[] {
  const cols = view.scale.kind === "log" ? view.scale.colors.slice().reverse() : view.scale.colors;
  return Array.from({ length: 9 }, (_, i) => cols[Math.round((i / 8) * (N_COLORS - 1))]);
}

/** Width and height of the figure of `lens`. */
export function figureSize(lens: LensData): { width: number; height: number } {
  const F = FIGURE;
  const gx = F.pad + F.headW;
  const gy = F.pad + F.titleH + F.headH;
  return { width: Math.max(gx + lens.P * F.cellW + F.right, F.minW), height: gy + lens.S * F.cellH + F.legendH + F.pad };
}

/** One rect per cell (final layer on top), its top-1 token, and the next-token marks. */
function cells(lens: LensData, view: MetricView, gx: number, gy: number): string[] {
  const { cellW: cw, cellH: ch } = FIGURE;
  const { colors, text } = view.scale;
  const rects = ['<g class="cells">'];
  const words = ['<g class="cell-text" text-anchor="middle" dominant-baseline="central">'];
  const marks = ['<g class="next-marks">'];
  for (let row = 0; row < lens.S; row++) {
    const site = lens.S - 1 - row;
    for (let c = 0; c < lens.P; c++) {
      const x = gx + c * cw;
      const y = gy + row * ch;
      const i = site * lens.P + c;
      const bad = lens.nonfinite[i] !== 0;
      const ci = bad ? -1 : view.scale.index(view.values[i]);
      const fill = bad ? NONFINITE_FILL : ci < 0 ? NO_VALUE_FILL : colors[ci];
      rects.push(`<rect class="cell${bad ? " nonfinite" : ""}" data-site="${site}" data-col="${c}" x="${x}" y="${y}" width="${cw - 1}" height="${ch - 1}" fill="${fill}"/>`);
      if (bad) continue;
      const top = lens.topkIds[i * lens.k];
      const word = fitChars(lens.display(top), FIGURE.cellChars);
      words.push(`<text x="${x + cw / 2}" y="${y + ch / 2}" fill="${ci < 0 ? "#111111" : text[ci]}">${xmlText(word)}</text>`);
      const nxt = lens.nextIds[c];
      if (nxt >= 0 && top === nxt) marks.push(`<path d="M${x + cw - 8} ${y}H${x + cw - 1}V${y + 7}Z" fill="${NEXT_MARK_COLOR}"/>`);
    }
  }
  return [...rects, "</g>", ...words, "</g>", ...marks, "</g>"];
}

/** Layer labels left of the rows, token labels (slanted) above the columns. */
function labels(lens: LensData, gx: number, gy: number): string[] {
  const { cellW: cw, cellH: ch, labelChars: n } = FIGURE;
  const out = ['<g class="row-labels" text-anchor="end" dominant-baseline="central" fill="#111111">'];
  for (let row = 0; row < lens.S; row++) out.push(`<text x="${gx - 4}" y="${gy + row * ch + ch / 2}">${xmlText(fitChars(lens.siteLabels[lens.S - 1 - row], n))}</text>`);
  out.push("</g>", '<g class="col-labels" fill="#111111">');
  for (let c = 0; c < lens.P; c++) {
    const word = fitChars(lens.columnLabels?.[c] ?? lens.display(lens.tokenAt(c)), n);
    out.push(`<text transform="translate(${gx + c * cw + cw / 2} ${gy - 4}) rotate(-45)">${xmlText(word)}</text>`);
  }
  out.push("</g>");
  return out;
}

/** The metric's name, its colour bar with the low / high labels, and the mark's key. */
function legend(view: MetricView, gx: number, y: number): string[] {
  const { barW: bw, pad } = FIGURE;
  const bx = gx + 100;
  const label = view.note ? `${view.label} — ${view.note}` : view.label;
  const stops = gradient(view)
    .map((c, i) => `<stop offset="${i * 12.5}%" stop-color="${c}"/>`)
    .join("");
  const mk = bx + bw + 100;
  return [
    '<g class="legend" fill="#111111">',
    `<defs><linearGradient id="lw-legend-gradient" x1="0" x2="1" y1="0" y2="0">${stops}</linearGradient></defs>`,
    `<text class="legend-title" x="${pad}" y="${y}" font-weight="600">${xmlText(label)}</text>`,
    `<text class="legend-lo" x="${bx - 4}" y="${y + 18}" text-anchor="end">${xmlText(view.scale.ticks[0])}</text>`,
    `<rect class="legend-bar" x="${bx}" y="${y + 9}" width="${bw}" height="10" fill="url(#lw-legend-gradient)" stroke="#c8c8c8"/>`,
    `<text class="legend-hi" x="${bx + bw + 4}" y="${y + 18}">${xmlText(view.scale.ticks[1])}</text>`,
    `<path class="legend-mark" d="M${mk} ${y + 9}H${mk + 8}V${y + 17}Z" fill="${NEXT_MARK_COLOR}"/>`,
    `<text class="legend-mark-text" x="${mk + 12}" y="${y + 18}">${xmlText(NEXT_MARK_TEXT)}</text>`,
    "</g>",
  ];
}

/** The SVG figure of the grid `lens` coloured by `view`. */
export function gridSvg(lens: LensData, view: MetricView, title = `${lens.modelName} · ${lens.lensName}`): string {
  const F = FIGURE;
  const gx = F.pad + F.headW;
  const gy = F.pad + F.titleH + F.headH;
  const { width: W, height: H } = figureSize(lens);
  const out = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="${xmlText(FONT)}" font-size="11">`,
    `<title>${xmlText(title)}</title>`,
    `<rect class="background" x="0" y="0" width="${W}" height="${H}" fill="#ffffff"/>`,
    `<text class="title" x="${F.pad}" y="${F.pad + 14}" font-size="13" font-weight="600" fill="#111111">${xmlText(title)}</text>`,
    ...cells(lens, view, gx, gy),
    ...labels(lens, gx, gy),
    ...legend(view, gx, gy + lens.S * F.cellH + 16),
    "</svg>",
  ];
  return out.join("\n") + "\n";
}

/** The PNG of an SVG of `width` × `height`, drawn at `ratio` pixels per SVG pixel. */
export async function svgToPng(svg: string, width: number, height: number, ratio: number): Promise<Blob> {
  const img = new Image();
  img.src = `data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`;
  await img.decode();
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(width * ratio);
  canvas.height = Math.round(height * ratio);
  const ctx = canvas.getContext("2d");
  if (!ctx) throw new Error("no 2D canvas to draw the PNG on");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.drawImage(img, 0, 0, width, height);
  return new Promise((resolve, reject) => canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("the browser could not encode the PNG"))), "image/png"));
}

/** Offer `blob` as a download named `name` (works in a notebook's output and in a file:// page). */
function download(host: HTMLElement, blob: Blob, name: string): void {
  const a = h("a", "lw-download", undefined, { download: name, href: URL.createObjectURL(blob) });
  a.hidden = true;
  host.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 60000);
}

/** What a figure shows: the grid on screen and its colouring (null: nothing shown yet). */
export type FigureSource = () => { lens: LensData | null; view: MetricView | null; status(text: string, isError?: boolean): void };

/** The SVG and PNG buttons (in the toolbar's "more" menu). */
export class FigureButtons {
  readonly el: HTMLSpanElement;
  constructor(source: FigureSource, d: Disposers) {
    const svgButton = h("button", "lw-figure-svg", "SVG", { type: "button", title: "save the grid shown as an SVG figure (vector: cells, tokens, labels, legend)" });
    const pngButton = h("button", "lw-figure-png", "PNG", { type: "button", title: "save the grid shown as a PNG figure (at least 2 pixels per screen pixel)" });
    this.el = h("span", "lw-figure");
    this.el.append(svgButton, pngButton);
    const figure = () => {
      const { lens, view, status } = source();
      if (!lens || !view) {
        status("no grid to save", true);
        return null;
      }
      return { lens, view, status, svg: gridSvg(lens, view), name: `lens-grid-${view.metric}` };
    };
    d.listen(svgButton, "click", () => {
      const f = figure();
      if (f) download(this.el, new Blob([f.svg], { type: "image/svg+xml" }), `${f.name}.svg`);
    });
    d.listen(pngButton, "click", () => {
      const f = figure();
      if (!f) return;
      const { width, height } = figureSize(f.lens);
      const ratio = Math.max(MIN_PNG_RATIO, (typeof window !== "undefined" && window.devicePixelRatio) || 1);
      svgToPng(f.svg, width, height, ratio)
        .then((png) => download(this.el, png, `${f.name}.png`))
        .catch((e: Error) => f.status(`PNG failed: ${e.message}`, true));
    });
  }
}
