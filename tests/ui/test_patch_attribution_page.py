"""Patching and attribution in headless Chromium (issue 18's front end).

- An exported page of a widget after ``w.patch(...)`` (tiny Llama, two prompts) draws the diff
  grid with the causal cone shaded (pixels: cone cells are the palette colour blended with the cone
  colour, every other cell the plain palette colour, Python's value), the patched cell marked, and
  the "patched grid" switch shows side b (the intervened grid) with the cone on its own columns;
  the cone toggle takes the shade off. It cannot start a patch or an attribution (disabled, with why).
- A page with a stand-in kernel (``model.send`` answered by replies computed in Python, the page's
  requests recorded): the attribution panel of a clicked cell sends ``attribution`` and draws the
  reply of ``w.attribution``: bars (sign, order, values), the rest and the remainder apart, the
  sum against the logit, the layer × head heatmap and its hover readout.
- The click-click, keyboard (arrows, ``s``, ``p``, ``t``, Esc) and drag flows send the right
  ``patch`` request; while it runs the task bar says so.
- Hostile token strings and component names stay text in the attribution panel and its readout.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from fakes import HOSTILE_STRINGS, make_result
from ui_support import N_COLORS, PALETTES, cell_xy, grid_pixels, metric_colours, stand_in_kernel

from lens_widget.tokens import display_token
from lens_widget.widget import LensWidget
from lens_widget.wire import json_state
from zoo import tiny

pytestmark = pytest.mark.browser

PROMPTS = ["Hello there", "Hi there"]
SOURCE = (0, 2, 3)  # prompt 0, site 2 (resid_out_1), column 3
TARGET = (1, 3)
CONE = (0xFF, 0x98, 0x00)  # --lw-cone
CONE_ALPHA = 0.35  # grid.ts CONE_ALPHA
FG = (0x1A, 0x1A, 0x1A)  # --lw-fg (light)


def frames(page, n: int = 2) -> None:
    page.evaluate(f"() => new Promise(r => {{ let k = {n}; const f = () => (--k ? requestAnimationFrame(f) : r()); requestAnimationFrame(f); }})")


def _index(t: float) -> int:
    return 0 if t <= 0 else N_COLORS - 1 if t >= 1 else int(math.floor(t * (N_COLORS - 1) + 0.5))


def js_colours(c) -> np.ndarray:
    """compare.ts ``compareView`` for ``js``: sequential 0 … max over the cells with data."""
    v = c.js.astype(np.float32).astype(float)
    ok = np.isfinite(v) & ~c.nonfinite
    hi = max(float(v[ok].max()) if ok.any() else 0.0, 1e-12)
    return np.vectorize(lambda x: -1 if x != x else _index(x / hi))(v)


def shaded(rgb) -> tuple[float, ...]:
    return tuple(c * (1 - CONE_ALPHA) + o * CONE_ALPHA for c, o in zip(rgb, CONE))


def assert_cone_pixels(page, palette: str, want: np.ndarray, cone: np.ndarray, mark: tuple[int, int] | None, shade_on: bool = True) -> int:
    """Every cell is its palette colour (Python's value), blended with the cone colour exactly where
    ``cone`` is 1 (when the shade is on); the patched cell ``mark`` carries its outline."""
    S, P = want.shape
    n_cone = 0
    for (row, col), rgb in grid_pixels(page, S, P).items():
        site = S - 1 - row
        if mark == (site, col):
            assert math.dist(rgb, FG) <= 6, f"the patched cell ({site}, {col}) is not outlined: {rgb}"
            continue
        base = PALETTES[palette][want[site, col]]
        if cone[site, col] and shade_on:
            assert math.dist(rgb, shaded(base)) <= 4, f"cone cell ({site}, {col}) is {rgb}, want {shaded(base)} (shaded {base})"
            n_cone += 1
        else:
            assert math.dist(rgb, base) <= 4, f"cell ({site}, {col}) outside the cone (or shade off) is {rgb}, want {base}"
    return n_cone


@pytest.fixture(scope="module")
def patched():
    """A two-prompt widget: its state before the patch, the attribution of (2, 3) of prompt 0, the
    patch of SOURCE into TARGET and the state after it."""
    w = LensWidget(tiny("llama"), PROMPTS, track=["e", "H"], progress=False)
    plain = w.export_state()
    attr = w.attribution(SOURCE[1], SOURCE[2])
    w.selected = {}  # attribution() selects its cell (the panel shows it): the cone pixels below want no selection outline
    p = w.patch(SOURCE, TARGET)
    state = w.export_state()
    yield {"w": w, "plain": plain, "attr": attr, "patch": p, "state": state}
    w.close()


# -- a page whose kernel is a stand-in: requests recorded, replies from Python ---------------------
def fake_kernel(replies: dict, hold) -> str:
    """Requests answered with ``replies[type]`` (an error where none is canned); a type in ``hold``
    waits for ``window.__release(type)``."""
    return stand_in_kernel(
        setup=f"""
  const replies = {json.dumps(replies)};
  window.__held = {{}};
  window.__hold = new Set({json.dumps(list(hold))});
  const answer = (msg, ok, result) =>
    handlers.forEach((h) => h(ok ? {{ type: "reply", request_id: msg.request_id, ok: true, result }} : {{ type: "reply", request_id: msg.request_id, ok: false, error: "no reply canned" }}, []));
  window.__release = (type) => {{ const m = window.__held[type]; delete window.__held[type]; answer(m, true, replies[type]); }};""",
        on_send="""if (window.__hold.has(msg.type)) { window.__held[msg.type] = msg; return; }
        setTimeout(() => answer(msg, msg.type in replies, replies[msg.type]), 0);""",
    )


@pytest.fixture
def open_live(open_page):
    """open_live(state, replies, hold=()) -> a page of the widget whose ``model.send`` is answered
    with ``replies[type]`` (``view_ready`` too: the page thinks a kernel is there); requests of a
    type in ``hold`` wait for ``window.__release(type)``."""

    def _open(state, replies, hold=()):
        script = fake_kernel(json_state({"view_ready": {"generating": False}, **replies}), hold)
        return open_page(state, viewport=(1100, 1400), init_script=script)

    return _open


def sent(page, type_: str) -> list[dict]:
    return [m for m in page.evaluate("() => window.__sent") if m.get("type") == type_]


def click_cell(page, site: int, col: int, n_sites: int) -> None:
    page.mouse.click(*cell_xy(page, n_sites - 1 - site, col))


# -- (a) the exported page of a patch ---------------------------------------------------------------
def test_the_diff_grid_of_a_patch_shades_the_cone_and_the_switch_shows_the_patched_grid(open_page, patched):
    p, state = patched["patch"], patched["state"]
    c = p.comparison
    cone = p.in_cone()
    page = open_page(state)
    frames(page)
    root = page.locator(".lens-widget")
    assert root.get_attribute("data-view") == "compare" and root.get_attribute("data-patch") == "diff"
    S, P = cone.shape
    mark = (SOURCE[1], int(np.flatnonzero(c.cols_b == TARGET[1])[0]))
    assert cone[mark] and cone.sum() >= 3 and (~cone).sum() >= 10
    assert page.locator(".lw-patch-hint").text_content() == (
        f"patched {p.site}: prompt {SOURCE[0] + 1} pos {p.source_position} → prompt {TARGET[0] + 1} pos {p.target_position}; shaded: the cells it can change"
    )
    assert page.locator(".lw-cmp-pair").is_hidden()  # a patch is clean vs patched, not two chosen sides
    assert assert_cone_pixels(page, "seq", js_colours(c), cone, mark) == cone.sum() - 1
    # the cone off: every cell its plain colour
    page.locator("input.lw-patch-cone-toggle").uncheck()
    frames(page)
    assert_cone_pixels(page, "seq", js_colours(c), cone, mark, shade_on=False)
    page.locator("input.lw-patch-cone-toggle").check()
    # the patched (intervened) grid: side b, its own metric, the cone on its columns
    page.select_option("select.lw-patch-side", "b")
    frames(page)
    assert root.get_attribute("data-view") == "compare-b" and root.get_attribute("data-patch") == "b"
    palette, want = metric_colours(p.patched, "top1_prob")
    cols_b = c.cols_b  # aligned column -> b's own column
    cone_b = np.zeros_like(want, dtype=bool)
    cone_b[:, cols_b] = cone
    assert assert_cone_pixels(page, palette, want, cone_b, (SOURCE[1], TARGET[1])) == cone.sum() - 1
    # and its tooltip is side b's top-k at the patched cell
    page.mouse.move(*cell_xy(page, S - 1 - SOURCE[1], TARGET[1]))
    rows = page.locator(".lw-tooltip .lw-tip-row")
    rows.first.wait_for()
    assert [int(rows.nth(j).get_attribute("data-id")) for j in range(rows.count())] == [int(i) for i in p.patched.topk_ids[0, SOURCE[1], TARGET[1]]]
    # back to the diff grid
    page.select_option("select.lw-patch-side", "diff")
    frames(page)
    assert root.get_attribute("data-view") == "compare"
    # no kernel: neither a patch nor an attribution can start, and the page says why
    toggle = page.locator("button.lw-patch-mode")
    assert toggle.is_disabled() and "no kernel" in toggle.get_attribute("title")


def test_an_exported_page_disables_the_attribution_button_with_the_reason(open_page, patched):
    page = open_page(patched["plain"])
    S = patched["patch"].clean.n_sites
    click_cell(page, SOURCE[1], SOURCE[2], S)
    go = page.locator(".lw-attr-go")
    go.wait_for()
    page.wait_for_function("document.querySelector('.lens-widget').dataset.kernel === 'no'")
    assert go.is_disabled() and "no kernel" in go.get_attribute("title")


# -- (b) the attribution panel, answered with Python's reply ----------------------------------------
def test_the_attribution_panel_draws_the_reply_of_python(open_live, patched):
    attr = patched["attr"]
    page = open_live(patched["plain"], {"attribution": attr})
    S = patched["patch"].clean.n_sites
    click_cell(page, SOURCE[1], SOURCE[2], S)
    go = page.locator(".lw-attr-go")
    assert go.is_enabled()
    go.click()
    page.wait_for_selector(".lw-attr[data-state='done']")
    (msg,) = sent(page, "attribution")
    assert (msg["site"], msg["col"], "token" in msg) == (SOURCE[1], SOURCE[2], False)  # the cell's top-1: the kernel's default
    rows = page.locator(".lw-attr-bars .lw-attr-row")
    bars = attr["bars"]
    assert rows.count() == len(bars["names"])
    for j, (name, value) in enumerate(zip(bars["names"], bars["values"])):
        row = rows.nth(j)
        assert row.locator(".lw-attr-name").text_content() == name
        assert float(row.get_attribute("data-value")) == pytest.approx(value)
        assert ("lw-neg" in row.get_attribute("class")) == (value < 0)
    # positive and negative bars are drawn in different colours
    colour = lambda cls: page.evaluate(f"() => getComputedStyle(document.querySelector('.lw-attr-row.{cls} .lw-attr-bar')).backgroundColor")  # noqa: E731
    assert colour("lw-pos") != colour("lw-neg")
    # every row is accounted for: bars + the rest + remainder = the sum
    shown = sum(float(rows.nth(j).get_attribute("data-value")) for j in range(rows.count()))
    rest = page.locator(".lw-attr-rest")
    if rest.count():
        shown += float(rest.get_attribute("data-value"))
    shown += sum(x["value"] for x in attr["remainder"])
    assert shown == pytest.approx(attr["sum"], abs=1e-5)
    assert page.locator(".lw-attr-remainder").count() == 1  # shown even when empty
    tok = display_token(attr["tokens"][str(attr["token_ids"][0])])
    assert page.locator(".lw-attr-target").text_content() == f"logit({tok})"
    assert page.locator(".lw-attr-logit .lw-v").text_content() == f"{attr['logit']:.3f}"
    # the heatmap: one row per layer, one column per head; hovering reads a head's value out
    heads = attr["heads"]
    values = np.asarray(heads["values"], dtype=np.float32)
    canvas = page.locator("canvas.lw-attr-canvas")
    box = canvas.bounding_box()
    L, H = values.shape
    assert (round(box["width"]), round(box["height"])) == (30 + H * 14 + 2, 14 + L * 14 + 2)  # + the border
    r, hd = (int(i) for i in np.unravel_index(np.nanargmax(np.abs(values)), values.shape))
    page.mouse.move(box["x"] + 1 + 30 + hd * 14 + 7, box["y"] + 1 + 14 + (L - 1 - r) * 14 + 7)
    readout = page.locator(".lw-attr-readout").text_content()
    assert readout.startswith(f"L{heads['layers'][r]}.H{hd} → logit({tok}): ") and readout.endswith(f"{float(values[r, hd]):.3f}")


def test_the_attribution_token_select_sends_a_tracked_pair(open_live, patched):
    page = open_live(patched["plain"], {"attribution": patched["attr"]})
    S = patched["patch"].clean.n_sites
    click_cell(page, SOURCE[1], SOURCE[2], S)
    options = page.locator(".lw-attr-token option").all_text_contents()
    pair = [o for o in options if o.startswith("logit(")]
    assert options[0].startswith("top-1: ") and pair
    page.select_option(".lw-attr-token", label=pair[0])
    page.locator(".lw-attr-go").click()
    page.wait_for_selector(".lw-attr[data-state='done']")
    (msg,) = sent(page, "attribution")
    tracked = [int(i) for i in patched["plain"]["tracked"]]
    assert msg["token"] == tracked[:2]


# -- (c) the patch flows produce the right request -------------------------------------------------
def test_click_click_across_prompts_sends_the_patch_and_the_task_bar_shows_it(open_live, patched):
    page = open_live(patched["plain"], {"patch": {"site": 2, "seconds": 0.25, "max_js": 0.1}}, hold=["patch"])
    S = patched["patch"].clean.n_sites
    root = page.locator(".lens-widget")
    page.locator("button.lw-patch-mode").click()
    assert page.locator(".lw-patch").get_attribute("data-patch-mode") == "source"
    click_cell(page, 2, 3, S)  # the source, on prompt 1
    assert page.locator(".lw-patch").get_attribute("data-patch-mode") == "target"
    assert page.evaluate("() => window.__lensModel.get('pinned')") == []  # patch clicks do not pin
    page.select_option("select.lw-prompt-select", "1")
    frames(page)
    click_cell(page, 0, 5, S)  # the target column (the site is the source's)
    (msg,) = sent(page, "patch")
    assert (msg["source"], msg["target"]) == ([0, 2, 3], [1, 5])
    assert root.get_attribute("data-task") == "running" and "patching" in page.locator(".lw-progress-text").text_content()
    assert page.locator("button.lw-patch-mode").is_disabled()  # one patch at a time
    page.evaluate("() => window.__release('patch')")
    page.wait_for_function("document.querySelector('.lens-widget').dataset.task !== 'running'")
    assert page.locator(".lw-progress-text").text_content().startswith("patch done in 0.25 s")


def test_the_keyboard_path_and_escape(open_live, patched):
    page = open_live(patched["plain"], {"patch": {"site": 2, "seconds": 0.1, "max_js": 0.0}})
    S = patched["patch"].clean.n_sites
    page.locator(".lw-viewport").focus()
    # the cursor starts at the top-left cell (final layer, column 0): down 1, right 3 -> (S - 2, 3)
    page.keyboard.press("ArrowDown")
    for _ in range(3):
        page.keyboard.press("ArrowRight")
    page.keyboard.press("s")
    assert page.locator(".lw-patch").get_attribute("data-patch-mode") == "target"
    page.keyboard.press("Escape")  # cancels the source, keeps the mode
    assert page.locator(".lw-patch").get_attribute("data-patch-mode") == "source"
    page.keyboard.press("s")
    page.keyboard.press("p")  # the next prompt
    frames(page)
    assert page.evaluate("() => window.__lensModel.get('prompt_index')") == 1
    page.keyboard.press("ArrowRight")
    page.keyboard.press("t")
    page.wait_for_function("window.__sent.some(m => m.type === 'patch')")
    (msg,) = sent(page, "patch")
    assert (msg["source"], msg["target"]) == ([0, S - 2, 3], [1, 4])
    page.keyboard.press("Escape")
    page.keyboard.press("Escape")
    assert page.locator(".lw-patch").get_attribute("data-patch-mode") == "off"


def test_a_drag_in_patch_mode_sends_the_patch(open_live, patched):
    page = open_live(patched["plain"], {"patch": {"site": 1, "seconds": 0.1, "max_js": 0.0}})
    S = patched["patch"].clean.n_sites
    page.locator("button.lw-patch-mode").click()
    page.mouse.move(*cell_xy(page, S - 1 - 1, 2))
    page.mouse.down()
    page.mouse.move(*cell_xy(page, S - 1 - 3, 6), steps=4)
    page.mouse.up()
    page.wait_for_function("window.__sent.some(m => m.type === 'patch')")
    (msg,) = sent(page, "patch")
    assert (msg["source"], msg["target"]) == ([0, 1, 2], [0, 6])
    assert page.evaluate("() => window.__lensModel.get('pinned')") == []


# -- (d) hostile strings ----------------------------------------------------------------------------
def test_hostile_token_strings_stay_text_in_the_attribution_panel(open_live):
    r = make_result(hostile=True)
    w = LensWidget(result=r)
    try:
        state = w.export_state()
    finally:
        w.close()
    evil = HOSTILE_STRINGS[0]
    reply = {
        "site": 1, "col": 2, "prompt_index": 0, "lens": "logit lens", "site_name": "resid_out_0", "position": 2,
        "lens_name": "logit lens", "kind": "logit_diff", "token_ids": [0, 1],
        "tokens": {"0": evil, "1": HOSTILE_STRINGS[1]}, "logit": 1.5, "sum": 1.5, "error": 0.0, "resid_error": 0.0,
        "names": [evil, "L0.H0"], "kinds": ["head", "head"], "layers": [0, 0], "heads_of_rows": [1, 0], "values": [1.0, 0.5],
        "bars": {"names": [evil, "L0.H0"], "kinds": ["head", "head"], "values": [1.0, 0.5]},
        "heads": {"values": np.array([[0.5, 1.0]], dtype=np.float32), "layers": [0], "n_heads": 2},
        "remainder": [{"name": HOSTILE_STRINGS[1], "layer": -1, "value": 0.0}],
    }
    page = open_live(state, {"attribution": reply})
    click_cell(page, 1, 2, r.n_sites)
    page.locator(".lw-attr-go").click()
    page.wait_for_selector(".lw-attr[data-state='done']")
    want = f"logit({display_token(evil)}) − logit({display_token(HOSTILE_STRINGS[1])})"
    assert page.locator(".lw-attr-target").text_content() == want
    assert page.locator(".lw-attr-row .lw-attr-name").first.text_content() == evil
    assert page.locator(".lw-attr-rem-row .lw-attr-name").text_content() == HOSTILE_STRINGS[1]
    box = page.locator("canvas.lw-attr-canvas").bounding_box()
    page.mouse.move(box["x"] + 1 + 30 + 14 + 7, box["y"] + 1 + 14 + 7)
    assert page.locator(".lw-attr-readout").text_content() == f"L0.H1 → {want}: 1.000"
    # the token select lists the grid's (hostile) tokens as text too
    assert any(display_token(s) in o for o in page.locator(".lw-attr-token option").all_text_contents() for s in HOSTILE_STRINGS)
    assert page.evaluate("() => window.__pwned") is None
    assert page.dialogs == [] and page.locator(".lens-widget img").count() == 0
