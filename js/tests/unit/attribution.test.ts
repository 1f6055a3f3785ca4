import { describe, expect, it } from "vitest";
import { AttributionView, decodeAttribution, heatCell, heatCellAt, HEAT_CELL, HEAT_HEAD_H, HEAT_HEAD_W, targetLabel } from "../../src/attribution";
import { decodeResult, decodeLens } from "../../src/data";
import { answer, FakeModel, makeData, mount, wire } from "../fixture";
import { Requester } from "../../src/requests";

const tick = () => new Promise((r) => setTimeout(r, 0));

/** A reply laid out as lens_widget.attribution.as_data + the session's fields (heads as a wire array). */
function reply(over: Record<string, unknown> = {}) {
  return {
    site: 2, col: 3, prompt_index: 0, lens: "logit lens", site_name: "resid_out_1", position: 3, lens_name: "logit lens",
    kind: "logit", token_ids: [0], tokens: { "0": "<img src=x onerror=alert(1)>" },
    logit: 1.25, sum: 1.2500001, error: 1e-7, resid_error: 1e-7,
    names: ["embed", "L0.H0", "L0.H1", "L0.mlp", "L1.H0", "L1.H1", "L1.mlp"],
    kinds: ["embed", "head", "head", "mlp", "head", "head", "mlp"],
    layers: [-1, 0, 0, 0, 1, 1, 1],
    heads_of_rows: [-1, 0, 1, -1, 0, 1, -1],
    values: [0.1, -0.3, 0.05, 0.2, 0.9, null, 0.3],
    bars: { names: ["L1.H0", "L0.H0", "L1.mlp"], kinds: ["head", "head", "mlp"], values: [0.9, -0.3, 0.3] },
    heads: { values: wire("float32", [2, 2], [-0.3, 0.05, 0.9, NaN]), layers: [0, 1], n_heads: 2 },
    remainder: [{ name: "remainder: final-norm shift", layer: -1, value: 0.0000001 }],
    ...over,
  };
}

describe("decodeAttribution", () => {
  it("reads the rows, the bars, the rest not in the bars, the remainder apart and the heads", () => {
    const a = decodeAttribution(decodeResult(reply()));
    expect([a.site, a.col, a.siteName, a.position, a.kind]).toEqual([2, 3, "resid_out_1", 3, "logit"]);
    expect(a.rows.length).toBe(7);
    expect(Number.isNaN(a.rows[5].value)).toBe(true); // null on the wire (a non-finite value) is NaN
    expect(a.bars.map((b) => b.name)).toEqual(["L1.H0", "L0.H0", "L1.mlp"]);
    // the rest: embed, L0.H1, L0.mlp (L1.H1 is NaN: counted, not summed)
    expect(a.rest.count).toBe(4);
    expect(a.rest.sum).toBeCloseTo(0.35, 12);
    expect(a.remainder).toEqual([{ name: "remainder: final-norm shift", layer: -1, value: 0.0000001 }]);
    expect(a.heads.layers).toEqual([0, 1]);
    expect(a.heads.nHeads).toBe(2);
    expect(Array.from(a.heads.values).slice(0, 3)).toEqual([Math.fround(-0.3), Math.fround(0.05), Math.fround(0.9)]);
    expect(a.tokens.get(0)).toBe("<img src=x onerror=alert(1)>");
  });

  it("takes heads as nested lists too, and refuses a layout that does not add up", () => {
    const a = decodeAttribution(reply({ heads: { values: [[1, 2, 3]], layers: [4], n_heads: 3 } }));
    expect(Array.from(a.heads.values)).toEqual([1, 2, 3]);
    expect(() => decodeAttribution(reply({ heads: { values: [1, 2, 3], layers: [0, 1], n_heads: 2 } }))).toThrow(/3 values for 2 layers/);
    expect(() => decodeAttribution(reply({ names: ["a"], values: [1, 2] }))).toThrow(/differ in length/);
    expect(() => decodeAttribution(null)).toThrow();
  });

  it("labels a logit or a logit difference in display form", () => {
    expect(targetLabel(decodeAttribution(reply()))).toBe("logit(<img␣src=x␣onerror=alert(1)>)");
    const d = decodeAttribution(reply({ kind: "logit_diff", token_ids: [5, 6], tokens: { "5": " Mary", "6": " John" } }));
    expect(targetLabel(d)).toBe("logit(␣Mary) − logit(␣John)");
  });
});

