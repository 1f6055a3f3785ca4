"""Exact attribution of one lens cell: who wrote this token's logit here.

For a cell (site ``L``, token position ``p``) of one prompt and a token ``t`` (or a pair
``(a, b)``: the logit difference), the residual vector at the cell is split into the parts the
blocks wrote to it — the embedding, each attention head of every block up to the site, each
attention output bias, each MLP — and every part is pushed through the lens's decoder with the
final norm's scale **frozen at its value for that cell**::

    contribution(part) = W_U[t] · (gain ⊙ centre(T(part) − T(0)) / scale)

where ``T`` is the decoder's map before the norm (:meth:`Decoder.translate
<lens_widget.decoders.Decoder.translate>`: the identity for the logit lens, ``h + A h + b`` for
the tuned lens; it must be affine, which is checked). With the scale frozen the map from the
residual to the logit is affine, so the parts sum exactly; what is constant or not linear is a
row of its own, never hidden:

* ``remainder: lens offset`` — ``T(0)`` of an affine lens (through the frozen norm);
* ``remainder: final-norm shift`` — the final norm's bias (LayerNorm; 0 for RMSNorm, so absent);
* ``remainder: projection bias`` — a bias of a projection after the norm (OPT's ``project_out``);
* ``remainder: unembedding bias`` — the unembedding's own bias (GPT-J, Phi);
* ``remainder: soft-cap`` — ``cap · tanh(z / cap) − z`` (Gemma 2/3's final soft-cap): the parts
  are contributions to the pre-cap logit ``z``;
* ``L{l}.attn_norm_shift`` — the shift of an attention post-norm (below), where it has one.

Heads split at the attention output projection's **input** (``o_proj`` / ``c_proj`` / ``dense``
/ ``out_proj``; its input is ``[..., n_heads × d_head]``, head-major): head ``h``'s part is
``z_h @ W_O[:, h-slice]ᵀ`` (GPT-2's ``Conv1D`` stores ``W_O`` as ``[in, out]``: handled).
Grouped-query attention (Llama 3, Qwen, Mistral, Gemma) needs nothing special: keys and values
are shared, but the projection's input still has one slice per query head.

Architectures whose attention output passes through a norm before the residual (Gemma 2/3 and
OLMo 2's ``post_attention_layernorm``) get that norm's scale frozen at the cell's position too
(read off the module with :meth:`Unembed.norm_parts <lens_widget.unembed.Unembed.norm_parts>`),
so the heads still split linearly; their MLPs' post-norms need nothing (the MLP is one part).

With a remote model (nnsight ``remote=``, NDIF) the rows are read inside the trace and the same
arithmetic (:mod:`lens_widget.contributions`, shipped by value) runs there: only the table comes
back. Only the plain logit lens travels; another decoder is refused by name.

Locally everything comes from **one** forward pass, hooks recording only what the cell needs at the one
position, for blocks up to the site (the pass stops after that block when nothing is offloaded),
and the arithmetic runs in float64, so the only differences from the lens's own float32 logit
are the float32 rounding of the model's forward and of the lens (``df.attrs["error"]``, typically
1e-6..1e-5 for a float32 model; a half-precision model rounds its residual additions and the
lens's norm output to bf16, so there the rows match the lens's logit only to ~1e-3). Direct
effects only: a head's row is what it wrote into the residual, not what it changed downstream
(that is patching).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from .arch import get_path
from .cells import check_portable
from .contributions import attribute_rows, frozen_norm
from .decoders import Decoder
from .devices import execution_device, is_offloaded, materialized
from .hooked import HookedModel
from .sites import parse_site, resolve_positions, resolve_site
from .sources import SiteRecorder, Work

__all__ = ["attribute", "as_data", "ATTN_PROJ", "MLP_OUT", "NonAffineDecoderError", "resolve_tokens", "COLUMNS"]

#: model_type -> the attention output projection inside a block (its input is the heads' outputs).
ATTN_PROJ: dict[str, str] = {
    "gpt2": "attn.c_proj",
    "gpt_neo": "attn.attention.out_proj",
    "gptj": "attn.out_proj",
    "gpt_neox": "attention.dense",
    "opt": "self_attn.out_proj",
    "bloom": "self_attention.dense",
    "falcon": "self_attention.dense",
    "phi": "self_attn.dense",
    **{t: "self_attn.o_proj" for t in ("llama", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3",
                                       "stablelm", "olmo", "olmo2")},
}
#: model_type -> the module whose output is what the MLP adds to the residual, where the registry
#: has none (BLOOM's MLP adds the residual itself: its last projection's output is the part).
MLP_OUT: dict[str, str] = {"bloom": "mlp.dense_4h_to_h"}

#: The DataFrame's columns.
COLUMNS = ["component", "layer", "head", "kind", "contribution"]


class NonAffineDecoderError(ValueError):
    """The decoder's map before the final norm is not affine, so a cell's logit does not split
    into parts (attribution needs ``T(x + y) = T(x) + T(y) − T(0)``)."""


class _Stop(Exception):
    """Raised by a hook after the last block a cell needs: the rest of the forward is not run."""


# -- what is asked ---------------------------------------------------------------------------------


def resolve_tokens(model: HookedModel, token: Any) -> list[int] | None:
    """``[id]`` for a token (id or single-token string), ``[a, b]`` for a pair, ``None`` for none."""
    if token is None:
        return None
    if isinstance(token, (tuple, list)):
        if len(token) != 2:
            raise ValueError(f"a logit difference needs a pair of tokens (a, b), got {len(token)}: {token!r}")
        ids = [model.tokens.token_id(t) for t in token]
        if ids[0] == ids[1]:
            raise ValueError(f"the pair names one token twice ({ids[0]}): its logit difference is 0")
        return ids
    return [model.tokens.token_id(token)]


def _position(position: Any, length: int) -> int:
    if isinstance(position, bool) or not isinstance(position, (int, np.integer, str)):
        raise IndexError(f"position must be a token index (an int; negative counts from the end) or 'last', got {position!r}")
    found = resolve_positions(int(position) if not isinstance(position, str) else position, length)
    if len(found) != 1:
        raise IndexError(f"position {position!r} names {len(found)} tokens; attribution is of one cell")
    return found[0]


# -- where things are ----------------------------------------------------------------------------
@dataclass
class _Layout:
    """Where one architecture's parts are, inside a block."""

    proj: str  # attention output projection
    mlp: str  # module whose output is the MLP's part
    attn_post_norm: str | None  # a norm between the projection and the residual (Gemma 2, OLMo 2)


