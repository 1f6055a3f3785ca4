// The status line (progress, request errors) and the error box (the `error` trait, failed prompts).
import { h } from "./dom";

export class Notices {
  readonly status: HTMLDivElement;
  readonly errorBox: HTMLDivElement;

  constructor() {
    this.status = h("div", "lw-status", "", { role: "status" });
    this.errorBox = h("div", "lw-error", "", { role: "alert" });
    this.errorBox.hidden = true;
  }

  setStatus(text: string, isError = false): void {
    this.status.textContent = text;
    this.status.classList.toggle("lw-status-error", isError);
  }

  /** Show an error ("" hides the box). */
  setError(text: string): void {
    this.errorBox.hidden = !text;
    this.errorBox.textContent = text;
  }
}
