"""Exact attribution of one lens cell (lens_widget.attribution, LogitLens.attribute).

* The rows sum to the cell's logit (or logit difference) as the lens's own run computes it,
  within 1e-4, on every registry architecture (tiny random models with every 1-D parameter —
  norm gains and shifts, biases — randomised, so LayerNorm shifts, Gemma's 1 + w post-norms and
  unembedding biases all bite), at several sites and positions, for the top-1 and for a pair.
* Per-head values (and the embedding and MLP rows) equal an independent computation written
  here: this file's own hooks on the attention output projection's input and the MLP outputs,
  W_O sliced by hand (Conv1D's [in, out] layout too), the attention post-norm (Gemma 2/3,
  OLMo 2) and the final norm frozen by hand from their eps and weights, and W_U by hand. So a
  wrong sign, a dropped or swapped head fails (shown by a test of the checks themselves).
* The tuned lens (a random TunedLens) as the decoder, per head by hand too; clear errors;
  accelerate offload; the plot (hostile token strings stay text); the widget request through
  the message loop (background work, queued behind a recompute); SmolLM2 (slow).
"""

from __future__ import annotations

import copy
import math
import re
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest
import torch

from zoo import CONFIGS, char_tokenizer, tiny

from lens_widget import HookedModel, LogitLens
from lens_widget.arch import get_path
from lens_widget.attribution import NonAffineDecoderError, attribute
from lens_widget.decoders import Decoder
from lens_widget.tokens import TokenLookupError
from lens_widget.tuned_lens import TunedLens

ARCHS = sorted(CONFIGS)
PROMPT = "Hello world, tiny!"
TOL = 1e-4

# -- this file's own knowledge of where things are (independent of the library's tables) --------
PROJ = {"gpt2": "attn.c_proj", "gpt_neo": "attn.attention.out_proj", "gptj": "attn.out_proj", "gpt_neox": "attention.dense",
        "gpt_neox_seq": "attention.dense", "opt": "self_attn.out_proj", "bloom": "self_attention.dense", "falcon": "self_attention.dense",
        "phi": "self_attn.dense"}
POST_NORM = {"gemma2": "post_attention_layernorm", "gemma3_text": "post_attention_layernorm", "olmo2": "post_attention_layernorm"}
#: the module whose output is what the MLP adds to the residual (default "mlp")
MLP = {"bloom": "mlp.dense_4h_to_h", "opt": "fc2", "gemma2": "post_feedforward_layernorm", "gemma3_text": "post_feedforward_layernorm",
       "olmo2": "post_feedforward_layernorm"}


@lru_cache(maxsize=None)
def model(arch: str) -> HookedModel:
    """``tiny(arch)`` with every 1-D parameter (norm gains/shifts, biases) randomised (a copy)."""
    hf = copy.deepcopy(tiny(arch).model)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 1:
                p.add_(0.3 * torch.randn(p.shape, generator=g))
    return HookedModel.from_model(hf, char_tokenizer(), name=f"tiny-{arch}-rnd")


def lens_logits(lens: LogitLens, prompt: str, site: str, pos: int, ids: list[int]) -> np.ndarray:
    """The lens's own logits of ``ids`` at the cell: its grid run's tracked logits (ids the
    tokenizer knows), or the decoder on the recorded row (ids only the unembedding has)."""
    known = lens.model.tokens.vocab_size
    if all(i < known for i in ids):
        r = lens.run(prompt, sites=[site], positions=[pos], track=ids, k=1, progress=False)
        return np.array([r.tracked(i, "logit")[0, 0, 0] for i in ids], dtype=np.float64)
    acts = lens.model.record(lens.model.encode(prompt), [site], torch.tensor([[pos]])).acts
    return lens.decoder.logits(acts[site][0], site)[0, ids].double().numpy()


def check_sum(df: pd.DataFrame, logit: float) -> None:
    """The rows sum to the cell's logit (or difference) within TOL."""
    total = float(df["contribution"].sum())
    assert abs(total - logit) < TOL * max(1.0, abs(logit)), f"rows sum to {total}, the lens says {logit}"


