// The prompt box: run a new prompt on the kernel; only the latest request's outcome is shown.
import type { Requester } from "./requests";
import type { LensModel, SetPromptResult } from "./model";
import type { Notices } from "./status";
import { h, type Disposers } from "./dom";

/** set_prompt reruns the model: allow it far longer than other requests. */
const PROMPT_TIMEOUT_MS = 600000;

export class PromptBox {
  readonly el: HTMLFormElement;
  private input = h("input", "lw-prompt-input", undefined, { type: "text", "aria-label": "prompt" });
  private busy = h("span", "lw-busy", "computing…");
  /** number of the latest request; an earlier one's reply or error is dropped */
  private seq = 0;

  constructor(private model: LensModel, private req: Requester, private notices: Notices, d: Disposers) {
    this.busy.hidden = true;
    this.el = h("form", "lw-prompt");
    this.el.append(this.input, h("button", "", "run", { type: "submit" }), this.busy);
    d.onSubmit(this.el, () => void this.run());
    d.onEnter(this.input, () => void this.run());
  }

  /** Show the prompt shown (in a batch: `prompts[prompt_index]`, which the front end switches
   * without the kernel; else the `prompt` trait), unless the user is typing in the box. */
  sync(fallback: string): void {
    if (document.activeElement === this.input) return;
    const prompts = this.model.get("prompts");
    const shown = Array.isArray(prompts) && prompts.length > 1 ? prompts[Number(this.model.get("prompt_index") ?? 0)] : undefined;
    this.input.value = shown ?? this.model.get("prompt") ?? fallback;
  }

  /** Show the `busy` trait; returns it. */
  syncBusy(): boolean {
    this.busy.hidden = !this.model.get("busy");
    return !this.busy.hidden;
  }

  async run(): Promise<void> {
    if (this.input.readOnly) return; // a page without a kernel (kernelless.ts): nothing can run it
    const mine = ++this.seq;
    this.notices.setStatus("");
    try {
      await this.req.request<SetPromptResult>("set_prompt", { prompt: this.input.value }, PROMPT_TIMEOUT_MS);
      if (mine === this.seq) this.notices.setStatus("");
    } catch (e) {
      const message = (e as Error).message;
      // a stopped recompute is no error: the previous grid stays (the task bar says so)
      if (mine === this.seq && message !== "stopped") this.notices.setError(message);
    }
  }
}
