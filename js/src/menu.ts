// A drop-down menu of the toolbar's secondary controls ("more ▾"): a <details> element whose panel
// floats over the grid; a click outside or Escape closes it.
import { h, type Disposers } from "./dom";

export class MoreMenu {
  readonly el: HTMLDetailsElement;
  private panel: HTMLDivElement;

  constructor(label: string, d: Disposers) {
    this.el = h("details", "lw-more-menu");
    const summary = h("summary", "lw-more-summary", label, { title: "more controls" });
    this.panel = h("div", "lw-more-panel", undefined, { role: "group", "aria-label": label });
    this.el.append(summary, this.panel);
    const close = () => (this.el.open = false);
    d.listen(document.body, "pointerdown", (ev) => {
      if (this.el.open && !this.el.contains(ev.target as Node)) close();
    });
    d.listen(this.el, "keydown", (ev) => {
      if ((ev as KeyboardEvent).key === "Escape" && this.el.open) {
        close();
        summary.focus();
      }
    });
  }

  /** Add controls, each on its own line of the menu. */
  add(...items: HTMLElement[]): void {
    for (const item of items) this.panel.appendChild(h("div", "lw-more-item")).appendChild(item);
  }
}