def check_heads(df: pd.DataFrame, by_hand: dict[str, float]) -> None:
    """Every head row (and the embedding and MLP rows ``by_hand`` has) equals the value computed
    by hand, and no head is missing or extra."""
    heads = df[df["kind"] == "head"].set_index("component")["contribution"]
    assert sorted(heads.index) == sorted(k for k in by_hand if ".H" in k), "head rows differ from the heads computed by hand"
    heads = df.set_index("component")["contribution"]
    for name, want in by_hand.items():
        assert abs(float(heads[name]) - want) < 1e-5 * max(1.0, abs(want)), f"{name}: {heads[name]} vs by hand {want}"


# -- sums ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_rows_sum_to_the_cells_logit_on_every_architecture(arch):
    hm = model(arch)
    lens = LogitLens(hm, compile="never")
    n = hm.num_layers
    sites = ["embed", "resid_out_0", f"resid_out_{n - 1}", "attn_out_1", "mlp_out_1"] + ([] if hm.parallel_blocks else ["resid_mid_1"])
    a, b = hm.tokens.token_id("e"), hm.tokens.token_id("o")
    for site in sites:
        for pos in (0, 6, len(PROMPT) - 1):
            df = lens.attribute(PROMPT, site, pos)
            top = df.attrs["token_ids"][0]
            z = lens_logits(lens, PROMPT, site, pos, [top, a, b])
            check_sum(df, z[0])
            assert abs(df.attrs["logit"] - z[0]) < 1e-5 and abs(df.attrs["error"]) < TOL
            full = lens.decoder.logits(lens.model.record(hm.encode(PROMPT), [site], torch.tensor([[pos]])).acts[site][0], site)[0]
            assert top == int(full.argmax()), "default token is the cell's top-1"
            diff = lens.attribute(PROMPT, site, pos, token=("e", "o"))
            check_sum(diff, z[1] - z[2])
            assert diff.attrs["kind"] == "logit_diff" and diff.attrs["token_ids"] == [a, b]
            assert df.attrs["resid_error"] < 1e-4
    # the row structure of a block output: embed, H heads (+ bias) + MLP per block, remainders last
    df = lens.attribute(PROMPT, f"resid_out_{n - 1}", -1)
    H = df.attrs["n_heads"]
    assert (df["kind"] == "head").sum() == n * H and (df["kind"] == "mlp").sum() == n and df["component"].iloc[0] == "embed"
    assert list(df.columns) == ["component", "layer", "head", "kind", "contribution"]
    order = [(l, i) for i, l in enumerate(df["layer"]) if l >= 0]
    assert [l for l, _ in order] == sorted(l for l, _ in order), "rows are in depth order"
    rem = df[df["kind"] == "remainder"]
    assert (rem["component"].str.startswith("remainder") | rem["component"].str.endswith("attn_norm_shift")).all()


def test_remainder_rows_appear_where_the_architecture_has_them():
    """LayerNorm shift (gpt2), unembedding bias (gptj, phi), soft-cap (gemma2), attention bias
    (gpt2, llama_untied_bias); none of them for a Llama (RMSNorm, no biases, no cap)."""
    def comps(arch):
        return set(LogitLens(model(arch), compile="never").attribute(PROMPT, "resid_out_2", -1)["component"])

    assert {"remainder: final-norm shift", "L0.attn_bias"} <= comps("gpt2")
    assert "remainder: unembedding bias" in comps("gptj") and "remainder: unembedding bias" in comps("phi")
    assert "remainder: soft-cap" in comps("gemma2")
    assert "L2.attn_bias" in comps("llama_untied_bias")
    assert not {c for c in comps("llama") if c.startswith("remainder") or c.endswith("bias")}


# -- per head, by hand ------------------------------------------------------------------------------
def _norm_by_hand(norm: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool]:
    """(gain, shift, scale, centred) of a norm module at row ``x``, from its class, eps and weights."""
    x = x.double()
    name = type(norm).__name__
    if name in ("LayerNorm", "OlmoLayerNorm"):
        eps = getattr(norm, "eps", 1e-5)
        d = x.shape[-1]
        w = norm.weight.detach().double() if getattr(norm, "weight", None) is not None else torch.ones(d, dtype=torch.float64)
        b = norm.bias.detach().double() if getattr(norm, "bias", None) is not None else torch.zeros(d, dtype=torch.float64)
        c = x - x.mean()
        return w, b, torch.sqrt((c * c).mean() + eps), True
    eps = getattr(norm, "variance_epsilon", None) or getattr(norm, "eps")
    w = norm.weight.detach().double()
    gain = 1 + w if name.startswith("Gemma") else w
    return gain, torch.zeros_like(w), torch.sqrt((x * x).mean() + eps), False


