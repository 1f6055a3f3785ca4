// Request/reply over anywidget custom messages, tagged with a request id.
import type { AnyModel } from "@anywidget/types";
import { decodeResult, type Bytes } from "./data";

interface Pending {
  resolve(v: unknown): void;
  reject(e: Error): void;
  timer: ReturnType<typeof setTimeout>;
}

export class Requester {
  private pending = new Map<string, Pending>();
  private seq = 0;
  private prefix = Math.random().toString(36).slice(2, 8);
  private handler: (msg: unknown, buffers?: Bytes[]) => void;

  constructor(private model: AnyModel, private timeoutMs = 60000) {
    this.handler = (msg, buffers) => this.onMessage(msg, buffers);
    model.on("msg:custom", this.handler);
  }

  get size(): number {
    return this.pending.size;
  }

  request<T = Record<string, unknown>>(type: string, fields: Record<string, unknown> = {}, timeoutMs = this.timeoutMs): Promise<T> {
    const request_id = `${this.prefix}-${++this.seq}`;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(request_id);
        reject(new Error(`${type}: no reply from the kernel after ${Math.round(timeoutMs / 1000)} s`));
      }, timeoutMs);
      this.pending.set(request_id, { resolve: resolve as (v: unknown) => void, reject, timer });
      try {
        this.model.send({ ...fields, type, request_id });
      } catch (e) {
        clearTimeout(timer);
        this.pending.delete(request_id);
        reject(e instanceof Error ? e : new Error(String(e)));
      }
    });
  }

  private onMessage(msg: unknown, buffers?: Bytes[]): void {
    if (!msg || typeof msg !== "object") return;
    const m = msg as { type?: string; request_id?: string; ok?: boolean; result?: unknown; error?: string };
    if (m.type !== "reply" || typeof m.request_id !== "string") return;
    const p = this.pending.get(m.request_id);
    if (!p) return;
    this.pending.delete(m.request_id);
    clearTimeout(p.timer);
    if (m.ok) {
      try {
        p.resolve(decodeResult(m.result ?? {}, buffers));
      } catch (e) {
        p.reject(e instanceof Error ? e : new Error(String(e)));
      }
    } else p.reject(new Error(String(m.error ?? "request failed")));
  }

  dispose(): void {
    this.model.off("msg:custom", this.handler);
    for (const p of this.pending.values()) {
      clearTimeout(p.timer);
      p.reject(new Error("widget closed"));
    }
    this.pending.clear();
  }
}
