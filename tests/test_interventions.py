"""The intervention seam: a site's value replaced (or added to) during the forward, on hooks,
offload and nnsight alike; and the final norm as an affine map with a cell's scale frozen."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from lens_widget.decoders import Decoder
from lens_widget.engine import LogitLens
from lens_widget.sites import select_matrix
from lens_widget.sources import Intervention
from zoo import tiny

CLEAN = "The cat sat on the mat"
OTHER = "A dog ran in the park!"  # the same length in characters: the char tokenizer aligns them
ARCHS = ["llama", "gpt2", "gemma2", "opt", "gpt_neox", "bloom", "falcon", "qwen3", "phi3", "olmo2", "gptj", "mistral"]


def record_all(hm, prompt, interventions=()):
    batch = hm.encode(prompt)
    n = int(batch.lengths[0])
    select, _ = select_matrix([list(range(n))])
    return hm.record(batch, hm.default_sites(), select, interventions=interventions).acts


def hand_patched_grid(hm, prompt, layer, positions, value, decoder=None):
    """The lens of ``prompt`` with block ``layer``'s output at ``positions`` replaced by ``value``
    by a forward hook written here, independently of the library's seam."""
    block = hm.blocks[layer]

    def hook(_m, _args, output):
        first = output[0] if isinstance(output, tuple) else output
        first = first.clone()
        first[0, positions] = value
        return (first, *output[1:]) if isinstance(output, tuple) else first

    handle = block.register_forward_hook(hook)
    try:
        return LogitLens(hm, compile="never", decoder=decoder).run(prompt, track=[7], progress=False)
    finally:
        handle.remove()


def assert_grids_equal(a, b, exact_values=True):
    for key in ("topk_ids", "next_rank", "tracked_rank"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)
    for key in ("topk_probs", "entropy", "kl", "tracked_prob"):
        np.testing.assert_allclose(getattr(a, key), getattr(b, key), atol=0 if exact_values else 1e-6, rtol=0 if exact_values else 1e-6, err_msg=key)


@pytest.mark.parametrize("arch", ARCHS)
def test_replacing_a_site_with_itself_changes_nothing(arch):
    hm = tiny(arch)
    lens = LogitLens(hm, compile="never")
    clean = lens.run(CLEAN, track=[7], progress=False)
    acts = record_all(hm, CLEAN)
    L = hm.num_layers // 2
    same = [Intervention(f"resid_out_{L}", [1, 3], acts[f"resid_out_{L}"][0, [1, 3]]), Intervention("embed", [0], acts["embed"][0, [0]])]
    assert_grids_equal(lens.run(CLEAN, track=[7], progress=False, interventions=same), clean)
    zero_add = [Intervention(f"resid_out_{L}", [2], torch.zeros(hm.model.config.hidden_size), mode="add")]
    assert_grids_equal(lens.run(CLEAN, track=[7], progress=False, interventions=zero_add), clean)


@pytest.mark.parametrize("arch", ARCHS)
def test_patching_another_prompts_value_equals_a_hand_written_hook(arch):
    hm = tiny(arch)
    L, pos = hm.num_layers // 2, [2, 4]
    donor = record_all(hm, OTHER)[f"resid_out_{L}"][0, pos]
    patched = LogitLens(hm, compile="never").run(CLEAN, track=[7], progress=False, interventions=[Intervention(f"resid_out_{L}", pos, donor)])
    by_hand = hand_patched_grid(hm, CLEAN, L, pos, donor)
    assert_grids_equal(patched, by_hand)
    clean = LogitLens(hm, compile="never").run(CLEAN, track=[7], progress=False)
    # the patch matters downstream, and cells before it (earlier sites, earlier positions) do not move
    assert not np.array_equal(patched.topk_probs, clean.topk_probs)
    s = patched.sites.index(f"resid_out_{L}")
    np.testing.assert_array_equal(patched.topk_probs[:, :s], clean.topk_probs[:, :s])
    np.testing.assert_array_equal(patched.topk_probs[:, :, : pos[0]], clean.topk_probs[:, :, : pos[0]])


def test_interventions_per_prompt_rows_and_adding():
    hm = tiny("llama")
    d = hm.model.config.hidden_size
    v = torch.randn(d, generator=torch.Generator().manual_seed(0))
    acts = record_all(hm, CLEAN)
    added = record_all(hm, CLEAN, [Intervention("resid_out_0", [3], v, mode="add")])
    torch.testing.assert_close(added["resid_out_0"][0, 3], acts["resid_out_0"][0, 3] + v)
    torch.testing.assert_close(added["resid_out_0"][0, :3], acts["resid_out_0"][0, :3])
    # a batch of two prompts, the intervention on the second only
    batch = hm.encode([CLEAN, CLEAN])
    select, _ = select_matrix([list(range(int(batch.lengths[0])))] * 2)
    two = hm.record(batch, ["resid_out_1"], select, interventions=[Intervention("resid_out_0", [3], v, rows=[1])]).acts["resid_out_1"]
    torch.testing.assert_close(two[0], acts["resid_out_1"][0], atol=1e-6, rtol=1e-6)
    assert not torch.allclose(two[1], acts["resid_out_1"][0])