def heads_by_hand(hm: HookedModel, prompt: str, layer: int, pos: int, tid: int) -> dict[str, float]:
    """Every head's contribution to token ``tid``'s logit at (resid_out_layer, pos), by hand."""
    hf = hm.model
    mt = hf.config.model_type
    arch_key = "gpt_neox_seq" if hm.name.endswith("gpt_neox_seq-rnd") else mt
    proj_path = PROJ.get(arch_key, "self_attn.o_proj")
    blocks = get_path(hf, hm.arch.blocks)
    z, pn_in, resid = {}, {}, {}
    hooks = []
    for l in range(layer + 1):
        proj = get_path(blocks[l], proj_path)
        hooks.append(proj.register_forward_pre_hook(lambda m, args, l=l: z.__setitem__(l, args[0][0, pos].detach().clone())))
        if mt in POST_NORM:
            post = get_path(blocks[l], POST_NORM[mt])
            hooks.append(post.register_forward_pre_hook(lambda m, args, l=l: pn_in.__setitem__(l, args[0][0, pos].detach().clone())))
    hooks.append(blocks[layer].register_forward_hook(lambda m, args, out: resid.__setitem__("h", (out[0] if isinstance(out, tuple) else out)[0, pos].detach().clone())))
    hooks.append(blocks[0].register_forward_pre_hook(lambda m, args, kw: resid.__setitem__("embed", (args[0] if args else kw["hidden_states"])[0, pos].clone()), with_kwargs=True))
    mlp_out = {}

    def grab_mlp(l):
        def hook(m, args, out):
            out = out[0] if isinstance(out, tuple) else out
            mlp_out[l] = (out.view(1, -1, out.shape[-1]) if out.dim() == 2 else out)[0, pos].detach().clone()  # OPT flattens; Falcon adds in place
        return hook

    for l in range(layer + 1):
        hooks.append(get_path(blocks[l], MLP.get(mt, "mlp")).register_forward_hook(grab_mlp(l)))
    try:
        with torch.no_grad():
            hf(**hm.tokenizer(prompt, return_tensors="pt"), use_cache=False)
    finally:
        for h in hooks:
            h.remove()
    final = get_path(hf, hm.arch.final_norm)
    gain, shift, scale, centred = _norm_by_hand(final, resid["h"])
    with torch.no_grad():  # the hand-written norm is the module's norm
        assert torch.allclose(final(resid["h"][None])[0].double(), gain * ((resid["h"].double() - resid["h"].double().mean()) if centred else resid["h"].double()) / scale + shift, atol=1e-4)
    u = hf.get_output_embeddings().weight.detach().double()[tid]
    H = hf.config.num_attention_heads
    out = {}
    for l in range(layer + 1):
        proj = get_path(blocks[l], proj_path)
        W = proj.weight.detach().double()
        zz = z[l].double()
        dh = zz.numel() // H
        for h in range(H):
            sl = slice(h * dh, (h + 1) * dh)
            vec = zz[sl] @ W[sl, :] if type(proj).__name__ == "Conv1D" else W[:, sl] @ zz[sl]
            if mt in POST_NORM:
                pn = get_path(blocks[l], POST_NORM[mt])
                g2, _, s2, c2 = _norm_by_hand(pn, pn_in[l])
                vec = g2 * ((vec - vec.mean()) if c2 else vec) / s2
            vec = (vec - vec.mean()) if centred else vec
            out[f"L{l}.H{h}"] = float(u @ (gain * vec / scale))

    def read(vec):
        vec = vec.double()
        return float(u @ (gain * ((vec - vec.mean()) if centred else vec) / scale))

    out["embed"] = read(resid["embed"])
    for l in range(layer + 1):
        out[f"L{l}.mlp"] = read(mlp_out[l])
    return out


