// A page without a kernel (an exported page): every control that only the kernel can answer is
// disabled, its title saying why, and the prompt box is read-only. Controls created later (the
// detail panel's buttons) are caught as they appear.

/** What a disabled kernel-only control's title says. */
export const NO_KERNEL_WHY = "needs a kernel: this is an exported page without one (run the widget in a notebook to use this)";

/** The kernel-only controls: the prompt's run button, generation (button, count, stop), the
 * vocabulary search, the detail panel's "full vocabulary detail" and track buttons, the choice of
 * another pair to compare (the kernel computes a comparison), and any control marked
 * `data-kernel-only` (new kernel requests should mark theirs). */
export const KERNEL_ONLY = [
  ".lw-prompt button",
  ".lw-tasks button",
  ".lw-tasks input",
  ".lw-search input",
  ".lw-search button",
  ".lw-more",
  ".lw-track",
  ".lw-cmp-a",
  ".lw-cmp-b",
  "[data-kernel-only]",
].join(",");

/** Whether the host has a kernel: an exported page's in-memory model answers `_kernel` with false. */
export function hasKernel(model: { get(key: string): unknown }): boolean {
  return model.get("_kernel") !== false;
}

type Control = HTMLButtonElement | HTMLInputElement | HTMLSelectElement | HTMLTextAreaElement;

function isControl(el: Element): el is Control {
  return el instanceof HTMLButtonElement || el instanceof HTMLInputElement || el instanceof HTMLSelectElement || el instanceof HTMLTextAreaElement;
}

/** Disable the kernel-only controls under `root` (now and as they appear) and make the prompt box
 * read-only; returns the function that stops watching. */
export function disableKernelControls(root: HTMLElement): () => void {
  root.dataset.kernel = "none";
  const apply = () => {
    for (const el of Array.from(root.querySelectorAll(KERNEL_ONLY))) {
      if (isControl(el) && !el.disabled) {
        el.disabled = true;
        el.title = NO_KERNEL_WHY;
      }
    }
    const prompt = root.querySelector<HTMLInputElement>(".lw-prompt-input");
    if (prompt && !prompt.readOnly) {
      prompt.readOnly = true;
      prompt.title = `the prompt shown; ${NO_KERNEL_WHY}`;
    }
  };
  apply();
  const watch = new MutationObserver(apply);
  // new elements, and a control a module re-enables (e.g. the generate button after a task)
  watch.observe(root, { childList: true, subtree: true, attributes: true, attributeFilter: ["disabled", "readonly"] });
  return () => watch.disconnect();
}