def _layout(model: HookedModel) -> _Layout:
    cfg = model.model.config
    mt = getattr(cfg, "model_type", "")
    if mt not in ATTN_PROJ:
        raise NotImplementedError(
            f"attribution does not know where {mt!r}'s attention output projection is; add it to "
            "lens_widget.attribution.ATTN_PROJ (model_type -> path inside a block, e.g. 'self_attn.o_proj')"
        )
    if mt == "opt" and not getattr(cfg, "do_layer_norm_before", True):
        raise NotImplementedError("this OPT model norms the residual after each block (OPT-350m): the residual is not a sum of parts")
    if mt == "bloom" and getattr(cfg, "apply_residual_connection_post_layernorm", False):
        raise NotImplementedError("this BLOOM model adds the normed input as its residual: the residual is not a sum of parts")
    if mt == "bloom" and getattr(cfg, "pretraining_tp", 1) > 1 and getattr(cfg, "slow_but_exact", False):
        raise NotImplementedError("BLOOM with slow_but_exact splits its projections by hand; load it with slow_but_exact=False")
    proj = ATTN_PROJ[mt]
    mlp = MLP_OUT.get(mt) or model.arch.mlp_out
    if mlp is None:
        raise NotImplementedError(f"{mt!r}: no module's output is the MLP's part; add it to lens_widget.attribution.MLP_OUT")
    attn_out = model.arch.attn_out
    post = attn_out if attn_out is not None and not proj.startswith(attn_out + ".") else None
    return _Layout(proj, mlp, post)