@pytest.mark.parametrize("arch", ARCHS)
def test_each_head_equals_a_hand_computation(arch):
    hm = model(arch)
    lens = LogitLens(hm, compile="never")
    for layer, pos in ((hm.num_layers - 1, -1), (1, 4)):
        df = lens.attribute(PROMPT, f"resid_out_{layer}", pos)
        p = pos % len(PROMPT)
        check_heads(df, heads_by_hand(hm, PROMPT, layer, p, df.attrs["token_ids"][0]))


def test_the_checks_fail_on_a_wrong_sign_or_a_dropped_head():
    hm = model("llama")
    df = LogitLens(hm, compile="never").attribute(PROMPT, "resid_out_2", -1)
    by_hand = heads_by_hand(hm, PROMPT, 2, len(PROMPT) - 1, df.attrs["token_ids"][0])
    check_heads(df, by_hand)
    check_sum(df, df.attrs["logit"])
    i = int(df.index[(df["component"] == "L1.H2")][0])
    flipped = df.copy()
    flipped.loc[i, "contribution"] *= -1
    assert abs(df.loc[i, "contribution"]) > 1e-3
    with pytest.raises(AssertionError):
        check_heads(flipped, by_hand)
    with pytest.raises(AssertionError):
        check_sum(flipped, df.attrs["logit"])
    dropped = df.drop(index=i)
    with pytest.raises(AssertionError):
        check_heads(dropped, by_hand)
    with pytest.raises(AssertionError):
        check_sum(dropped, df.attrs["logit"])
    swapped = df.copy()
    j = int(df.index[(df["component"] == "L1.H3")][0])
    swapped.loc[[i, j], "contribution"] = df.loc[[j, i], "contribution"].to_numpy()
    with pytest.raises(AssertionError):
        check_heads(swapped, by_hand)


# -- the tuned lens ------------------------------------------------------------------------------------
def random_tuned(hm: HookedModel, seed: int = 3) -> TunedLens:
    t = TunedLens(hm)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for lin in t.translators:
            lin.weight.copy_(0.2 * torch.randn(lin.weight.shape, generator=g))
            lin.bias.copy_(torch.randn(lin.bias.shape, generator=g))
    return t


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2", "olmo2", "falcon", "opt"])
def test_tuned_lens_rows_sum_and_heads_go_through_the_translator(arch):
    hm = model(arch)
    tuned = random_tuned(hm)
    lens = LogitLens(hm, compile="never", decoder=tuned)
    for site, pos in (("resid_out_1", -1), ("embed", 3), ("resid_out_0", 5)):
        df = lens.attribute(PROMPT, site, pos)
        z = lens_logits(lens, PROMPT, site, pos % len(PROMPT), df.attrs["token_ids"])
        check_sum(df, z[0])
        assert "remainder: lens offset" in set(df["component"])
        assert df.attrs["lens"] == "tuned lens"
    # by hand: head h's part through (I + W_1) before the frozen norm
    df = lens.attribute(PROMPT, "resid_out_1", -1)
    plain = LogitLens(hm, compile="never").attribute(PROMPT, "resid_out_1", -1, token=df.attrs["token_ids"][0])
    assert not np.allclose(df["contribution"].to_numpy()[:5], plain["contribution"].to_numpy()[:5])


def test_tuned_lens_head_by_hand():
    hm = model("llama")
    tuned = random_tuned(hm)
    df = LogitLens(hm, compile="never", decoder=tuned).attribute(PROMPT, "resid_out_1", -1)
    tid, p = df.attrs["token_ids"][0], len(PROMPT) - 1
    hf = hm.model
    blocks = hf.model.layers
    z, resid = {}, {}
    hooks = [blocks[l].self_attn.o_proj.register_forward_pre_hook(lambda m, a, l=l: z.__setitem__(l, a[0][0, p].clone())) for l in (0, 1)]
    hooks.append(blocks[1].register_forward_hook(lambda m, a, o: resid.__setitem__("h", (o[0] if isinstance(o, tuple) else o)[0, p].clone())))
    with torch.no_grad():
        hf(**hm.tokenizer(PROMPT, return_tensors="pt"), use_cache=False)
    for h in hooks:
        h.remove()
    t = tuned.translators[2]  # hidden_states[2] = resid_out_1
    A = torch.eye(32, dtype=torch.float64) + t.weight.detach().double()
    th = A @ resid["h"].double() + t.bias.detach().double()
    norm = hf.model.norm
    scale = torch.sqrt((th * th).mean() + norm.variance_epsilon)
    u = hf.lm_head.weight.detach().double()[tid]
    want = {}
    for l in (0, 1):
        W = blocks[l].self_attn.o_proj.weight.detach().double()
        for h in range(4):
            vec = W[:, h * 8:(h + 1) * 8] @ z[l][h * 8:(h + 1) * 8].double()
            want[f"L{l}.H{h}"] = float(u @ (norm.weight.detach().double() * (A @ vec) / scale))
    check_heads(df, want)


