import marimo

__generated_with = "0.25.2"
app = marimo.App(width="full")


@app.cell
def _():
    import html

    import marimo as mo

    return html, mo


@app.cell
def _(mo):
    mo.md(r"""
    # lens_widget in marimo

    The logit lens of the embedded SmolLM2-135M: one row per layer (final layer on top), one
    column per token. Hover a cell for its top tokens; click one and the cell below follows.
    The widget is wrapped in `mo.ui.anywidget`, so its traits are reactive: every cell that
    reads `lens` runs again when you click.
    """)
    return


@app.cell
def _():
    from lens_widget import HookedModel
    from lens_widget.widget import LensWidget

    model = HookedModel.default()
    return LensWidget, model


@app.cell
def _(LensWidget, mo, model):
    # marimo renders a single anywidget (not ipywidgets layouts): wrap it, and show it alone.
    lens = mo.ui.anywidget(LensWidget(model, "The capital of France is", progress=False))
    lens
    return (lens,)


@app.cell
def _(html, lens, mo):
    _sel = lens.widget.selected
    if _sel:
        _r = lens.widget.result
        _site, _col, _pos = _sel["site"], _sel["col"], _sel["position"]
        _top = int(_r.topk_ids[0, _site, _col, 0])
        _p = float(_r.topk_probs[0, _site, _col, 0])
        _tok = int(_r.input_ids[0, _pos])
        _out = mo.md(
            f"**Selected cell:** site {_site} (layer {html.escape(_r.site_labels[_site])}), "
            f"position {_pos} <code>{html.escape(_r.display(_tok))}</code> → top-1 "
            f"<code>{html.escape(_r.display(_top))}</code> (p = {_p:.3f})"
        )
    else:
        _out = mo.md("**Selected cell:** none yet — click a cell of the grid.")
    _out
    return


if __name__ == "__main__":
    app.run()
