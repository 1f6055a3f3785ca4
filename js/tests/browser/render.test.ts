import { describe, expect, it } from "vitest";
import widget from "../../src/widget";
import { FakeModel, makeData } from "../fixture";

const { render } = widget;

function nonBlankPixels(c: HTMLCanvasElement): number {
  const d = c.getContext("2d")!.getImageData(0, 0, c.width, c.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] !== 255 || d[i + 1] !== 255 || d[i + 2] !== 255) n++;
  return n;
}
const frame = () => new Promise((r) => requestAnimationFrame(() => r(null)));

describe("render in real Chromium", () => {
  it("draws the grid, shows a tooltip on hover, pins on click, and cleans up", async () => {
    const model = new FakeModel({ data: makeData(6, 40, 5) });
    const el = document.createElement("div");
    el.style.width = "800px";
    document.body.appendChild(el);
    const cleanup = render({ model: model as never, el });
    await frame();
    await frame();
    const canvas = el.querySelector<HTMLCanvasElement>("canvas.lw-canvas")!;
    expect(canvas.width).toBeGreaterThan(100);
    expect(nonBlankPixels(canvas)).toBeGreaterThan(1000);
    const root = el.querySelector<HTMLElement>(".lens-widget")!;
    expect(Number(root.dataset.firstPaintMs)).toBeGreaterThan(0);

    // hover the cell of the final layer (row 0) and column 2
    const rect = canvas.getBoundingClientRect();
    const g = JSON.parse(el.querySelector<HTMLElement>(".lw-viewport")!.dataset.geometry!); // columns as wide as their text
    const x = rect.left + g.headW + g.colX[2] + 5;
    const y = rect.top + g.headH + 10;
    canvas.dispatchEvent(new PointerEvent("pointermove", { clientX: x, clientY: y, bubbles: true }));
    const tip = el.querySelector<HTMLElement>(".lw-tooltip")!;
    expect(tip.hidden).toBe(false);
    expect(tip.dataset.site).toBe("5");
    expect(tip.dataset.col).toBe("2");
    expect(tip.querySelectorAll(".lw-tip-row")).toHaveLength(5);

    canvas.dispatchEvent(new MouseEvent("click", { clientX: x, clientY: y, bubbles: true }));
    expect(model.state.selected).toEqual({ site: 5, col: 2, position: 2 });
    expect(model.state.pinned).toEqual([[5, 2]]);

    const before = nonBlankPixels(canvas);
    const snap = canvas.toDataURL();
    model.set("metric", "kl");
    await frame();
    await frame();
    expect(canvas.toDataURL()).not.toBe(snap);
    expect(before).toBeGreaterThan(0);

    cleanup();
    expect(model.listenerCount()).toBe(0);
    expect(el.children.length).toBe(0);
  });
});