# -- names, positions, tokens, errors --------------------------------------------------------------------
def test_sites_by_label_and_positions_from_the_end():
    lens = LogitLens(model("llama"), compile="never")
    a = lens.attribute(PROMPT, "resid_out_2", len(PROMPT) - 1, token="e")
    for site in ("2", 2, -1):
        b = lens.attribute(PROMPT, site, -1, token="e")
        assert b.attrs["site"] == "resid_out_2" and b.attrs["position"] == len(PROMPT) - 1
        pd.testing.assert_frame_equal(a, b)
    assert lens.attribute(PROMPT, "emb", 2).attrs["site"] == "embed"
    assert lens.attribute(PROMPT, "m1", 2).attrs["site"] == "resid_mid_1"
    assert lens.attribute(PROMPT, "a1", 2).attrs["site"] == "attn_out_1"
    assert lens.attribute(PROMPT, "f1", 2).attrs["site"] == "mlp_out_1"
    assert lens.attribute(PROMPT, "1", "last").attrs["position"] == len(PROMPT) - 1
    # token by id equals token by string
    tid = lens.model.tokens.token_id("e")
    pd.testing.assert_frame_equal(a, lens.attribute(PROMPT, "2", -1, token=tid))


def test_clear_errors():
    lens = LogitLens(model("llama"), compile="never")
    with pytest.raises(IndexError, match="layer 9"):
        lens.attribute(PROMPT, "resid_out_9", 0)
    with pytest.raises(IndexError):
        lens.attribute(PROMPT, "7", 0)
    with pytest.raises(KeyError, match="unknown site"):
        lens.attribute(PROMPT, "resid_42x", 0)
    with pytest.raises(KeyError):
        lens.attribute(PROMPT, None, 0)
    with pytest.raises(IndexError, match="outside"):
        lens.attribute(PROMPT, "1", 100)
    with pytest.raises(IndexError, match="outside"):
        lens.attribute(PROMPT, "1", -100)
    with pytest.raises(IndexError):
        lens.attribute(PROMPT, "1", 1.5)
    with pytest.raises(TokenLookupError):
        lens.attribute(PROMPT, "1", 0, token="several tokens")
    with pytest.raises(TokenLookupError):
        lens.attribute(PROMPT, "1", 0, token=10**6)
    with pytest.raises(ValueError, match="pair"):
        lens.attribute(PROMPT, "1", 0, token=("a", "b", "c"))
    with pytest.raises(ValueError, match="twice"):
        lens.attribute(PROMPT, "1", 0, token=("a", "a"))
    with pytest.raises(ValueError, match="one prompt"):
        lens.attribute([PROMPT, "other"], "1", 0)
    with pytest.raises(KeyError, match="parallel"):
        LogitLens(model("gptj"), compile="never").attribute(PROMPT, "resid_mid_1", 0)


class TanhLens(Decoder):
    """Not affine: tanh before the final norm."""

    name = "tanh lens"

    def translate(self, h, site):
        return torch.tanh(h)


def test_a_non_affine_decoder_is_refused():
    hm = model("llama")
    with pytest.raises(NonAffineDecoderError, match="not affine"):
        attribute(hm, TanhLens(hm), PROMPT, "resid_out_1", -1)


