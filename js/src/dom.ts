// Tiny DOM helpers: text only ever goes in through textContent; listeners are released together.
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  cls = "",
  text?: string | number,
  attrs?: Record<string, string>,
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (cls) el.className = cls;
  if (text !== undefined) el.textContent = String(text);
  if (attrs) for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

interface Observable {
  on(ev: string, cb: () => void): void;
  off(ev: string, cb: () => void): void;
}

/** Everything a view subscribed to, released by one `dispose()`. */
export class Disposers {
  private list: (() => void)[] = [];

  add(fn: () => void): void {
    this.list.push(fn);
  }

  /** A DOM listener (typed by the event's name on elements). */
  listen<K extends keyof HTMLElementEventMap>(target: HTMLElement, type: K, fn: (ev: HTMLElementEventMap[K]) => void, opts?: AddEventListenerOptions): void;
  listen(target: EventTarget, type: string, fn: (ev: Event) => void, opts?: AddEventListenerOptions): void;
  listen(target: EventTarget, type: string, fn: (ev: never) => void, opts?: AddEventListenerOptions): void {
    const f = fn as EventListener;
    target.addEventListener(type, f, opts);
    this.add(() => target.removeEventListener(type, f, opts));
  }

  /** A model event (e.g. "change:metric"). */
  on(model: Observable, ev: string, cb: () => void): void {
    model.on(ev, cb);
    this.add(() => model.off(ev, cb));
  }

  /** Enter (outside an IME composition) in an input runs `run`. */
  onEnter(input: HTMLInputElement, run: () => void): void {
    this.listen(input, "keydown", (ev) => {
      const k = ev as KeyboardEvent;
      if (k.key === "Enter" && !k.isComposing) {
        k.preventDefault();
        run();
      }
    });
  }

  /** A form's submit (the page does not navigate). */
  onSubmit(form: HTMLFormElement, run: () => void): void {
    this.listen(form, "submit", (ev) => {
      ev.preventDefault();
      run();
    });
  }

  dispose(): void {
    for (const d of this.list.splice(0)) d();
  }
}
