"""Exported pages with several lenses and a batch of prompts, in headless Chromium: the lens switch
and the prompt selector work offline, and show exactly what Python computed."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import HOSTILE_STRINGS, make_result
from ui_support import cell_xy

from lens_widget.tokens import display_token
from lens_widget.widget import LensWidget
from zoo import AffineLens, tiny

pytestmark = pytest.mark.browser

PROMPT = "Hello world"
BATCH = ["Hello world", "abc", "The cat sat."]
CANVAS = "() => document.querySelector('canvas.lw-canvas').toDataURL()"


def frames(page, n: int = 2) -> None:
    page.evaluate(f"() => new Promise(r => {{ let k = {n}; const f = () => (--k ? requestAnimationFrame(f) : r()); requestAnimationFrame(f); }})")


def hover(page, site: int, col: int, n_sites: int):
    """Hover cell (site, col) of the grid shown and return the visible tooltip."""
    page.mouse.move(0, 0)
    page.mouse.move(*cell_xy(page, n_sites - 1 - site, col))
    tip = page.locator(".lw-tooltip")
    tip.wait_for(state="visible")
    assert (tip.get_attribute("data-site"), tip.get_attribute("data-col")) == (str(site), str(col))
    return tip


def assert_topk(tip, result, b: int, site: int, col: int) -> None:
    rows = tip.locator(".lw-tip-row")
    assert rows.count() == result.k
    for j in range(result.k):
        tid = int(result.topk_ids[b, site, col, j])
        rj = rows.nth(j)
        assert int(rj.get_attribute("data-id")) == tid
        assert float(rj.get_attribute("data-prob")) == pytest.approx(float(result.topk_probs[b, site, col, j]), rel=1e-6)
        assert rj.locator(".lw-tok").text_content() == display_token(result.token_strings[tid])


@pytest.fixture(scope="module")
def two_lenses():
    model = tiny("llama")
    w = LensWidget(model, PROMPT, decoders={"logit": None, "tuned": AffineLens(model)}, track=["H"], progress=False)
    yield w
    w.close()


@pytest.fixture(scope="module")
def batch():
    w = LensWidget(tiny("llama"), BATCH, track=["e"], progress=False)
    yield w
    w.close()


def test_lens_switch_recolours_and_the_tooltip_names_the_lens(open_page, two_lenses):
    w = two_lenses
    page = open_page(w.export_state())
    frames(page)
    assert page.locator("select.lw-lens").is_visible()
    assert page.locator("select.lw-prompt-select").is_hidden()
    S = w.result.n_sites
    seen = {}
    for label in ("logit", "tuned"):
        page.select_option("select.lw-lens", label)
        frames(page)
        assert page.evaluate("() => window.__lensModel.get('lens')") == label
        assert page.locator(".lens-widget").get_attribute("data-lens") == label
        assert f"· {label} —" in page.locator(".lw-title").text_content()
        assert page.locator(".lw-legend-lens").text_content() == label
        seen[label] = page.evaluate(CANVAS)
        r = w.results[label]
        for site, col in [(1, 2), (S - 2, 5), (0, 0)]:
            tip = hover(page, site, col, S)
            assert tip.locator(".lw-tip-lens").text_content() == label
            assert_topk(tip, r, 0, site, col)
        # the detail panel of a clicked cell names the lens too
        page.mouse.click(*cell_xy(page, 1, 3))
        assert page.locator(".lw-detail .lw-tip-lens").text_content() == label
        ids = [int(x) for x in page.locator(".lw-detail-row").evaluate_all("rs => rs.map(r => r.dataset.id)")]
        assert ids == r.topk_ids[0, S - 2, 3].tolist()
        page.keyboard.press("Escape")
    assert seen["logit"] != seen["tuned"]  # switching the lens recoloured the grid
    assert page.errors == []


def test_prompt_selector_shows_each_prompts_grid(open_page, batch):
    w = batch
    r = w.result
    page = open_page(w.export_state())
    frames(page)
    assert page.locator("select.lw-lens").is_hidden()
    options = page.locator("select.lw-prompt-select option").all_text_contents()
    assert options == [f"{i + 1}: {p}" for i, p in enumerate(BATCH)] + ["mean of 3 prompts (aligned on the last token)"]
    drawn = set()
    for b, p in enumerate(BATCH):
        page.select_option("select.lw-prompt-select", str(b))
        frames(page)
        assert page.evaluate("() => [window.__lensModel.get('prompt_index'), window.__lensModel.get('aggregate')]") == [b, False]
        assert page.locator(".lw-title").text_content().endswith(f"prompt {b + 1} of 3 — {r.n_sites} sites × {len(p)} tokens")
        assert page.locator(".lw-prompt-input").input_value() == p
        drawn.add(page.evaluate(CANVAS))
        for site, col in [(r.n_sites - 1, len(p) - 1), (1, 1)]:
            assert_topk(hover(page, site, col, r.n_sites), r, b, site, col)
    assert len(drawn) == 3
    assert page.errors == []


def test_mean_view_is_the_mean_aligned_on_the_last_token(open_page, batch):
    w = batch
    r = w.result
    page = open_page(w.export_state())
    frames(page)
    page.select_option("select.lw-prompt-select", "mean")
    frames(page)
    assert page.evaluate("() => window.__lensModel.get('aggregate')") is True
    P = min(len(p) for p in BATCH)
    assert page.locator(".lw-title").text_content().endswith(f"mean of 3 prompts, aligned on the last token — {r.n_sites} sites × {P} tokens")
    for site, j in [(r.n_sites - 1, P - 1), (1, 0), (2, 1)]:
        cols = [len(p) - P + j for p in BATCH]
        entropy = np.mean([r.entropy[b, site, c] for b, c in enumerate(cols)])
        kl = np.mean([r.kl[b, site, c] for b, c in enumerate(cols)])
        tip = hover(page, site, j, r.n_sites)
        assert tip.locator(".lw-agg-note").text_content() == "mean over 3 prompts, aligned on the last token"
        assert tip.locator(".lw-tip-row").count() == 0
        assert float(tip.locator(".lw-entropy .lw-v").text_content().split()[0]) == pytest.approx(entropy, abs=1e-3)
        assert float(tip.locator(".lw-kl .lw-v").text_content().split()[0]) == pytest.approx(kl, abs=1e-3)
        label = "last" if j == P - 1 else f"last−{P - 1 - j}"
        assert tip.locator(".lw-tip-head b").text_content().strip() == f"{r.sites[site]} · {label}"
    # the metric switch recolours the mean too
    before = page.evaluate(CANVAS)
    page.select_option("select.lw-metric", "entropy")
    frames(page)
    assert page.evaluate(CANVAS) != before
    assert page.errors == []


def test_hostile_labels_prompts_and_tokens_stay_text(open_page):
    a = make_result(hostile=True, n_prompts=2, seed=0)
    b = make_result(hostile=True, n_prompts=2, seed=1)
    a.prompts = b.prompts = [HOSTILE_STRINGS[0], HOSTILE_STRINGS[1]]
    labels = ['<img src=x onerror="window.__pwned=5">', "</script><script>window.__pwned=6</script>"]
    w = LensWidget(result={labels[0]: a, labels[1]: b})
    page = open_page(w.export_state())
    frames(page)
    assert page.locator("select.lw-lens option").all_text_contents() == labels
    assert page.locator("select.lw-prompt-select option").all_text_contents()[:2] == [f"1: {HOSTILE_STRINGS[0]}", f"2: {HOSTILE_STRINGS[1][:40]}…"]
    seen = set()
    for label, res in zip(labels, (a, b)):
        page.select_option("select.lw-lens", label)
        for pi in ("0", "1", "mean"):
            page.select_option("select.lw-prompt-select", pi)
            frames(page)
            for site in range(res.n_sites):
                for col in range(res.n_positions):
                    tip = hover(page, site, col, res.n_sites)
                    assert tip.locator(".lw-tip-lens").text_content() == label
                    seen.update(tip.locator(".lw-tip-row .lw-tok").all_text_contents())
            assert label in page.locator(".lw-title").text_content()
    page.mouse.click(*cell_xy(page, 0, 0))
    page.wait_for_timeout(100)
    assert page.evaluate("() => window.__pwned") is None
    assert page.dialogs == [] and page.errors == []
    assert page.locator(".lens-widget img").count() == 0
    assert page.locator("script").count() == 3
    hostile_shown = {display_token(s) for i, s in enumerate(HOSTILE_STRINGS) if i in a.topk_ids or i in b.topk_ids}
    assert hostile_shown and hostile_shown <= seen