# -- the embedded model -------------------------------------------------------------------------------
@pytest.mark.slow
def test_embedded_model_paris(smollm):
    lens = LogitLens(smollm, compile="never")
    prompt = "The capital of France is"
    n = smollm.num_layers
    paris, london = smollm.tokens.token_id(" Paris"), smollm.tokens.token_id(" London")
    df = lens.attribute(prompt, f"resid_out_{n - 1}", -1)
    assert df.attrs["token_ids"] == [paris], "the final layer's top-1 is ' Paris'"
    for site in (f"resid_out_{n - 1}", "resid_out_15", "resid_mid_20"):
        z = lens_logits(lens, prompt, site, len(smollm.encode(prompt).input_ids[0]) - 1, [paris, london])
        check_sum(lens.attribute(prompt, site, -1, token=" Paris"), z[0])
        check_sum(lens.attribute(prompt, site, -1, token=(" Paris", " London")), z[0] - z[1])
    df = lens.attribute(prompt, f"resid_out_{n - 1}", -1, token=" Paris")
    p = int(smollm.encode(prompt).lengths[0]) - 1
    check_heads(df[df["layer"].isin([-1, n - 1]) | (df["kind"] != "head")], {k: v for k, v in heads_by_hand(smollm, prompt, n - 1, p, paris).items() if k.startswith(f"L{n - 1}.") or k == "embed" or k.endswith(".mlp")})
    assert len(df) == 1 + n * (smollm.model.config.num_attention_heads + 1)


# -- the plot and the widget request -------------------------------------------------------------------
def test_attribution_plot():
    from bokeh.embed import file_html
    from bokeh.resources import INLINE

    from lens_widget import plots

    df = LogitLens(model("gpt2"), compile="never").attribute(PROMPT, "resid_out_2", -1, token=("e", "o"))
    fig = plots.attribution(df, top=8)
    html = file_html(fig, INLINE, "t")
    assert "cdn.bokeh.org" not in html
    for name in df.reindex(df["contribution"].abs().sort_values(ascending=False).index)["component"].head(8):
        assert name in html
    with pytest.raises(ValueError):
        plots.attribution(pd.DataFrame({"x": [1]}))


def ask(w, **content):
    """A request through the widget's message loop, as the front end sends it; its reply."""
    w.handle_message({"request_id": f"r{len(w.replies)}", **content})
    w.wait()  # attribution runs as background work: its reply comes when it ends
    return w.replies[-1]


def test_widget_attribution_request():
    from lens_widget.widget import LensWidget

    hm = model("llama")
    w = LensWidget(hm, PROMPT, progress=False)
    w.replies = []
    w.send = lambda content, buffers=None: w.replies.append((content, buffers or [])) if content.get("type") == "reply" else None
    r = w.result
    msg, buffers = ask(w, type="attribution", site=3, col=5)
    assert msg["ok"], msg
    reply = msg["result"]
    top = int(r.topk_ids[0, 3, 5, 0])
    df = LogitLens(hm, compile="never").attribute(PROMPT, r.sites[3], int(r.positions[0, 5]), token=top)
    assert reply["token_ids"] == [top] and reply["kind"] == "logit" and reply["site_name"] == r.sites[3]
    assert reply["site"] == 3 and reply["col"] == 5 and reply["position"] == 5 and reply["lens"] == "logit lens"
    assert math.isclose(reply["logit"], df.attrs["logit"], abs_tol=1e-6)
    total = sum(reply["values"]) + sum(x["value"] for x in reply["remainder"])
    assert abs(total - reply["logit"]) < TOL and abs(reply["sum"] - total) < 1e-9
    assert reply["names"] == [c for c, k in zip(df["component"], df["kind"]) if k != "remainder"]
    assert reply["bars"]["names"][0] == df.loc[df["contribution"].abs().idxmax(), "component"]
    enc = reply["heads"]["values"]  # float32 [layers, heads] as a binary buffer
    grid = np.frombuffer(buffers[enc["buffer_index"]], dtype=enc["dtype"]).reshape(enc["shape"])
    assert grid.shape == (3, 4) and enc["dtype"] == "float32" and reply["heads"]["layers"] == [0, 1, 2]
    assert np.isclose(grid[1, 2], df.set_index("component").loc["L1.H2", "contribution"], atol=1e-6)
    pair = ask(w, type="attribution", site=3, col=5, token=["e", "o"])[0]["result"]
    assert pair["kind"] == "logit_diff" and pair["token_ids"] == [hm.tokens.token_id("e"), hm.tokens.token_id("o")]
    assert set(pair["tokens"].values()) == {"e", "o"}
    by_id = ask(w, type="attribution", site=3, col=5, token=top)[0]["result"]
    assert by_id["values"] == reply["values"]
    for bad in ({"site": 99, "col": 0}, {"site": 0, "col": "x"}, {"site": 0, "col": 0, "token": [1, 2, 3]},
                {"site": 0, "col": 0, "token": True}, {"site": 0, "col": 0, "top": 0}, {"site": 0, "col": 0, "token": "several tokens"},
                {"site": 0, "col": 0, "token": {"a": 1}}):
        msg = ask(w, type="attribution", **bad)[0]
        assert msg["ok"] is False and msg["error"], bad
    # the widget keeps working; the Python side of the same
    assert ask(w, type="attribution", site=1, col=0)[0]["ok"]
    assert w.attribution(3, 5)["token_ids"] == [top] and w.attribution(-1, -1)["site_name"] == r.sites[-1]
    # queued behind a recompute (a new prompt), it answers for the new grid, after it
    w.handle_message({"type": "set_prompt", "request_id": "p", "prompt": "Other words!"})
    w.handle_message({"type": "attribution", "request_id": "a", "site": 2, "col": 3, "token": "e"})
    w.wait()
    (p_msg, _), (a_msg, _) = w.replies[-2:]
    assert p_msg["request_id"] == "p" and p_msg["ok"] and a_msg["request_id"] == "a" and a_msg["ok"]
    again = LogitLens(hm, compile="never").attribute("Other words!", "resid_out_1", 3, token="e")
    assert math.isclose(a_msg["result"]["logit"], again.attrs["logit"], abs_tol=1e-6)
    w.close()


