// Tracking a token (from the search results or the panel): one request, progress in the status line.
import type { Requester } from "./requests";
import type { TrackResult } from "./model";
import type { Notices } from "./status";
import { idLabel } from "./format";

export type Track = (id: number) => Promise<void>;

/** Tracking recomputes every lens and prompt in the background (with progress and stop): allow it long. */
const TRACK_TIMEOUT_MS = 600000;

export function tracker(req: Requester, notices: Notices): Track {
  return async (id) => {
    notices.setStatus(`tracking token ${idLabel(id)}…`);
    try {
      const r = await req.request<TrackResult>("track", { token: id }, TRACK_TIMEOUT_MS);
      notices.setStatus(`tracking token ${idLabel(r.token_id)}`);
    } catch (e) {
      const message = (e as Error).message;
      notices.setStatus(message === "stopped" ? `not tracking token ${idLabel(id)}: stopped` : message, message !== "stopped");
    }
  };
}