def _n_heads(model: HookedModel) -> int:
    cfg = model.model.config
    for key in ("num_attention_heads", "n_head", "num_heads"):
        n = getattr(cfg, key, None)
        if isinstance(n, int) and n > 0:
            return n
    raise NotImplementedError(f"cannot tell the number of attention heads of {type(model.model).__name__} from its config")


def _proj_weight(proj: nn.Module) -> torch.Tensor:
    """``W_O`` as ``[d_model, n_heads × d_head]`` (``Conv1D`` stores it transposed)."""
    w = proj.weight.detach()
    return w.T if type(proj).__name__ == "Conv1D" else w


# -- the one forward pass ---------------------------------------------------------------------------
def _row(x: Any, p: int) -> torch.Tensor:
    """Row ``p`` of a hooked tensor of one prompt (``[1, T, d]``, or ``[T, d]`` flattened), copied
    (Falcon adds the attention's output into its MLP's output in place)."""
    x = x[0] if isinstance(x, (tuple, list)) else x
    return (x[0, p] if x.dim() == 3 else x[p]).detach().clone()


def _first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    if args:
        return args[0]
    for key in ("hidden_states", "input", "x"):
        if key in kwargs:
            return kwargs[key]
    raise RuntimeError("could not find the hooked module's input")


@torch.inference_mode()
def _record(model: HookedModel, layout: _Layout, batch: Any, site: str, p: int, layers: list[int], want_mlp: list[int]) -> dict[str, Any]:
    """One forward pass: the embedding (when needed), each needed block's projection input, its
    attention post-norm's input, its MLP's part, and the site's own value, at position ``p``."""
    hf, blocks = model.model, model.blocks
    kind, layer = parse_site(site, len(blocks))
    got: dict[str, Any] = {}
    handles: list[Any] = []

    def pre(name: str):
        def hook(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            got[name] = _row(_first_input(args, kwargs), p)
        return hook

    def out(name: str):
        def hook(_m: nn.Module, _args: tuple, output: Any) -> None:
            got[name] = _row(output, p)
        return hook

    def stop(_m: nn.Module, _args: tuple, _output: Any) -> None:
        raise _Stop

    if kind in ("embed", "resid_out", "resid_mid"):
        handles.append(blocks[0].register_forward_pre_hook(pre("embed"), with_kwargs=True))
    for l in layers:
        block = blocks[l]
        handles.append(get_path(block, layout.proj).register_forward_pre_hook(pre(f"z{l}"), with_kwargs=True))
        if layout.attn_post_norm:
            handles.append(get_path(block, layout.attn_post_norm).register_forward_pre_hook(pre(f"pn{l}"), with_kwargs=True))
    for l in want_mlp:
        handles.append(get_path(blocks[l], layout.mlp).register_forward_hook(out(f"mlp{l}")))
    recorder = SiteRecorder(hf, model.arch, [site])
    recorder.select = torch.tensor([[p]])
    offloaded = any(is_offloaded(m) for m in hf.modules())
    last = 0 if layer is None else int(layer)
    try:
        with recorder:
            if not offloaded:  # after the recorder's hooks: the site is recorded first
                handles.append(blocks[last].register_forward_hook(stop))
            dev = execution_device(hf.get_input_embeddings())
            try:
                hf(input_ids=batch.input_ids.to(dev), attention_mask=batch.attention_mask.to(dev), use_cache=False)
            except _Stop:
                pass
        got["site"] = recorder.finish()[site][0, 0].detach().clone()
    finally:
        for h in handles:
            h.remove()
    return got


# -- the decoder as an affine map ---------------------------------------------------------------------
def _translate_affine(decoder: Decoder, site: str, h: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """``(A, c)`` with ``T(x) = A x + c`` for the decoder's map at ``site`` (float64; ``None``
    for the identity), read off ``T`` itself on the unit vectors and checked on ``h``, ``2h``
    and a random vector: :class:`NonAffineDecoderError` if ``T`` is not affine."""
    if type(decoder).translate is Decoder.translate:
        return None, None
    d = h.shape[-1]
    dt, dev = decoder.in_dtype, decoder.device
    with torch.inference_mode():
        def T(x: torch.Tensor) -> torch.Tensor:
            return decoder.translate(x.to(device=dev, dtype=dt), site).to(torch.float64)

        c = T(torch.zeros(1, d))[0]
        A = (T(torch.eye(d)) - c).T  # column i = T(e_i) - T(0)
        g = torch.Generator().manual_seed(0)
        probes = torch.stack([h.float().cpu(), 2 * h.float().cpu(), torch.randn(d, generator=g) * h.float().norm().cpu() / d**0.5])
        got = T(probes)
        want = probes.to(dev, torch.float64) @ A.T + c
        err = (got - want).norm(dim=-1) / (got.norm(dim=-1) + want.norm(dim=-1) + 1e-30)
    if not bool(torch.isfinite(err).all()) or float(err.max()) > 1e-4:
        raise NonAffineDecoderError(
            f"the {decoder.name}'s map before the final norm is not affine at {site!r} (relative deviation "
            f"{float(err.max()):.2e} from T(0) + A x): a cell's logit does not split into parts; attribution "
            "works with the logit lens and affine lenses (tuned, Jacobian)"
        )
    return A, c


# -- where the arithmetic runs ----------------------------------------------------------------------
def _here(model: HookedModel, decoder: Decoder, layout: _Layout, batch: Any, site: str, p: int, layers: list[int], mlps: list[int],
          ids: list[int] | None, n_heads: int) -> dict[str, Any]:
    """Record the cell's rows with local hooks (one forward) and attribute them here."""
    rec = _record(model, layout, batch, site, p, layers, mlps)
    h = rec["site"]

    def weights(l: int) -> tuple[torch.Tensor, torch.Tensor | None, Any]:
        block = model.blocks[l]
        proj = get_path(block, layout.proj)
        with materialized(proj):
            W = _proj_weight(proj).to(torch.float64).cpu()
            b = getattr(proj, "bias", None)
            b = None if b is None else b.detach().to(torch.float64).cpu()
        pn = None
        if layout.attn_post_norm:
            norm = get_path(block, layout.attn_post_norm)
            with materialized(norm):
                pn = frozen_norm(norm, rec[f"pn{l}"], next((q.dtype for q in norm.parameters()), rec[f"pn{l}"].dtype))
        return W, b, pn

    A, c = _translate_affine(decoder, site, h)
    with decoder.loaded(), materialized(decoder.norm):
        x = decoder.translate(h[None].to(device=decoder.device, dtype=decoder.in_dtype), site)[0]
        return attribute_rows(rec, h, layers, mlps, n_heads, weights, decoder.unembedding, x, ids, A, c)


def _in_trace(model: HookedModel, decoder: Decoder, layout: _Layout, batch: Any, site: str, p: int, layers: list[int], mlps: list[int],
              ids: list[int] | None, n_heads: int) -> dict[str, Any]:
    """Attribute next to a remote model (an nnsight trace, on NDIF): the source reads the rows
    inside the trace and :func:`lens_widget.sources.intrace.attribute_cell` runs the same
    arithmetic there; only the table comes back."""
    check_portable(decoder)
    blocks = model.arch.blocks
    kind, _ = parse_site(site, model.num_layers)
    # (name, layer, order inside the block, module path, "input" | "output"): what the trace reads
    reads: list[tuple[str, int, float, str, str]] = []
    if kind in ("embed", "resid_out", "resid_mid"):
        reads.append(("embed", 0, 0, f"{blocks}.0", "input"))
    pn_dtype = None
    for l in layers:
        reads.append((f"z{l}", l, 0.5, f"{blocks}.{l}.{layout.proj}", "input"))
        if layout.attn_post_norm:
            reads.append((f"pn{l}", l, 0.9, f"{blocks}.{l}.{layout.attn_post_norm}", "input"))
            norm = get_path(model.blocks[l], layout.attn_post_norm)
            pn_dtype = str(next((q.dtype for q in norm.parameters()), torch.float32)).replace("torch.", "")
    reads += [(f"mlp{l}", l, 3, f"{blocks}.{l}.{layout.mlp}", "output") for l in mlps]
    job = {"reads": reads, "site": site, "layers": layers, "mlps": mlps, "n_heads": n_heads, "ids": ids, "blocks": blocks,
           "proj": layout.proj, "conv1d": type(get_path(model.blocks[0], layout.proj)).__name__ == "Conv1D",
           "post_norm": layout.attn_post_norm, "post_norm_dtype": pn_dtype}
    return model.source.reduce(batch, [site], torch.tensor([[p]]), Work(None, "attribute", job, None))


# -- the attribution -------------------------------------------------------------------------------------
@torch.inference_mode()
def attribute(model: HookedModel, decoder: Decoder, prompt: Any, site: Any, position: Any, token: Any = None) -> pd.DataFrame:
    """Exact attribution of the lens cell (``site``, ``position``) of ``prompt`` to ``token``.

    ``site``: a name (``"resid_out_12"``, ``"embed"``, also ``resid_mid_i``, ``attn_out_i``,
    ``mlp_out_i``) or the grid's label (``"12"``, ``"emb"``); ``position``: a token index
    (negative counts from the end) or ``"last"``; ``token``: an id or a single-token string
    (default: the cell's top-1 under ``decoder``), or a pair ``(a, b)`` for logit(a) − logit(b).

    Returns a DataFrame with one row per part in depth order (``component``, ``layer``,
    ``head`` (−1 if none), ``kind`` ∈ {embed, head, attn_bias, mlp, remainder},
    ``contribution``): the embedding, then each block's heads (``"L3.H5"``), attention output
    bias (``"L3.attn_bias"``, where the projection has one), attention post-norm shift (where
    nonzero) and MLP (``"L3.mlp"``), then the decoder's remainder rows (see the module's doc).
    ``contribution`` sums to the cell's logit (or difference) as the lens computes it;
    ``df.attrs`` holds ``logit`` (the lens's), ``sum``, ``error`` (sum − logit),
    ``resid_error`` (max |Σ parts − residual| over the vector), ``token_ids``, ``tokens``,
    ``site``, ``position``, ``prompt``, ``lens``, ``model``, ``n_heads``, ``kind``
    (``"logit"`` or ``"logit_diff"``).
    """
    if decoder.model is not model and decoder.model.model is not model.model:
        raise ValueError("the decoder was built for another model")
    n_layers = model.num_layers
    site = resolve_site(site, n_layers, model.parallel_blocks)
    decoder.check_sites([site])
    batch = model.as_batch(prompt)
    if batch.input_ids.shape[0] != 1:
        raise ValueError(f"attribution is of one prompt's cell; got {batch.input_ids.shape[0]} prompts")
    length = int(batch.lengths[0])
    p = _position(position, length)
    ids = resolve_tokens(model, token)
    layout = _layout(model)
    n_heads = _n_heads(model)

    kind, layer = parse_site(site, n_layers)
    if kind == "embed":
        layers, mlps = [], []
    elif kind in ("attn_out", "mlp_out"):
        layers, mlps = ([layer] if kind == "attn_out" else []), ([layer] if kind == "mlp_out" else [])
    else:
        layers = list(range(int(layer) + 1))  # type: ignore[arg-type]
        mlps = layers if kind == "resid_out" else layers[:-1]
    where = _in_trace if model.source.remote else _here
    res = where(model, decoder, layout, batch, site, p, layers, mlps, ids, n_heads)
    names, meta, contrib, consts, ids, cell = res["names"], res["meta"], res["contrib"], res["consts"], res["ids"], res["cell"]
    resid_error = float(res["resid_error"])

    def one(x: torch.Tensor) -> torch.Tensor:
        return x[..., 0] - x[..., 1] if len(ids) == 2 else x[..., 0]

    values = one(contrib).numpy()
    rows = [(n, l, hd, k, float(x)) for n, (l, hd, k), x in zip(names, meta, values)]
    rows += [(n, -1, -1, "remainder", float(one(x))) for n, x in consts]
    df = pd.DataFrame(rows, columns=COLUMNS)
    df["layer"] = df["layer"].astype(np.int64)
    df["head"] = df["head"].astype(np.int64)
    logit = float(cell[0] - cell[1]) if len(ids) == 2 else float(cell[0])
    total = float(np.sum(df["contribution"].to_numpy(), dtype=np.float64))
    df.attrs.update(
        logit=logit, sum=total, error=total - logit, resid_error=resid_error, token_ids=list(ids),
        tokens=[model.tokens.decode(i) for i in ids], kind="logit_diff" if len(ids) == 2 else "logit", site=site, position=p,
        prompt=batch.prompts[0] if batch.prompts else None, lens=decoder.name, model=model.name, n_heads=n_heads, n_layers=n_layers,
    )
    return df


def as_data(df: pd.DataFrame, top: int = 20) -> dict[str, Any]:
    """An attribution as plain, self-describing data (what the widget's ``attribution`` reply
    carries; see ``docs/wire.md``): every component row (``names``, ``kinds``, ``layers``,
    ``heads``, ``values``), the ``top`` largest by |value| (``bars``), the layer × head grid
    (``heads.values`` float32 ``[layers, n_heads]``, NaN where a layer has no heads in the cell),
    the remainder rows apart, and the totals. ``sum(values) + sum(remainder values) == sum``."""
    if not set(COLUMNS) <= set(df.columns):
        raise ValueError(f"not an attribution DataFrame (columns {COLUMNS} expected)")
    a = df.attrs
    parts = df[df["kind"] != "remainder"]
    rem = df[df["kind"] == "remainder"]
    values = parts["contribution"].to_numpy(np.float64)
    order = np.argsort(-np.abs(values), kind="stable")[: max(0, int(top))]
    n_heads = int(a.get("n_heads", int(parts["head"].max()) + 1 if len(parts) else 0))
    head_rows = parts[parts["kind"] == "head"]
    layers = sorted(set(int(x) for x in parts["layer"]) - {-1})
    grid = np.full((len(layers), n_heads), np.nan, dtype=np.float32)
    where = {l: i for i, l in enumerate(layers)}
    for l, hd, x in zip(head_rows["layer"], head_rows["head"], head_rows["contribution"]):
        grid[where[int(l)], int(hd)] = x
    return {
        "kind": a.get("kind", "logit"),
        "token_ids": [int(i) for i in a.get("token_ids", [])],
        "site_name": a.get("site"),
        "position": a.get("position"),
        "lens_name": a.get("lens"),
        "logit": float(a["logit"]) if "logit" in a else None,
        "sum": float(np.sum(df["contribution"].to_numpy(np.float64))),
        "error": float(a["error"]) if "error" in a else None,
        "resid_error": float(a["resid_error"]) if "resid_error" in a else None,
        "names": [str(x) for x in parts["component"]],
        "kinds": [str(x) for x in parts["kind"]],
        "layers": [int(x) for x in parts["layer"]],
        "heads_of_rows": [int(x) for x in parts["head"]],
        "values": [float(x) for x in values],
        "bars": {
            "names": [str(parts["component"].iloc[i]) for i in order],
            "kinds": [str(parts["kind"].iloc[i]) for i in order],
            "values": [float(values[i]) for i in order],
        },
        "heads": {"values": grid, "layers": layers, "n_heads": n_heads},
        "remainder": [{"name": str(n), "layer": int(l), "value": float(x)} for n, l, x in zip(rem["component"], rem["layer"], rem["contribution"])],
    }