@pytest.mark.parametrize("arch", ["llama", "gemma2", "gpt2", "opt"])
def test_offloaded_model_gives_the_same_rows(arch):
    """accelerate CPU offload of blocks, norm and head: the weights are read while held, the pass
    runs to the end (no early stop with offload hooks), and every row is the same."""
    from test_offload import PARTS, offloaded

    hm = model(arch)
    a = LogitLens(hm, compile="never").attribute(PROMPT, "resid_out_1", -1)
    b = LogitLens(offloaded(hm, PARTS, "cpu", None), compile="never").attribute(PROMPT, "resid_out_1", -1)
    pd.testing.assert_frame_equal(a, b, check_exact=False, atol=1e-6, rtol=0)


def test_widget_without_a_model_refuses_attribution():
    from lens_widget.widget import LensWidget
    from lens_widget.widget.requests import RequestError

    r = LogitLens(model("llama"), compile="never").run(PROMPT, progress=False)
    w = LensWidget(result=r)
    w.replies = []
    w.send = lambda content, buffers=None: w.replies.append((content, buffers or [])) if content.get("type") == "reply" else None
    with pytest.raises(RequestError, match="no model"):
        w.attribution(1, 0)
    msg = ask(w, type="attribution", site=1, col=0)[0]
    assert msg["ok"] is False and "no model" in msg["error"]


def test_attribution_plot_keeps_hostile_token_strings_as_text():
    from bokeh.embed import file_html
    from bokeh.models import HoverTool
    from bokeh.resources import INLINE

    from fakes import HOSTILE_STRINGS
    from lens_widget import plots

    df = LogitLens(model("llama"), compile="never").attribute(PROMPT, "resid_out_2", -1, token=("e", "o"))
    df.attrs["tokens"] = HOSTILE_STRINGS[:2]
    layout = plots.attribution(df)
    html = file_html(layout, INLINE, "t")
    assert '<script src="http' not in html
    for s in (HOSTILE_STRINGS[0], HOSTILE_STRINGS[1], "<script>window.__pwned"):
        assert s not in html
    for fig in layout.children:
        hover = fig.select_one(HoverTool)
        for _, template in hover.tooltips:
            assert "{safe}" not in template
            for field in re.findall(r"@(\w+)", template):
                assert all(field in r.data_source.data for r in fig.renderers), field
