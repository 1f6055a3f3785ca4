import { describe, expect, it } from "vitest";
import { BASE, ZOOM_MAX, ZOOM_MIN, clampZoom, colRange, fitWidths, indexAt, naturalWidths, offsets, rowHeight, zoomBy } from "../../src/layout";
import { Grid } from "../../src/grid";
import { decodeLens } from "../../src/data";
import { metricView } from "../../src/metrics";
import { makeData } from "../fixture";

const sum = (a: number[]) => a.reduce((x, y) => x + y, 0);

describe("column widths from text widths", () => {
  it("each column is its text plus padding, within the narrowest and widest column", () => {
    const text = [3.2, 40, 50.5, 1000, 0, NaN];
    const w = naturalWidths(text, 1, false);
    // written out: ceil(text + 8), at least 28, at most 240
    expect(w).toEqual([28, 48, 59, 240, 28, 28]);
    for (let i = 0; i < 3; i++) expect(w[i]).toBeGreaterThanOrEqual(text[i]);
  });

  it("zoom scales the padding and the bounds (the text is measured at the zoomed font)", () => {
    expect(naturalWidths([80, 10], 2, false)).toEqual([96, 56]); // ceil(80 + 16); max(56, 26)
    expect(naturalWidths([1000], 0.5, false)).toEqual([120]);
  });

  it("compact: every column is narrow, whatever its text", () => {
    expect(naturalWidths([5, 500, 50], 1, true)).toEqual([10, 10, 10]);
    expect(naturalWidths([5, 500], 2, true)).toEqual([20, 20]);
  });
});

describe("fit-to-width", () => {
  it("leaves widths that fit alone", () => {
    expect(fitWidths([30, 40, 50], 120)).toEqual([30, 40, 50]);
    expect(fitWidths([30, 40, 50], 500)).toEqual([30, 40, 50]);
  });

  it("shrinks in proportion to at most the width available", () => {
    const w = [100, 200, 300, 400];
    const fit = fitWidths(w, 500); // factor 0.5
    expect(fit).toEqual([50, 100, 150, 200]);
    const odd = fitWidths([57, 91, 33, 120, 61], 173);
    expect(sum(odd)).toBeLessThanOrEqual(173);
    const f = 173 / (57 + 91 + 33 + 120 + 61);
    odd.forEach((x, i) => expect(x).toBe(Math.floor([57, 91, 33, 120, 61][i] * f)));
  });

  it("keeps every column at least one pixel", () => {
    expect(fitWidths(new Array(10).fill(40), 4)).toEqual(new Array(10).fill(1));
  });
});

describe("zoom", () => {
  it("steps by 1.25 within its bounds", () => {
    expect(zoomBy(1, 1)).toBe(1.25);
    expect(zoomBy(1, -1)).toBe(0.8);
    expect(zoomBy(1, 2)).toBe(1.563);
    expect(zoomBy(ZOOM_MAX, 1)).toBe(ZOOM_MAX);
    expect(zoomBy(ZOOM_MIN, -1)).toBe(ZOOM_MIN);
    expect(zoomBy(0.6, -1)).toBe(ZOOM_MIN);
  });

  it("anything not a positive number is 1", () => {
    expect(clampZoom("x")).toBe(1);
    expect(clampZoom(-2)).toBe(1);
    expect(clampZoom(undefined)).toBe(1);
    expect(clampZoom(10)).toBe(ZOOM_MAX);
  });
});

describe("column range", () => {
  it("first..last inclusive, negatives from the end, clamped", () => {
    expect(colRange([], 34)).toEqual([0, 33]);
    expect(colRange([3, 9], 34)).toEqual([3, 9]);
    expect(colRange([-8, -1], 34)).toEqual([26, 33]);
    expect(colRange([30, 100], 34)).toEqual([30, 33]);
    expect(colRange([-100, 2], 34)).toEqual([0, 2]);
    expect(colRange([9, 3], 34)).toEqual([0, 33]); // first after last: every column
    expect(colRange([1.5, 3], 34)).toEqual([0, 33]);
    expect(colRange("1:3", 34)).toEqual([0, 33]);
    expect(colRange([0, 5], 0)).toEqual([0, -1]);
  });
});