describe("heatCellAt", () => {
  it("maps canvas coordinates to (row, head), null off the cells", () => {
    expect(heatCellAt(HEAT_HEAD_W + 1, HEAT_HEAD_H + 1, 2, 4)).toEqual({ row: 0, head: 0 });
    expect(heatCellAt(HEAT_HEAD_W + 3 * HEAT_CELL + 2, HEAT_HEAD_H + HEAT_CELL + 2, 2, 4)).toEqual({ row: 1, head: 3 });
    expect(heatCellAt(HEAT_HEAD_W - 1, HEAT_HEAD_H + 1, 2, 4)).toBeNull();
    expect(heatCellAt(HEAT_HEAD_W + 4 * HEAT_CELL, HEAT_HEAD_H + 1, 2, 4)).toBeNull();
    expect(heatCellAt(HEAT_HEAD_W + 1, HEAT_HEAD_H + 2 * HEAT_CELL, 2, 4)).toBeNull();
  });

  it("gives big models smaller cells, never under 4 px, and finds their cells", () => {
    expect(heatCell(2, 4)).toBe(HEAT_CELL);
    expect(heatCell(32, 32)).toBe(14);
    expect(heatCell(80, 64)).toBe(5);
    expect(heatCell(200, 8)).toBe(4);
    expect(heatCellAt(HEAT_HEAD_W + 63 * 5 + 1, HEAT_HEAD_H + 79 * 5 + 1, 80, 64)).toEqual({ row: 79, head: 63 });
    expect(heatCellAt(HEAT_HEAD_W + 64 * 5 + 1, HEAT_HEAD_H + 1, 80, 64)).toBeNull();
  });
});

describe("the attribution view", () => {
  it("asks for the cell (the top-1 by default, else the token chosen) and draws the reply as text", async () => {
    const model = new FakeModel({});
    const req = new Requester(model as never);
    const lens = decodeLens(makeData())!;
    const view = new AttributionView({ req, kernel: () => ({ ok: true, reason: "" }), diffTokens: () => [3, 7], carried: () => ({}), promptIndex: () => 0 });
    view.setCell(lens, { site: 2, col: 3 });
    const go = view.el.querySelector<HTMLButtonElement>(".lw-attr-go")!;
    expect(go.disabled).toBe(false);
    const options = Array.from(view.el.querySelectorAll("option"), (o) => o.textContent);
    expect(options[0]).toMatch(/^top-1: /);
    expect(options).toContain(`logit(${lens.display(3)}) − logit(${lens.display(7)})`);
    go.click();
    const [msg] = model.sent;
    expect([msg.type, msg.site, msg.col, "token" in msg]).toEqual(["attribution", 2, 3, false]);
    answer(model, msg, { result: reply() });
    await tick();
    expect(view.el.dataset.state).toBe("done");
    expect(view.el.querySelector("img")).toBeNull();
    expect(view.el.querySelector(".lw-attr-target")!.textContent).toBe("logit(<img␣src=x␣onerror=alert(1)>)");
    const rows = Array.from(view.el.querySelectorAll(".lw-attr-row"));
    expect(rows.map((r) => r.classList.contains("lw-neg"))).toEqual([false, true, false]);
    expect(view.el.querySelector(".lw-attr-rest .lw-attr-name")!.textContent).toBe("4 other components");
    expect(view.el.querySelector(".lw-attr-rem-row .lw-attr-name")!.textContent).toBe("remainder: final-norm shift");
    // the pair
    const pick = view.el.querySelector<HTMLSelectElement>(".lw-attr-token")!;
    pick.value = String(options.length - 1);
    go.click();
    expect(model.sent[1].token).toEqual([3, 7]);
    // another cell drops the old answer, and a late reply for the old one is ignored
    view.setCell(lens, { site: 1, col: 1 });
    answer(model, model.sent[1], { result: reply() });
    await tick();
    expect(view.el.querySelector(".lw-attr-row")).toBeNull();
    req.dispose();
  });

  it("is disabled, its title saying why, without a kernel", () => {
    const model = new FakeModel({});
    const view = new AttributionView({ req: new Requester(model as never), kernel: () => ({ ok: false, reason: "no kernel (exported page)" }), diffTokens: () => [], carried: () => ({}), promptIndex: () => 0 });
    view.setCell(decodeLens(makeData()), { site: 0, col: 0 });
    const go = view.el.querySelector<HTMLButtonElement>(".lw-attr-go")!;
    expect(go.disabled).toBe(true);
    expect(go.title).toBe("attribution needs the kernel: no kernel (exported page)");
  });

  it("sits in the detail panel of a clicked cell, and the exported page's answer disables it", async () => {
    const { model, el, cleanup } = await mount({ data: makeData(), selected: { site: 1, col: 2, position: 2 } });
    expect(el.querySelector(".lw-detail .lw-attr-go")).toBeTruthy();
    answer(model, model.sent.find((m) => m.type === "view_ready")!, { error: "no kernel (exported page)" });
    await tick();
    expect(el.querySelector<HTMLButtonElement>(".lw-attr-go")!.disabled).toBe(true);
    cleanup();
    expect(model.listenerCount()).toBe(0);
  });
});
