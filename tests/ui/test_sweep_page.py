"""The activation-patching sweep, the drag across prompts and the exported page of both (issue 18)
in headless Chromium.

- A page with a stand-in kernel (``model.send`` recorded; the test plays the kernel: progress
  messages, the ``sweep`` trait of ``LensWidget.patch_sweep``, the reply): the sweep button sends
  ``sweep``, progress shows in the sweep's line and the task bar, its stop button sends ``stop``,
  and the grid drawn is the Sweep's: every cell's colour is its recovery on the diverging scale,
  every cell's hover readout carries the Sweep's value.
- The drag flow across prompts: in patch mode the other prompt's grid is shown below; a drag from
  a cell of one onto a cell of the other (either way) sends that ``patch``; the comparison the
  kernel answers with is drawn as the diff grid and the intervened grid.
- The exported page of a widget after a sweep and an attribution shows both offline; the sweep's
  and the attribution's buttons are disabled, each with a note saying it needs the kernel.
- Hostile token strings stay text in the sweep's headers, readout and legend, and in the prompt
  select of the other grid.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from fakes import HOSTILE_STRINGS, make_result
from ui_support import cell_xy, grid_pixels, nearest, stand_in_kernel

from lens_widget.patching import Sweep
from lens_widget.tokens import display_token
from lens_widget.widget import LensWidget
from lens_widget.wire import json_state, sweep_to_wire
from zoo import tiny

pytestmark = pytest.mark.browser

PROMPTS = ["Hello there", "Hallo there"]
PAIR = ("e", "a")
SWEEP = ".lw-sweep"
SWEEP_CANVAS = ".lw-sweep canvas.lw-sweep-canvas"
OTHER_CANVAS = ".lw-patch-other canvas.lw-patch-other-canvas"


@pytest.fixture(scope="module")
def done():
    """A two-prompt widget: its state before anything, after a sweep and an attribution, and after
    a patch of (prompt 0, site 2, col 3) into (prompt 1, col 5)."""
    w = LensWidget(tiny("llama"), PROMPTS, track=list(PAIR), progress=False)
    plain = w.export_state()
    sw = w.patch_sweep(0, 1)
    attr = w.attribution(2, 3, token=list(PAIR))
    analysed = w.export_state()
    p = w.patch((0, 2, 3), (1, 5))
    patched = w.export_state()
    yield {"w": w, "plain": plain, "sweep": sw, "attr": attr, "analysed": analysed, "patch": p, "patched": patched}
    w.close()


# -- a page whose kernel is the test --------------------------------------------------------------
STAND_IN = stand_in_kernel(
    setup="""
  window.__emit = (msg) => handlers.forEach((h) => h(msg, []));
  window.__reply = (msg, ok, result) => window.__emit(ok ? { type: "reply", request_id: msg.request_id, ok: true, result }
                                                         : { type: "reply", request_id: msg.request_id, ok: false, error: result });""",
    on_send='if (msg.type === "view_ready") setTimeout(() => window.__reply(msg, true, { generating: false }), 0);',
    kernel=True,
)


@pytest.fixture
def open_live(open_page):
    """open_live(state) -> a page of the widget whose requests are recorded (``window.__sent``) and
    answered by the test (``window.__reply``, ``window.__emit``, ``__lensModel.set``)."""
    return lambda state: open_page(state, viewport=(1100, 1600), init_script=STAND_IN)


def sent(page, type_: str) -> list[dict]:
    return [m for m in page.evaluate("() => window.__sent") if m.get("type") == type_]


def set_trait(page, name: str, value) -> None:
    page.evaluate("([k, v]) => window.__lensModel.set(k, v)", [name, json_state(value)])


def frames(page, n: int = 2) -> None:
    page.evaluate(f"() => new Promise(r => {{ let k = {n}; const f = () => (--k ? requestAnimationFrame(f) : r()); requestAnimationFrame(f); }})")


def sweep_cell_xy(page, row: int, col: int) -> tuple[float, float]:
    """Page coordinates of the centre of the sweep grid's cell (display row, position)."""
    return cell_xy(page, row, col, SWEEP_CANVAS)


def diverging_index(v: float, m: float) -> int:
    """color.ts ``diverging(m).index``."""
    t = (v + m) / (2 * m)
    return 0 if t <= 0 else 255 if t >= 1 else int(math.floor(t * 255 + 0.5))