def test_bad_interventions_get_clear_errors():
    hm = tiny("llama")
    with pytest.raises(ValueError, match="mode"):
        Intervention("resid_out_0", [0], torch.zeros(4), mode="swap")
    with pytest.raises(KeyError, match="cannot intervene"):
        record_all(hm, CLEAN, [Intervention("resid_mid_0", [0], torch.zeros(hm.model.config.hidden_size))])
    with pytest.raises(IndexError, match="positions"):
        record_all(hm, "ab", [Intervention("resid_out_0", [5], torch.zeros(hm.model.config.hidden_size))])
    with pytest.raises(ValueError, match="does not fit"):
        record_all(hm, CLEAN, [Intervention("resid_out_0", [0, 1], torch.zeros(3, hm.model.config.hidden_size))])


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_the_intervention_seam_on_nnsight_equals_hooks(arch):
    import nnsight

    from lens_widget.hooked import HookedModel

    hm = tiny(arch)
    L, pos = 1, [2, 4]
    donor = record_all(hm, OTHER)[f"resid_out_{L}"][0, pos]
    iv = [Intervention(f"resid_out_{L}", pos, donor)]
    hooks = LogitLens(hm, compile="never").run(CLEAN, track=[7], progress=False, interventions=iv)
    lm = nnsight.TransformersModel(copy.deepcopy(hm.model), tokenizer=hm.tokenizer, task="text-generation")
    for remote in (False, "local"):
        nn_hm = HookedModel.from_nnsight(lm, remote=remote)
        got = LogitLens(nn_hm, compile="never").run(CLEAN, track=[7], progress=False, interventions=iv)
        assert_grids_equal(got, hooks, exact_values=False)


@pytest.mark.parametrize("arch", ARCHS)
def test_norm_parts_reproduce_the_final_norm(arch):
    """norm(h) = gain * centre(h) / scale + shift with the row's scale frozen, for every registry norm."""
    hm = tiny(arch)
    dec = Decoder(hm)
    h = record_all(hm, CLEAN)[hm.final_site][0]
    parts = dec.norm_parts(h, hm.final_site)
    with torch.no_grad():
        want = dec.norm(h.to(dec.in_dtype)).float() if dec.norm is not None else h
    torch.testing.assert_close(parts.apply(h.float()), want, atol=2e-5, rtol=2e-5)
    assert parts.scale.shape == (h.shape[0], 1) and bool((parts.scale > 0).all())


def test_an_activation_ref_value_is_the_vector_it_names_recorded_once_per_prompt():
    """An Intervention whose value is an ActivationRef (another prompt's site at a position) is
    the same as one given that vector; a local source records each referenced prompt once for
    all the forwards asked together (token_logits)."""
    from lens_widget.sources import ActivationRef, Forward

    hm = tiny("llama")
    src = hm.encode(OTHER)
    vec = record_all(hm, OTHER)["resid_out_1"][0, 3]
    ref = ActivationRef(src, "resid_out_1", 3)
    sel = torch.arange(len(CLEAN))[None]
    by_ref = hm.record(hm.encode(CLEAN), ["resid_out_2"], sel, want_logits=True, interventions=[Intervention("resid_out_1", [5], ref)])
    by_vec = hm.record(hm.encode(CLEAN), ["resid_out_2"], sel, want_logits=True, interventions=[Intervention("resid_out_1", [5], vec)])
    torch.testing.assert_close(by_ref.acts["resid_out_2"], by_vec.acts["resid_out_2"], rtol=0, atol=0)
    torch.testing.assert_close(by_ref.logits, by_vec.logits, rtol=0, atol=0)
    assert not torch.equal(by_ref.logits, hm.record(hm.encode(CLEAN), [], sel, want_logits=True).logits)  # it did change something

    calls = []
    real = type(hm.source).record

    def counting(self, batch, sites, select, **kw):
        calls.append(list(sites))
        return real(self, batch, sites, select, **kw)

    type(hm.source).record, saved = counting, real
    try:
        x = hm.encode(CLEAN)
        fw = [Forward(x, torch.tensor([[len(CLEAN) - 1]]), [Intervention(s, [t], ActivationRef(src, s, t))]) for s, t in
              (("resid_out_0", 1), ("resid_out_1", 3), ("resid_out_1", 4))]
        out = hm.source.token_logits(fw, torch.tensor([7, 9]))
    finally:
        type(hm.source).record = saved
    assert len(calls) == 1 + len(fw) and sorted(calls[0]) == ["resid_out_0", "resid_out_1"]  # the refs: one forward
    # the referenced prompt's own plain forward among them records its refs as it runs
    calls.clear()
    type(hm.source).record = counting
    try:
        fw2 = [Forward(src, torch.tensor([[len(OTHER) - 1]])), *fw]
        out2 = hm.source.token_logits(fw2, torch.tensor([7, 9]))
    finally:
        type(hm.source).record = saved
    assert len(calls) == len(fw2) and sorted(calls[0]) == ["resid_out_0", "resid_out_1"]
    alone = hm.record(src, [], torch.tensor([[len(OTHER) - 1]]), want_logits=True).logits
    torch.testing.assert_close(out2[0], alone[..., [7, 9]], rtol=1e-6, atol=1e-6)
    for a, b in zip(out2[1:], out):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    want = hm.record(x, [], torch.tensor([[len(CLEAN) - 1]]), want_logits=True, interventions=[Intervention("resid_out_1", [4], record_all(hm, OTHER)["resid_out_1"][0, 4])]).logits
    torch.testing.assert_close(out[2], want[..., [7, 9]], rtol=0, atol=0)
    with pytest.raises(TypeError, match="applied by its source"):
        Intervention("resid_out_1", [5], ref).apply(torch.zeros(1, 8, 32))
