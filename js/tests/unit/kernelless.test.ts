import { describe, expect, it } from "vitest";
import { NO_KERNEL_WHY } from "../../src/kernelless";
import { positionsNote } from "../../src/sync";
import { makeData, mount, submit } from "../fixture";

const tick = () => new Promise((r) => setTimeout(r, 0));

/** The kernel-only controls, named one by one (not through kernelless.ts's selector list). */
function kernelControls(el: HTMLElement) {
  const q = <T extends Element>(sel: string) => el.querySelector<T>(sel)!;
  return {
    run: q<HTMLButtonElement>("form.lw-prompt button[type=submit]"),
    generate: q<HTMLButtonElement>(".lw-generate"),
    count: q<HTMLInputElement>(".lw-generate-n"),
    stop: q<HTMLButtonElement>(".lw-stop"),
    search: q<HTMLInputElement>(".lw-search-input"),
    searchButton: q<HTMLButtonElement>("form.lw-search button[type=submit]"),
  };
}

describe("a page without a kernel", () => {
  it("disables every kernel-only control, saying why, and the prompt box is read-only", async () => {
    const { model, el, cleanup } = await mount({ data: makeData(), _kernel: false });
    for (const [name, c] of Object.entries(kernelControls(el))) {
      expect(c.disabled, name).toBe(true);
      expect(c.title, name).toBe(NO_KERNEL_WHY);
    }
    const prompt = el.querySelector<HTMLInputElement>(".lw-prompt-input")!;
    expect(prompt.readOnly).toBe(true);
    expect(prompt.title).toContain("needs a kernel");
    // Enter in the read-only box, or a submit, asks nothing
    submit(el, "prompt", "typed anyway");
    prompt.dispatchEvent(new KeyboardEvent("keydown", { key: "Enter", bubbles: true }));
    await tick();
    expect(model.sent.filter((m) => m.type === "set_prompt")).toEqual([]);
    // a control that appears later (the detail panel's buttons) and one a module re-enables
    const more = document.createElement("button");
    more.className = "lw-more";
    el.querySelector(".lens-widget")!.appendChild(more);
    kernelControls(el).generate.disabled = false;
    await tick();
    expect(more.disabled).toBe(true);
    expect(kernelControls(el).generate.disabled).toBe(true);
    cleanup();
  });

  it("a widget with a kernel keeps them enabled", async () => {
    const { el, cleanup } = await mount({ data: makeData() });
    for (const [name, c] of Object.entries(kernelControls(el))) expect(c.disabled, name).toBe(false);
    expect(el.querySelector<HTMLInputElement>(".lw-prompt-input")!.readOnly).toBe(false);
    cleanup();
  });
});

describe("positionsNote (the title's positions)", () => {
  it("says nothing for the whole prompt, else which positions", () => {
    expect(positionsNote([0, 1, 2, 3], 4)).toBe("");
    expect(positionsNote([26, 27, 28, 29, 30, 31, 32, 33], 34)).toBe("positions 26–33 of 34");
    expect(positionsNote([25], 34)).toBe("position 25 of 34");
    expect(positionsNote([0, 5, 9], 34)).toBe("positions 0, 5, 9 of 34");
    expect(positionsNote([0, 1, 2, 3], 6)).toBe("positions 0–3 of 6");
    expect(positionsNote(Array.from({ length: 12 }, (_, i) => 2 * i), 40)).toBe("12 positions of 40");
  });
});