def assert_sweep_drawn(page, sw: Sweep) -> None:
    """Every cell: its colour is the recovery on the diverging scale (±1 of 256 steps); its hover
    readout carries the Sweep's value exactly (float32) and says it as text."""
    rec = sw.recovery.astype(np.float32)
    S, T = rec.shape
    m = max(1.0, float(np.nanmax(np.abs(rec))))
    px = grid_pixels(page, S, T, SWEEP_CANVAS)
    assert sorted(px) == [(row, t) for row in range(S) for t in range(T)]
    for (row, t), rgb in px.items():
        site = S - 1 - row  # the last block at the top
        got, dist = nearest("div", rgb)
        want = diverging_index(float(rec[site, t]), m)
        assert dist <= 3 and abs(got - want) <= 1, f"sweep cell ({site}, {t}) is {rgb} = index {got}, recovery {rec[site, t]} is index {want}"
    readout = page.locator(f"{SWEEP} .lw-sweep-readout")
    for row in range(S):
        for t in range(T):
            site = S - 1 - row
            page.mouse.move(*sweep_cell_xy(page, row, t))
            page.wait_for_function(f"(() => {{ const d = document.querySelector('.lw-sweep-readout').dataset; return d.site === '{site}' && d.col === '{t}'; }})()")
            assert float(readout.get_attribute("data-recovery")) == float(rec[site, t])
            assert float(readout.get_attribute("data-patched-ld")) == float(np.float32(sw.patched_ld[site, t]))
            text = readout.text_content()
            assert text.startswith(f"{sw.sites[site]} · pos {t} ") and "recovery " in text


# -- the sweep after the request ------------------------------------------------------------------
def test_the_sweep_button_shows_progress_stop_and_draws_the_sweep(open_live, done):
    sw, w = done["sweep"], done["w"]
    page = open_live(done["plain"])
    box = page.locator(SWEEP)
    assert box.is_visible() and box.get_attribute("data-state") == "none"
    # the placeholders name the tracked pair the kernel measures by default
    assert page.locator(".lw-sweep-a").get_attribute("placeholder") == display_token(PAIR[0])
    page.locator(".lw-sweep-go").click()
    (msg,) = sent(page, "sweep")
    assert (msg["clean"], msg["corrupt"], "tokens" in msg) == (0, 1, False)
    assert page.locator(".lw-sweep-go").is_disabled() and box.get_attribute("data-task") == "running"
    total = sw.recovery.size
    page.evaluate("(m) => window.__emit(m)", {"type": "progress", "task": "sweep", "state": "running", "done": 12, "total": total, "elapsed_s": 0.1, "eta_s": 0.3})
    assert box.get_attribute("data-progress") == f"12/{total}"
    assert page.locator(".lw-sweep-status").text_content() == f"sweeping: 12 / {total} patches"
    assert page.locator(".lw-progress-text").text_content() == f"sweeping prompt 1 into prompt 2 (12 / {total})"
    assert page.locator(".lw-sweep-progress").get_attribute("value") == "12"
    page.locator(".lw-sweep-stop").click()
    page.wait_for_function("window.__sent.some(m => m.type === 'stop')")
    # the kernel sets the trait, then replies
    set_trait(page, "sweep", w.sweep)
    page.evaluate("(m) => window.__reply(m, true, {patches: %d, forwards: %d, seconds: 0.5})" % (total, sw.meta["forwards"]), msg)
    page.wait_for_function("document.querySelector('.lw-sweep').dataset.task === ''")
    assert page.locator(".lw-sweep-status").text_content() == f"sweep done: {total} patches in {sw.meta['forwards']} forwards, 0.50 s"
    assert box.get_attribute("data-state") == "shown"
    frames(page)
    assert_sweep_drawn(page, sw)
    legend = page.locator(".lw-sweep-legend").text_content()
    assert f"logit({PAIR[0]}) − logit({PAIR[1]})" in legend and "1 = the clean run's, 0 = the corrupted run's" in legend


def test_a_stopped_sweep_says_so_and_tokens_typed_are_sent(open_live, done):
    page = open_live(done["plain"])
    page.locator(".lw-sweep-a").fill(" x")
    page.select_option(".lw-sweep-clean", "1")
    page.select_option(".lw-sweep-corrupt", "0")
    page.locator(".lw-sweep-go").click()
    (msg,) = sent(page, "sweep")
    tracked = [int(i) for i in done["plain"]["tracked"]]
    assert (msg["clean"], msg["corrupt"], msg["tokens"]) == (1, 0, [" x", tracked[1]])
    page.evaluate("(m) => window.__reply(m, false, 'stopped')", msg)
    page.wait_for_function("document.querySelector('.lw-sweep').dataset.task === ''")
    assert page.locator(".lw-sweep-status").text_content() == "sweep stopped; the last sweep stays"
    assert page.locator(SWEEP).get_attribute("data-state") == "none" and page.locator(".lw-sweep-go").is_enabled()


