// Long work in the kernel: the "generate" button, progress (done of total, time left) and a stop
// button. Progress arrives as `progress` messages (docs/wire.md); stopping keeps the grid there is.
import type { Requester } from "./requests";
import type { LensModel } from "./model";
import type { Notices } from "./status";
import { h, type Disposers } from "./dom";

/** A `progress` message from the kernel. */
export interface ProgressMessage {
  type: "progress";
  /** "generate" | "compute" */
  task: string;
  /** "running" | "done" | "stopped" | "error" */
  state: string;
  done: number;
  total: number;
  eta_s: number | null;
  elapsed_s: number;
}

export function isProgress(msg: unknown): msg is ProgressMessage {
  return !!msg && typeof msg === "object" && (msg as { type?: unknown }).type === "progress";
}

/** Seconds as a person reads them: "8 s", "2 min 05 s". */
export function formatSeconds(s: number): string {
  if (!Number.isFinite(s) || s < 0) return "";
  const r = Math.round(s);
  if (r < 60) return `${r} s`;
  const m = Math.floor(r / 60);
  return `${m} min ${String(r % 60).padStart(2, "0")} s`;
}

/** The status line of a running task: "generating 3 / 20 tokens · 4 s left". */
export function progressText(p: ProgressMessage): string {
  const what = p.task === "generate" ? "generating" : "computing";
  const unit = p.task === "generate" ? "tokens" : "chunks";
  const left = p.eta_s == null ? "" : ` · ${formatSeconds(p.eta_s)} left`;
  return `${what} ${p.done} / ${p.total} ${unit}${left}`;
}

/** generate requests may take minutes (they reply when the last token is in). */
const GENERATE_TIMEOUT_MS = 3600000;

export class TaskBar {
  readonly el: HTMLDivElement;
  readonly generateButton = h("button", "lw-generate", "generate", { type: "button", title: "let the model write, with the lens on every new token" });
  readonly count = h("input", "lw-generate-n", undefined, { type: "number", min: "1", max: "4096", value: "20", "aria-label": "new tokens" });
  readonly stopButton = h("button", "lw-stop", "stop", { type: "button", title: "stop: keep the grid there is" });
  readonly bar = h("progress", "lw-progress", undefined, { max: "1", value: "0" });
  readonly text = h("span", "lw-progress-text", "", { role: "status" });
  /** the state of the latest task ("" none yet) */
  state = "";
  /** what another request's work (a patch) is doing ("" none): its progress is told in its words */
  private work = "";

  constructor(private model: LensModel, private req: Requester, private notices: Notices, private root: HTMLElement, d: Disposers) {
    this.el = h("div", "lw-tasks");
    this.el.append(this.generateButton, this.count, this.bar, this.text, this.stopButton);
    this.setRunning(false);
    d.listen(this.generateButton, "click", () => void this.generate());
    d.listen(this.stopButton, "click", () => void this.stop());
    d.onEnter(this.count, () => void this.generate());
  }

  private setRunning(running: boolean): void {
    this.stopButton.hidden = !running;
    this.bar.hidden = !running;
    this.generateButton.disabled = running;
    this.root.dataset.task = running ? "running" : this.state;
  }

  /** Show a `progress` message. */
  onProgress(p: ProgressMessage): void {
    const running = p.state === "running";
    this.state = p.state;
    this.root.dataset.taskKind = p.task;
    if (running) {
      this.bar.max = Math.max(1, p.total);
      this.bar.value = Math.min(p.done, p.total);
      this.text.textContent = this.work ? `${this.work} (${p.done} / ${p.total})` : progressText(p);
      this.root.dataset.progress = `${p.done}/${p.total}`;
    } else if (this.work) {
      // the request's reply ends it (endWork) and says how
    } else {
      const what = p.task === "generate" ? "generation" : "recompute";
      this.text.textContent =
        p.state === "stopped" ? `${what} stopped · the grid there is stays` : p.state === "error" ? `${what} failed` : `${what} done in ${formatSeconds(p.elapsed_s)}`;
    }
    this.setRunning(running || !!this.work);
  }

  /** Another request's long work (a patch): shown running with `text`, progress and stop. */
  startWork(text: string): void {
    this.el.hidden = false;
    this.work = text;
    this.setRunning(true);
    this.text.textContent = text;
  }

  /** That work ended: say how. */
  endWork(text: string): void {
    this.work = "";
    this.state = "done";
    this.setRunning(false);
    this.text.textContent = text;
  }

  async generate(): Promise<void> {
    const n = Math.max(1, Math.min(4096, Math.floor(Number(this.count.value) || 20)));
    this.notices.setStatus("");
    this.setRunning(true);
    this.text.textContent = "generating…";
    try {
      await this.req.request("generate", { max_new_tokens: n }, GENERATE_TIMEOUT_MS);
    } catch (e) {
      this.notices.setError((e as Error).message);
      this.setRunning(false);
    }
  }

  async stop(): Promise<void> {
    try {
      await this.req.request("stop", {});
    } catch (e) {
      this.notices.setError((e as Error).message);
    }
  }

  /** Whether this widget can ask the kernel for anything (an exported page cannot). */
  sync(): void {
    const prompts = this.model.get("prompts") ?? [];
    const lenses = this.model.get("lenses") ?? [];
    this.generateButton.hidden = this.count.hidden = prompts.length > 1 || lenses.length > 1;
  }
}
