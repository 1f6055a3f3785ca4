import { describe, expect, it } from "vitest";
import { render } from "../../src/widget";
import { Grid } from "../../src/grid";
import { decodeLens } from "../../src/data";
import { metricView } from "../../src/color";
import { FakeModel, makeData } from "../fixture";

const tick = () => new Promise((r) => setTimeout(r, 0));

function reply(model: FakeModel, type: string, result: unknown, buffers: DataView[] = []) {
  const msg = [...model.sent].reverse().find((m) => m.type === type);
  if (!msg) throw new Error(`no ${type} request sent`);
  model.emit("msg:custom", { type: "reply", request_id: msg.request_id, ok: true, result }, buffers);
  return msg;
}

describe("detail panel", () => {
  it("clicking a token tracks it, the trajectory asks the kernel for tokens it lacks, full detail uses cell_detail", async () => {
    const model = new FakeModel({ data: makeData(4, 6, 3), selected: { site: 1, col: 2, position: 2 } });
    const el = document.createElement("div");
    const cleanup = render({ model: model as never, el });
    const rows = el.querySelectorAll<HTMLElement>(".lw-detail-row");
    expect(rows).toHaveLength(3);
    // the trajectory of the final top-1 / next token: id 5 is at rank 0 of the final layer (3+2+0)%8 = 5
    // and next token at col 2 is input_ids[3] = 9 % 8 = 1; id 1 is not tracked and not always in top-k
    const traj = model.sent.find((m) => m.type === "trajectory")!;
    expect(traj.col).toBe(2);
    expect(traj.token_ids).toEqual(expect.arrayContaining([1]));
    expect((traj.token_ids as number[]).includes(3)).toBe(false);
    const n = (traj.token_ids as number[]).length;
    const probs = new Float32Array(4 * n).fill(0.3);
    reply(model, "trajectory", { probs: { dtype: "float32", shape: [4, n], buffer_index: 0 } }, [new DataView(probs.buffer)]);
    await tick();
    expect(el.querySelector(".lw-traj .lw-note")!.textContent).toBe("");

    rows[0].querySelector<HTMLButtonElement>(".lw-track")!.click();
    const tr = model.sent.find((m) => m.type === "track")!;
    expect(tr.token).toBe(Number(rows[0].dataset.id));
    reply(model, "track", { token_id: tr.token, text: "x" });
    await tick();
    expect(el.querySelector(".lw-status")!.textContent).toContain(`tracking #${tr.token}`);

    el.querySelector<HTMLButtonElement>(".lw-more")!.click();
    const cd = model.sent.find((m) => m.type === "cell_detail")!;
    expect(cd).toMatchObject({ site: 1, col: 2, k: 50 });
    const ids = new Int32Array([6, 7]);
    const ps = new Float32Array([0.6, 0.1]);
    reply(model, "cell_detail", {
      top_ids: { dtype: "int32", shape: [2], buffer_index: 0 },
      top_probs: { dtype: "float32", shape: [2], buffer_index: 1 },
      tokens: { "6": "<script>x</script>", "7": " y" },
    }, [new DataView(ids.buffer), new DataView(ps.buffer)]);
    await tick();
    const full = el.querySelectorAll<HTMLElement>(".lw-full .lw-detail-row");
    expect(Array.from(full).map((r) => r.dataset.id)).toEqual(["6", "7"]);
    expect(full[0].querySelector(".lw-tok")!.textContent).toBe("<script>x</script>");
    expect(el.querySelector(".lw-full script")).toBeNull();
    cleanup();
  });

  it("an ok:false reply shows its error and keeps the grid", async () => {
    const model = new FakeModel({ data: makeData() });
    const el = document.createElement("div");
    const cleanup = render({ model: model as never, el });
    el.querySelector<HTMLInputElement>(".lw-prompt-input")!.value = "new";
    el.querySelector("form.lw-prompt")!.dispatchEvent(new Event("submit", { cancelable: true }));
    const msg = model.sent.find((m) => m.type === "set_prompt")!;
    expect(msg.prompt).toBe("new");
    model.emit("msg:custom", { type: "reply", request_id: msg.request_id, ok: false, error: "prompt too long" }, []);
    await tick();
    expect(el.querySelector(".lw-error")!.textContent).toBe("prompt too long");
    expect(el.querySelector("canvas.lw-canvas")).toBeTruthy();
    cleanup();
  });
});

describe("grid geometry", () => {
  it("maps canvas coordinates to cells with the frozen final layer, both orientations", () => {
    const parent = document.createElement("div");
    const lens = decodeLens(makeData(4, 6, 3))!;
    const grid = new Grid(parent, { onHover() {}, onClick() {}, onKey() {} });
    grid.setData(lens, metricView(lens, "top1_prob"));
    expect(grid.cellAt(10, 10)).toBeNull(); // header
    expect(grid.cellAt(52 + 1, 22 + 1)).toEqual({ site: 3, col: 0 });
    expect(grid.cellAt(52 + 56 * 2 + 5, 22 + 20 * 3 + 5)).toEqual({ site: 0, col: 2 });
    expect(grid.cellAt(52 + 56 * 6 + 5, 30)).toBeNull(); // past the last column
    expect(grid.cellRect({ site: 0, col: 2 })).toEqual({ x: 52 + 112, y: 22 + 60, w: 56, h: 20 });
    grid.setTranspose(true);
    expect(grid.cellAt(120 + 1, 22 + 1)).toEqual({ site: 3, col: 0 });
    expect(grid.cellAt(120 + 56 * 3 + 1, 22 + 20 * 5 + 1)).toEqual({ site: 0, col: 5 });
    for (const cell of [{ site: 2, col: 4 }, { site: 0, col: 0 }]) {
      const r = grid.cellRect(cell);
      expect(grid.cellAt(r.x + 1, r.y + 1)).toEqual(cell);
    }
    grid.destroy();
    expect(parent.children).toHaveLength(0);
  });
});