# -- the drag across prompts ----------------------------------------------------------------------
def test_a_drag_from_one_prompts_grid_onto_the_others_patches_and_shows_the_grids(open_live, done):
    p, patched = done["patch"], done["patched"]
    page = open_live(done["plain"])
    root = page.locator(".lens-widget")
    other = page.locator(".lw-patch-other")
    assert other.is_hidden()
    page.locator("button.lw-patch-mode").click()
    assert other.is_visible() and other.get_attribute("data-prompt") == "1"
    frames(page)
    S = p.clean.n_sites

    def other_xy(site: int, col: int) -> tuple[float, float]:
        return cell_xy(page, S - 1 - site, col, OTHER_CANVAS)

    # main grid (prompt 1) cell (site 2, col 3) onto the other grid's (prompt 2) column 5
    # (both found, and scrolled to, before the button goes down)
    start, end = cell_xy(page, S - 1 - 2, 3), other_xy(2, 5)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=6)
    page.mouse.up()
    page.wait_for_function("window.__sent.some(m => m.type === 'patch')")
    (msg,) = sent(page, "patch")
    assert (msg["source"], msg["target"]) == ([0, 2, 3], [1, 5])
    assert page.evaluate("() => window.__lensModel.get('pinned')") == []
    # the kernel's answer: the comparison of the patch; the diff grid, then the intervened grid
    set_trait(page, "comparison", patched["comparison"])
    set_trait(page, "compare_view", True)
    page.evaluate("(m) => window.__reply(m, true, {site: 2, seconds: 0.2, max_js: 0.1})", msg)
    page.wait_for_function("document.querySelector('.lens-widget').dataset.task !== 'running'")
    assert root.get_attribute("data-view") == "compare" and root.get_attribute("data-patch") == "diff"
    assert other.is_hidden()  # no prompt's own grid shown: no second grid
    page.select_option("select.lw-patch-side", "b")
    frames(page)
    assert root.get_attribute("data-view") == "compare-b" and root.get_attribute("data-patch") == "b"
    page.mouse.move(*cell_xy(page, S - 1 - 2, 5))
    rows = page.locator(".lw-tooltip .lw-tip-row")
    rows.first.wait_for()
    assert [int(rows.nth(j).get_attribute("data-id")) for j in range(rows.count())] == [int(i) for i in p.patched.topk_ids[0, 2, 5]]


def test_a_drag_the_other_way_and_clicks_across_the_two_grids(open_live, done):
    page = open_live(done["plain"])
    S = done["patch"].clean.n_sites
    page.locator("button.lw-patch-mode").click()
    frames(page)
    other_xy = lambda site, col: cell_xy(page, S - 1 - site, col, OTHER_CANVAS)  # noqa: E731
    # from the other grid (prompt 2) onto the main one (prompt 1)
    start, end = other_xy(1, 4), cell_xy(page, S - 1 - 3, 6)
    page.mouse.move(*start)
    page.mouse.down()
    page.mouse.move(*end, steps=6)
    page.mouse.up()
    page.wait_for_function("window.__sent.filter(m => m.type === 'patch').length === 1")
    assert [(m["source"], m["target"]) for m in sent(page, "patch")] == [([1, 1, 4], [0, 6])]
    page.evaluate("(m) => window.__reply(m, true, {site: 1, seconds: 0.1, max_js: 0.0})", sent(page, "patch")[0])
    page.wait_for_function("document.querySelector('.lens-widget').dataset.task !== 'running'")
    # click-click: a source on the main grid, the target on the other one
    page.mouse.click(*cell_xy(page, S - 1 - 2, 1))
    assert page.locator(".lw-patch").get_attribute("data-patch-mode") == "target"
    page.mouse.click(*other_xy(0, 7))
    page.wait_for_function("window.__sent.filter(m => m.type === 'patch').length === 2")
    assert (sent(page, "patch")[1]["source"], sent(page, "patch")[1]["target"]) == ([0, 2, 1], [1, 7])