describe("offsets and lookup", () => {
  it("left edges are running sums; the lookup inverts them", () => {
    const w = [10, 25, 7, 40];
    const off = offsets(w);
    expect(Array.from(off)).toEqual([0, 10, 35, 42, 82]);
    for (let x = 0; x < 82; x++) {
      let naive = 0;
      while (x >= off[naive + 1]) naive++;
      expect(indexAt(off, x)).toBe(naive);
    }
    expect(indexAt(off, -1)).toBe(-1);
    expect(indexAt(off, 82)).toBe(-1);
    expect(indexAt(offsets([]), 0)).toBe(-1);
  });
});

describe("row height", () => {
  it("auto height: 20 px rows while they fit in about 720 px, then shrinking to 14 px", () => {
    expect(rowHeight(31, 1, 0)).toBe(20); // 22 + 31 * 20 = 642
    expect(rowHeight(41, 1, 0)).toBe(17); // floor(698 / 41)
    expect(rowHeight(81, 1, 0)).toBe(BASE.minRowH);
    expect(rowHeight(31, 2, 0)).toBe(40);
    expect(22 + 31 * rowHeight(31, 1, 0)).toBeLessThanOrEqual(BASE.autoH);
  });

  it("a fixed box keeps 20 px rows (it scrolls)", () => {
    expect(rowHeight(81, 1, 300)).toBe(20);
    expect(rowHeight(81, 1.5, 300)).toBe(30);
  });
});

describe("the grid follows its view", () => {
  const mount = () => {
    const parent = document.createElement("div");
    const lens = decodeLens(makeData(4, 12, 3))!;
    const grid = new Grid(parent, { onHover() {}, onClick() {}, onKey() {} });
    grid.setData(lens, metricView(lens, "top1_prob"));
    return grid;
  };

  it("a column range shows columns a..b, and cells map back to their own columns", () => {
    const grid = mount();
    grid.setView({ range: [3, 6] });
    expect(grid.nCols).toBe(4);
    expect(grid.cellAt(52 + 1, 22 + 1)).toEqual({ site: 3, col: 3 });
    expect(grid.cellAt(52 + grid.colLeft(3) + 1, 22 + 1)).toEqual({ site: 3, col: 6 });
    expect(grid.shows({ site: 0, col: 7 })).toBe(false);
    expect(grid.shows({ site: 0, col: 3 })).toBe(true);
    const r = grid.cellRect({ site: 1, col: 5 });
    expect(grid.cellAt(r.x + 1, r.y + 1)).toEqual({ site: 1, col: 5 });
    grid.setView({ range: [-2, -1] });
    expect(grid.cellAt(52 + 1, 22 + 1)).toEqual({ site: 3, col: 10 });
    grid.setTranspose(true); // the range picks rows now
    expect(grid.nRows).toBe(2);
    expect(grid.cellAt(120 + 1, 22 + 20 + 1)).toEqual({ site: 3, col: 11 });
    grid.destroy();
  });

  it("compact narrows every column; zoom scales rows, headers and columns", () => {
    const grid = mount();
    const normal = grid.colWidth(0);
    grid.setView({ compact: true });
    expect(grid.colWidth(0)).toBe(BASE.compactW);
    expect(grid.colWidth(0)).toBeLessThan(normal);
    grid.setView({ compact: false, zoom: 2 });
    expect(grid.cellH).toBe(40);
    expect(grid.headH).toBe(44);
    expect(grid.colWidth(0)).toBeGreaterThan(normal);
    const g = JSON.parse(grid.viewport.dataset.geometry!);
    expect(g.rowH).toBe(40);
    expect(g.colX[1]).toBe(grid.colWidth(0));
    grid.destroy();
  });

  it("height 0 lets the box be as high as the rows; > 0 caps it", () => {
    const grid = mount();
    grid.setHeight(0);
    expect(grid.viewport.style.maxHeight).toBe("none");
    grid.setHeight(300);
    expect(grid.viewport.style.maxHeight).toBe("300px");
    grid.destroy();
  });
});
