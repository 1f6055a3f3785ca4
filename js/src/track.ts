// Tracking a token (from the search results or the panel): one request, progress in the status line.
import type { Requester } from "./requests";
import type { TrackResult } from "./model";
import type { Notices } from "./status";

export type Track = (id: number) => Promise<void>;

export function tracker(req: Requester, notices: Notices): Track {
  return async (id) => {
    notices.setStatus(`tracking #${id}…`);
    try {
      const r = await req.request<TrackResult>("track", { token: id });
      notices.setStatus(`tracking #${r.token_id}`);
    } catch (e) {
      notices.setStatus((e as Error).message, true);
    }
  };
}
