"""The message protocol, whole: every message from the front end is answered here.

One handler per message type, each checking its fields and calling the widget's public API;
quick requests reply at once, long ones (:data:`BACKGROUND`) start background work and reply
when it ends. Malformed requests raise :class:`RequestError` and get an ``ok: false`` reply; no
request can kill the widget's message loop (see ``docs/wire.md``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from ..inputs import PromptError
from ..progress import Stopped
from ..tokens import TokenLookupError
from ..wire import lift_arrays

if TYPE_CHECKING:  # the widget imports this module; this is for type checkers only
    from .widget import LensWidget

__all__ = ["RequestError", "REQUESTS", "BACKGROUND", "MAX_K", "int_in", "handle", "start_background", "handle_message", "reply_to"]

MAX_K = 200


class RequestError(ValueError):
    """A front-end request that cannot be answered (the reply says why)."""


def int_in(name: str, value: Any, lo: int, hi: int) -> int:
    """``value`` if it is an int (not a bool) in ``lo..hi``, else a :class:`RequestError`."""
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise RequestError(f"{name} must be an int in {lo}..{hi}, got {value!r}")
    return value


def _detail_options(m: dict[str, Any]) -> tuple[int, list[Any]]:
    """``k`` and ``token_ids`` of a detail request, checked."""
    k = int_in("k", m.get("k", 50), 1, MAX_K)
    ids = m.get("token_ids") or []
    if not isinstance(ids, list):
        raise RequestError("token_ids must be a list of token ids")
    return k, ids


def _cell_detail(w: "LensWidget", m: dict[str, Any]) -> dict[str, Any]:
    site, col = w.check_cell(m.get("site"), m.get("col"))
    return w.cell_detail(site, col, *_detail_options(m))


def _compare_detail(w: "LensWidget", m: dict[str, Any]) -> dict[str, Any]:
    site, col = m.get("site"), m.get("col")
    if not isinstance(site, int) or not isinstance(col, int) or isinstance(site, bool) or isinstance(col, bool):
        raise RequestError("site and col must be ints")
    return w.compare_detail(site, col, *_detail_options(m))


def _search(w: "LensWidget", m: dict[str, Any]) -> dict[str, Any]:
    query = m.get("query")
    if not isinstance(query, str):
        raise RequestError("query must be a string")
    return w.search(query, int_in("limit", m.get("limit", 20), 1, MAX_K))


def _track(w: "LensWidget", m: dict[str, Any]) -> dict[str, Any]:
    token = m.get("token")
    if not isinstance(token, (int, str)) or isinstance(token, bool):
        raise RequestError("token must be an id or a string")
    tid = w.track(token)
    return {"token_id": tid, "text": w.result.token(tid)}


def _untrack(w: "LensWidget", m: dict[str, Any]) -> dict[str, Any]:
    w.untrack(int_in("token_id", m.get("token_id", -1), 0, 2**31 - 1))
    return {"tracked": list(w.tracked)}


def _trajectory(w: "LensWidget", m: dict[str, Any]) -> dict[str, Any]:
    _, col = w.check_cell(0, m.get("col"))
    ids = m.get("token_ids")
    if not isinstance(ids, list) or not ids or len(ids) > 64:
        raise RequestError("token_ids must be a non-empty list of at most 64 ids")
    return w.trajectory(col, ids)


def _token_or_pair(value: Any) -> Any:
    """``token`` of an attribution request: absent (the cell's top-1), an id, a string, or a
    pair ``[a, b]`` of those (a logit difference)."""
    def one(x: Any) -> bool:
        return (isinstance(x, int) and not isinstance(x, bool)) or (isinstance(x, str) and 0 < len(x) <= 256)

    if value is None or one(value):
        return value
    if isinstance(value, list) and len(value) == 2 and all(one(x) for x in value):
        return tuple(value)
    raise RequestError("token must be a token id, a string, or a pair [a, b] of those (a logit difference)")


def _start_attribution(w: "LensWidget", m: dict[str, Any], reply: Callable[[Any, Any], None]) -> Any:
    """An attribution runs the model (one forward pass): in the background, after any recompute
    queued before it (never two passes with hooks at once), its fields checked now."""
    w.check_cell(m.get("site"), m.get("col"))
    token, top = _token_or_pair(m.get("token")), int_in("top", m.get("top", 20), 1, MAX_K)
    site, col = m["site"], m["col"]
    return w.run_in_background(lambda: w.attribution(site, col, token, top), reply)


def _start_patch(w: "LensWidget", m: dict[str, Any], reply: Callable[[Any, Any], None]) -> Any:
    """A patch runs the model (two forward passes): in the background. ``source``:
    ``[prompt_index, site, col]``, ``target``: ``[prompt_index, col]``; checked now."""
    source, target = m.get("source"), m.get("target")
    w.check_patch(source, target)

    def work() -> dict[str, Any]:
        p = w.patch(source, target)
        return {"site": source[1], "source": source, "target": target, "target_position": p.target_position,
                "seconds": round(float(p.meta["seconds"]), 3), "max_js": float(np.nanmax(p.comparison.js)) if p.comparison.js.size else 0.0}

    return w.run_in_background(work, reply)


def _start_sweep(w: "LensWidget", m: dict[str, Any], reply: Callable[[Any, Any], None]) -> Any:
    """An activation-patching sweep runs the model once per ``batch_size`` patches: in the
    background, with progress (patches done) and stop. ``clean`` and ``corrupt``: prompt indices
    of the batch shown; ``tokens``: ``[a, b]`` (absent: the logit-difference pair, else the first
    two tracked); checked now. The grid arrives as the ``sweep`` trait, the reply sums it up."""
    return w.start_sweep(_prompt_index(m.get("clean"), "clean"), _prompt_index(m.get("corrupt"), "corrupt"), m.get("tokens"),
                         m.get("batch_size", 32), reply)


def _prompt_index(value: Any, name: str) -> int:
    """A prompt index of a request (a text never comes from the front end)."""
    if not isinstance(value, int) or isinstance(value, bool):
        raise RequestError(f"{name} must be the index of a prompt shown, got {value!r}")
    return value


def _stop(w: "LensWidget", m: dict[str, Any]) -> dict[str, Any]:
    return {"stopped": w.stop()}


def _start_set_prompt(w: "LensWidget", m: dict[str, Any], reply: Callable[[Any, Any], None]) -> Any:
    prompt = m.get("prompt")
    if not isinstance(prompt, str):
        raise RequestError("prompt must be a string")

    def done(task: Any, outcome: Any) -> None:
        ok = not isinstance(outcome, BaseException)
        reply(task, {"n_positions": int(w.data.get("n_positions", 0))} if ok else outcome)

    return w.set_prompt_in_background(prompt, done)


def _start_generate(w: "LensWidget", m: dict[str, Any], reply: Callable[[Any, Any], None]) -> Any:
    n = int_in("max_new_tokens", m.get("max_new_tokens", 20), 1, 4096)
    options = {key: m[key] for key in ("do_sample", "seed", "temperature", "top_k", "top_p") if m.get(key) is not None}
    if "do_sample" in options and not isinstance(options["do_sample"], bool):
        raise RequestError("do_sample must be true or false")
    return w.start_generation(n, reply, **options)


def _in_background(handler: Callable[["LensWidget", dict[str, Any]], dict[str, Any]]) -> Callable[..., Any]:
    """A request whose work may be long (a recompute of every lens and prompt), run in the
    background with progress and stop; its reply is the handler's result."""

    def start(w: "LensWidget", m: dict[str, Any], reply: Callable[[Any, Any], None]) -> Any:
        return w.run_in_background(lambda: handler(w, m), reply)

    return start


#: message ``type`` -> handler(widget, message, reply) for work that runs in the background:
#: the handler starts it (raising on a bad request) and ``reply(task, outcome)`` answers later.
BACKGROUND: dict[str, Callable[["LensWidget", dict[str, Any], Callable[[Any, Any], None]], Any]] = {
    "set_prompt": _start_set_prompt,
    "generate": _start_generate,
    "track": _in_background(_track),
    "untrack": _in_background(_untrack),
    "attribution": _start_attribution,
    "patch": _start_patch,
    "sweep": _start_sweep,
}


def start_background(widget: "LensWidget", message: dict[str, Any], reply: Callable[[Any, Any], None]) -> Any:
    """Start the background work a request asks for (raises on a bad one)."""
    return BACKGROUND[message["type"]](widget, message, reply)


#: message ``type`` -> handler(widget, message) -> reply result
REQUESTS: dict[str, Callable[["LensWidget", dict[str, Any]], dict[str, Any]]] = {
    "cell_detail": _cell_detail,
    "compare_detail": _compare_detail,
    "search": _search,
    "trajectory": _trajectory,
    "stop": _stop,
}


def handle(widget: "LensWidget", message: dict[str, Any]) -> dict[str, Any]:
    """The result of one request (raises on a bad one)."""
    handler = REQUESTS.get(message.get("type"))  # type: ignore[arg-type]
    if handler is None:
        raise RequestError(f"unknown request type {message.get('type')!r}; known: {', '.join([*REQUESTS, *BACKGROUND])}")
    return handler(widget, message)


#: Exceptions whose message is the whole reply (a bad request, not a bug).
CLEAR_ERRORS = (RequestError, KeyError, IndexError, ValueError, TypeError)


def reply_to(request_id: Any, outcome: Any) -> dict[str, Any]:
    """The ``reply`` message for a request's outcome (a result, or the exception it raised)."""
    if isinstance(outcome, Stopped):
        return {"type": "reply", "request_id": request_id, "ok": False, "error": "stopped", "stopped": True, "detail": str(outcome)}
    if isinstance(outcome, CLEAR_ERRORS + (PromptError, TokenLookupError)):
        return {"type": "reply", "request_id": request_id, "ok": False, "error": str(outcome) or type(outcome).__name__}
    if isinstance(outcome, BaseException):  # never let a request kill the widget's message loop
        return {"type": "reply", "request_id": request_id, "ok": False, "error": f"{type(outcome).__name__}: {outcome}"}
    return {"type": "reply", "request_id": request_id, "ok": True, "result": outcome}


def handle_message(widget: "LensWidget", content: Any) -> None:
    """Answer one message from the front end: ``view_ready``, a quick request (:data:`REQUESTS`)
    or background work (:data:`BACKGROUND`, answered when it ends). Replies go out through
    ``widget.send_message``, arrays as binary buffers."""
    if not isinstance(content, dict):
        return
    request_id = content.get("request_id")

    def send_reply(outcome: Any) -> None:
        widget.send_message(*lift_arrays(reply_to(request_id, outcome)))

    try:
        if content.get("type") == "view_ready":
            outcome: Any = widget.view_ready()
        elif content.get("type") in BACKGROUND:
            start_background(widget, content, lambda _task, result: send_reply(result))
            return
        else:
            outcome = handle(widget, content)
    except Exception as exc:
        outcome = exc
    send_reply(outcome)