# -- the exported page ----------------------------------------------------------------------------
def test_an_exported_page_shows_the_carried_attribution_and_sweep_offline(open_page, done):
    attr, sw = done["attr"], done["sweep"]
    page = open_page(done["analysed"], viewport=(1100, 1600))
    page.wait_for_function("document.querySelector('.lens-widget').dataset.kernel === 'no'")
    # the attribution of the selected cell, from the page alone
    page.wait_for_selector(".lw-attr[data-state='done']")
    rows = page.locator(".lw-attr-bars .lw-attr-row")
    assert rows.count() == len(attr["bars"]["names"])
    for j, (name, value) in enumerate(zip(attr["bars"]["names"], attr["bars"]["values"])):
        assert rows.nth(j).locator(".lw-attr-name").text_content() == name
        assert float(rows.nth(j).get_attribute("data-value")) == pytest.approx(value)
    assert page.locator(".lw-attr-target").text_content() == f"logit({PAIR[0]}) − logit({PAIR[1]})"
    go = page.locator(".lw-attr-go")
    assert go.is_disabled() and "no kernel" in go.get_attribute("title")
    note = page.locator(".lw-attr-nokernel")
    assert note.is_visible() and note.text_content().startswith("a new attribution needs the kernel") and "computed before the page was saved" in note.text_content()
    # the sweep, drawn and hoverable; its controls disabled, saying why
    assert page.locator(SWEEP).get_attribute("data-state") == "shown"
    frames(page)
    assert_sweep_drawn(page, sw)
    for sel in (".lw-sweep-go", ".lw-sweep-clean", ".lw-sweep-a"):
        assert page.locator(sel).is_disabled(), sel
    title = page.locator(".lw-sweep-go").get_attribute("title")
    assert "needs the kernel" in title and "no kernel" in title
    sweep_note = page.locator(".lw-sweep-nokernel")
    assert sweep_note.is_visible() and sweep_note.text_content().startswith("a new sweep needs the kernel")
    # another cell has no attribution: nothing drawn, only the note
    page.mouse.click(*cell_xy(page, 0, 0))
    assert page.locator(".lw-attr-bars").count() == 0


def test_an_exported_page_after_a_patch_keeps_the_sweep_and_the_patch_grids(open_page, done):
    page = open_page(done["patched"], viewport=(1100, 1600))
    root = page.locator(".lens-widget")
    assert root.get_attribute("data-view") == "compare" and root.get_attribute("data-patch") == "diff"
    assert page.locator(SWEEP).get_attribute("data-state") == "shown"
    assert page.locator("button.lw-patch-mode").is_disabled()
    page.select_option("select.lw-patch-side", "b")
    assert root.get_attribute("data-view") == "compare-b"


# -- hostile strings ------------------------------------------------------------------------------
def test_hostile_token_strings_stay_text_in_the_sweep_and_the_other_grid(open_page, open_live):
    r = make_result(hostile=True, n_prompts=2)
    w = LensWidget(result=r)
    try:
        state = w.export_state()
    finally:
        w.close()
    S, T = r.n_sites, r.n_positions
    evil = HOSTILE_STRINGS[0]
    rng = np.random.default_rng(1)
    sw = Sweep(rng.normal(size=(S, T)), rng.normal(size=(S, T)), 1.0, -1.0, [evil] + [f"resid_out_{i}" for i in range(S - 1)],
               [HOSTILE_STRINGS[i % len(HOSTILE_STRINGS)] for i in range(T)], [HOSTILE_STRINGS[(i + 1) % len(HOSTILE_STRINGS)] for i in range(T)],
               (0, 1), {"forwards": 3, "seconds": 0.1})
    state["sweep"] = sweep_to_wire(sw, {0: evil, 1: HOSTILE_STRINGS[1]}, clean_prompt_index=0, corrupt_prompt_index=1)
    page = open_page(state, viewport=(1100, 1600))
    frames(page)
    want = f"logit({display_token(evil)}) − logit({display_token(HOSTILE_STRINGS[1])})"
    assert want in page.locator(".lw-sweep-legend").text_content()
    page.mouse.move(*sweep_cell_xy(page, S - 1, 0))  # the first site (its name is hostile), position 0
    readout = page.locator(".lw-sweep-readout").text_content()
    col = display_token(HOSTILE_STRINGS[0]) + "│" + display_token(HOSTILE_STRINGS[1])
    assert readout.startswith(f"{evil} · pos 0 {col}: recovery ") and want in readout
    # the other grid's prompt select (a live page: patch mode needs a kernel)
    state["prompts"] = [evil, HOSTILE_STRINGS[1]]
    live = open_live(state)
    live.locator("button.lw-patch-mode").click()
    cut = lambda text, n: text if len(text) <= n else f"{text[:n]}…"  # noqa: E731
    assert live.locator(".lw-patch-other-prompt option").all_text_contents() == [f"prompt 2: {cut(HOSTILE_STRINGS[1], 40)}"]
    assert live.locator(".lw-sweep-clean option").all_text_contents() == [f"1: {cut(evil, 30)}", f"2: {cut(HOSTILE_STRINGS[1], 30)}"]
    for p in (page, live):
        assert p.evaluate("() => window.__pwned") is None
        assert p.dialogs == [] and p.locator(".lens-widget img").count() == 0 and p.locator(".lens-widget script").count() == 0
