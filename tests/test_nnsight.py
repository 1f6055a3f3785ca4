"""nnsight as an activation source: locally and with remote="local" (nnsight's simulation of NDIF,
the request serialised exactly as for the server), the lens runs inside the trace and equals
the hook path. NDIF itself is not reachable from CI: remote=True is tested for its errors."""

from __future__ import annotations

import contextlib
import importlib.abc
import sys
import warnings

import numpy as np
import pytest
import torch

import nnsight  # a missing nnsight fails these tests, it does not skip them
from nnsight import NNsightDeprecationWarning

from lens_widget import HookedModel, LogitLens
from lens_widget.decoders import Decoder
from lens_widget.sources import RemoteActivations
from lens_widget.sources.nnsight import NDIFError, remote_error
from zoo import CONFIGS, tiny

PROMPTS = ["Hello world, this is", "ab", "The cat sat"]  # batched with right padding
ARCHS = ["llama", "gpt2", "opt", "gemma2", "gpt_neox", "falcon", "qwen3", "llama_untied_bias"]
EXACT = ("topk_ids", "next_rank", "tracked_rank", "tracked_ids", "next_ids", "positions", "nonfinite")


class _Blocked(importlib.abc.MetaPathFinder):
    def __init__(self, roots: set[str]):
        self.roots = roots

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.roots:
            raise ModuleNotFoundError(f"No module named {name!r} (not on the NDIF server)", name=name)
        return None


@contextlib.contextmanager
def absent_on_server(*roots: str):
    """remote="local" hides the client's non-installed modules while it deserialises; NDIF has no
    lens_widget at all, so hide and block it too: what is not shipped by value then fails here."""
    from nnsight.intervention.backends import local as L

    hide0, restore0 = L.LocalSimulationBackend._hide_local_modules, L.LocalSimulationBackend._restore
    blocker = _Blocked(set(roots))

    def hide(self):
        hidden = hide0(self)
        for name in list(sys.modules):
            if name.split(".")[0] in blocker.roots:
                hidden["modules"][name] = sys.modules.pop(name)
        sys.meta_path.insert(0, blocker)
        return hidden

    def restore(self, hidden):
        if blocker in sys.meta_path:
            sys.meta_path.remove(blocker)
        restore0(self, hidden)

    L.LocalSimulationBackend._hide_local_modules, L.LocalSimulationBackend._restore = hide, restore
    try:
        yield
    finally:
        L.LocalSimulationBackend._hide_local_modules, L.LocalSimulationBackend._restore = hide0, restore0


@pytest.fixture(autouse=True)
def no_nnsight_deprecation():
    """Nothing in these tests (lens_widget's traces, requests, errors) uses what nnsight deprecates."""
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        yield
    bad = [f"{w.filename}:{w.lineno}: {w.message}" for w in seen if issubclass(w.category, NNsightDeprecationWarning)]
    assert not bad, bad


def language_model(hm: HookedModel):
    """nnsight's model of ``hm``, as nnsight 0.8 wants it built (``LanguageModel`` is deprecated)."""
    return nnsight.TransformersModel(hm.model, tokenizer=hm.tokenizer, task="text-generation")


def assert_same(r, r0, kl_tol=1e-4):
    for key in EXACT:
        np.testing.assert_array_equal(getattr(r, key), getattr(r0, key), err_msg=key)
    assert r.sites == r0.sites
    np.testing.assert_allclose(r.kl, r0.kl, atol=kl_tol, equal_nan=True)
    for key in ("topk_probs", "topk_logits", "entropy", "next_prob", "tracked_prob"):
        np.testing.assert_allclose(getattr(r, key), getattr(r0, key), atol=1e-4, rtol=1e-4, equal_nan=True, err_msg=key)


@pytest.mark.parametrize("arch", ARCHS)
def test_nnsight_local_and_remote_local_equal_the_hook_path(arch):
    hm = tiny(arch)
    kw = dict(sites="all", track=["a", "e"], track_top=2, progress=False)
    r0 = LogitLens(hm, compile="never").run(PROMPTS, **kw)
    lm = language_model(hm)
    local = LogitLens(HookedModel.from_nnsight(lm), compile="never").run(PROMPTS, **kw)
    assert_same(local, r0, kl_tol=0)  # the engine's own reduction, inside a local trace: identical
    with absent_on_server("lens_widget"):
        remote = LogitLens(HookedModel.from_nnsight(lm, remote="local"), compile="never").run(PROMPTS, **kw)
    assert_same(remote, r0)


def test_a_deprecated_language_model_still_works():
    """nnsight's LanguageModel (deprecated in 0.8, still what most notebooks build) gives the same grid."""
    hm = tiny("llama")
    with pytest.warns(NNsightDeprecationWarning, match="TransformersModel"):
        lm = nnsight.LanguageModel(hm.model, tokenizer=hm.tokenizer)
    kw = dict(track=["a"], progress=False)
    assert_same(LogitLens(HookedModel.from_nnsight(lm), compile="never").run(PROMPTS, **kw), LogitLens(hm, compile="never").run(PROMPTS, **kw), kl_tol=0)


@pytest.mark.slow
def test_the_embedded_model_through_nnsight(smollm):
    prompts = ["The capital of France is", "Hi"]
    r0 = LogitLens(smollm, compile="never").run(prompts, track=[" Paris"], progress=False)
    lm = language_model(smollm)
    for mode in (False, "local"):
        r = LogitLens(HookedModel.from_nnsight(lm, remote=mode), compile="never").run(prompts, track=[" Paris"], progress=False)
        assert_same(r, r0)


def test_widget_requests_go_through_the_remote_source():
    from lens_widget.widget import LensWidget

    hm = tiny("llama")
    w0 = LensWidget(hm, "Hello world", progress=False)
    w = LensWidget(HookedModel.from_nnsight(language_model(hm), remote="local"), "Hello world", progress=False)
    assert isinstance(w.activations, RemoteActivations)  # no activations came back: only the cells
    a, b = w.cell_detail(2, 3, k=7, token_ids=["a", "q"]), w0.cell_detail(2, 3, k=7, token_ids=["a", "q"])
    np.testing.assert_array_equal(a["top_ids"], b["top_ids"])
    assert [s["rank"] for s in a["token_stats"]] == [s["rank"] for s in b["token_stats"]]
    assert a["next_rank"] == b["next_rank"]
    np.testing.assert_allclose(a["top_probs"], b["top_probs"], atol=1e-6)
    ta, tb = w.trajectory(4, ["a", "b"]), w0.trajectory(4, ["a", "b"])
    np.testing.assert_array_equal(ta["ranks"], tb["ranks"])
    np.testing.assert_allclose(ta["probs"], tb["probs"], atol=1e-6)
    # bad input: a clear error, and the widget keeps working
    with pytest.raises(Exception, match="empty"):
        w.set_prompt("")
    assert w.prompt == "Hello world"
    w.set_prompt("The cat")
    assert w.prompt == "The cat" and len(w.cell_detail(0, 0)["top_ids"]) == 50


def test_unknown_site_is_a_clear_error():
    hn = HookedModel.from_nnsight(language_model(tiny("llama")), remote="local")
    with pytest.raises(IndexError, match="layer 99 does not exist"):
        LogitLens(hn).run("Hello", sites=["resid_out_99"], progress=False)
    with pytest.raises(KeyError, match="unknown site"):
        LogitLens(hn).run("Hello", sites=["resid_post_1"], progress=False)
    with pytest.raises(Exception, match="empty"):
        LogitLens(hn).run("", progress=False)
    assert LogitLens(hn).run("Hello", progress=False).n_sites == 4  # still fine


def test_remote_true_without_an_api_key_names_both_places(monkeypatch):
    monkeypatch.delenv("NDIF_API_KEY", raising=False)
    monkeypatch.setattr(nnsight.CONFIG.API, "APIKEY", None)
    hn = HookedModel.from_nnsight(language_model(tiny("llama")), remote=True)
    with pytest.raises(NDIFError, match=r"(?s)CONFIG\.API\.APIKEY.*NDIF_API_KEY"):
        LogitLens(hn).run("Hello", progress=False)


def test_remote_true_needs_a_hub_repo_id(monkeypatch):
    monkeypatch.setenv("NDIF_API_KEY", "not-a-real-key")
    hn = HookedModel.from_nnsight(language_model(tiny("llama")), remote=True)
    with pytest.raises(NDIFError, match="repo id"):
        LogitLens(hn).run("Hello", progress=False)


def test_remote_errors_are_explained():
    from nnsight.intervention.backends.remote import RemoteError

    class LM:
        repo_id = "meta-llama/Llama-3.1-70B"

    assert "does not host" in str(remote_error(RemoteError("Model meta-llama/Llama-3.1-70B is not running"), LM()))
    assert "could not reach NDIF" in str(remote_error(OSError("[Errno -2] Name or service not known"), LM()))
    assert "API key" in str(remote_error(RemoteError("401: invalid api key"), LM()))


def test_bad_remote_mode():
    with pytest.raises(ValueError, match="remote must be"):
        HookedModel.from_nnsight(language_model(tiny("llama")), remote="ndif")
    with pytest.raises(TypeError, match="TransformersModel"):
        HookedModel.from_nnsight(object())


def test_a_remote_local_trace_leaves_typing_as_it_was():
    """nnsight's local simulation re-patches ``typing`` (a second typing_extensions); the source
    puts it back, so a later first torch.compile in the process still works."""
    import typing

    hm = tiny("llama")
    before = dict(vars(typing))
    LogitLens(HookedModel.from_nnsight(language_model(hm), remote="local"), compile="never").run("Hello", progress=False)
    changed = [name for name, value in before.items() if vars(typing).get(name) is not value]
    assert changed == []


def test_a_lens_with_weights_of_its_own_is_refused_next_to_a_remote_model():
    """Only the plain logit lens runs inside a remote trace: a tuned (or any translating) lens
    is refused by name, alone or among several lenses, never silently replaced by the logit lens."""
    from zoo import AffineLens

    nn_hm = HookedModel.from_nnsight(language_model(tiny("llama")), remote="local")
    assert Decoder(nn_hm).portable and not AffineLens(nn_hm).portable
    with pytest.raises(ValueError, match="only the plain logit lens"):
        LogitLens(nn_hm, decoder=AffineLens(nn_hm)).run("Hello", progress=False)
    with pytest.raises(ValueError, match="only the plain logit lens"):
        LogitLens(nn_hm).run("Hello", progress=False, decoders={"logit": None, "tuned": AffineLens(nn_hm)})


# -- attribution, patching and the sweep next to a remote model -------------------------------------
ATTR_CELLS = [("resid_out_2", 3, None), ("resid_out_1", -1, ("a", "e")), ("embed", 2, None), ("attn_out_1", 4, "a"), ("mlp_out_0", 1, None)]


@pytest.mark.parametrize("arch", sorted(CONFIGS))
def test_attribution_runs_in_the_remote_trace_and_equals_the_hook_path(arch, monkeypatch):
    """remote='local' (the request serialised as for NDIF, lens_widget absent on the 'server'):
    the same rows as the local hooks, within 1e-4, and what came back is the table only."""
    from lens_widget.sources.nnsight import NNsightSource

    came_back = []
    real = NNsightSource._in_trace

    def spy(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        came_back.append(out)
        return out

    monkeypatch.setattr(NNsightSource, "_in_trace", spy)
    hm = tiny(arch)
    hn = HookedModel.from_nnsight(language_model(hm), remote="local")
    d_model = hm.model.config.hidden_size
    for site, pos, tok in ATTR_CELLS:
        if site.startswith(("attn_out", "mlp_out")) and site not in hm.site_names("all"):
            continue
        d0 = LogitLens(hm, compile="never").attribute("Hello world", site, pos, tok)
        with absent_on_server("lens_widget"):
            d1 = LogitLens(hn, compile="never").attribute("Hello world", site, pos, tok)
        for col in ("component", "layer", "head", "kind"):
            assert list(d1[col]) == list(d0[col]), (site, col)
        np.testing.assert_allclose(d1["contribution"].to_numpy(), d0["contribution"].to_numpy(), atol=1e-4, rtol=0, err_msg=site)
        assert (d1["kind"] == "remainder").sum() == (d0["kind"] == "remainder").sum()
        assert abs(d1.attrs["error"]) < 1e-4 and d1.attrs["token_ids"] == d0.attrs["token_ids"]
        assert d1.attrs["logit"] == pytest.approx(d0.attrs["logit"], abs=1e-5)
    assert len(came_back) == len([c for c in ATTR_CELLS if not c[0].startswith(("attn_out", "mlp_out")) or c[0] in hm.site_names("all")])
    for res in came_back:  # the table, not the activations: no tensor as wide as the residual
        assert set(res) == {"names", "meta", "contrib", "consts", "ids", "cell", "resid_error"}
        assert res["contrib"].shape == (len(res["names"]), len(res["ids"])) and res["contrib"].shape[1] < d_model


def test_attribution_and_patch_with_a_lens_that_cannot_travel_name_it():
    from zoo import AffineLens

    hn = HookedModel.from_nnsight(language_model(tiny("llama")), remote="local")
    with pytest.raises(ValueError, match=r"tuned lens.*only the plain logit lens"):
        LogitLens(hn, decoder=AffineLens(hn)).attribute("Hello", "resid_out_1", -1)
    with pytest.raises(ValueError, match=r"tuned lens.*only the plain logit lens"):
        LogitLens(hn, decoder=AffineLens(hn)).patch("The cat", "The dog", "resid_out_1", 4)
    with pytest.raises(ValueError, match=r"tuned lens.*only the plain logit lens"):
        LogitLens(hn).compare("The cat", decoder_b=AffineLens(hn))
    assert len(LogitLens(hn).attribute("Hello", "resid_out_1", -1)) > 0  # the logit lens still does


@contextlib.contextmanager
def counted_jobs():
    """Count the requests the remote path sends: with remote="local" every request to NDIF is one
    call of nnsight's LocalSimulationBackend (a trace, or a session of several traces)."""
    from nnsight.intervention.backends import local as L

    jobs: list[str] = []
    real = L.LocalSimulationBackend.__call__

    def count(self, tracer):
        jobs.append(type(tracer).__name__)
        return real(self, tracer)

    L.LocalSimulationBackend.__call__ = count
    try:
        yield jobs
    finally:
        L.LocalSimulationBackend.__call__ = real


def assert_same_grid(r, r0, atol=1e-5):
    for key in EXACT:
        np.testing.assert_array_equal(getattr(r, key), getattr(r0, key), err_msg=key)
    for key in ("topk_probs", "topk_logits", "entropy", "next_prob", "tracked_prob", "kl"):
        np.testing.assert_allclose(getattr(r, key), getattr(r0, key), atol=atol, rtol=0, equal_nan=True, err_msg=key)


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2", "opt", "falcon"])
def test_patch_on_a_remote_model_is_one_job_and_equals_the_hook_path(arch):
    """The source's residual is recorded and patched in one session: one request, and the
    patched grid, the clean grid and their JS equal the hook path's (ids and ranks exactly)."""
    hm = tiny(arch)
    hn = HookedModel.from_nnsight(language_model(hm), remote="local")
    for site, pos, tpos in (("resid_out_1", 4, None), ("embed", 5, 6), ("resid_out_2", 8, 6)):
        p0 = LogitLens(hm, compile="never").patch("The cat sat", "The dog ran", site, pos, tpos, track=["a"])
        with counted_jobs() as jobs, absent_on_server("lens_widget"):
            p1 = LogitLens(hn, compile="never").patch("The cat sat", "The dog ran", site, pos, tpos, track=["a"])
        assert len(jobs) == 1, jobs
        assert_same_grid(p1.patched, p0.patched)
        assert_same_grid(p1.clean, p0.clean)
        np.testing.assert_allclose(p1.comparison.js, p0.comparison.js, atol=1e-5, rtol=0, equal_nan=True)
        assert float(np.nanmax(p1.comparison.js)) > 1e-3  # the patch changed something: the test has teeth
        assert p1.target_position == p0.target_position and p1.site == p0.site
    v = torch.randn(hm.model.config.hidden_size, generator=torch.Generator().manual_seed(3))
    with counted_jobs() as jobs:
        got = LogitLens(hn, compile="never").patch(None, "The dog ran", "resid_out_0", 2, value=v)
    assert len(jobs) == 1
    assert_same_grid(got.patched, LogitLens(hm, compile="never").patch(None, "The dog ran", "resid_out_0", 2, value=v).patched)
    # zero ablation is one request too; mean ablation records the target's site first: two
    for ablation, requests in (("zero", 1), ("mean", 2)):
        with counted_jobs() as jobs:
            got = LogitLens(hn, compile="never").patch(None, "The dog ran", "resid_out_1", 2, ablation=ablation)
        assert len(jobs) == requests == got.meta["forwards"], (ablation, jobs)
        assert_same_grid(got.patched, LogitLens(hm, compile="never").patch(None, "The dog ran", "resid_out_1", 2, ablation=ablation).patched)


def test_the_sweep_on_a_remote_model_is_one_job_and_equals_the_hook_path(monkeypatch):
    """Clean logits, corrupted logits and every batched patched forward run as one session (one
    request); the clean residuals stay next to the model, and only two logits per forward row
    come back."""
    from lens_widget.sources.nnsight import NNsightSource

    hm = tiny("llama")
    hn = HookedModel.from_nnsight(language_model(hm), remote="local")
    clean, corrupt, pair = "The cat sat", "The dog sat", ("a", "e")
    s0 = LogitLens(hm, compile="never").patch_sweep(clean, corrupt, pair, batch_size=7, progress=False)
    came_back = []
    real = NNsightSource._session

    def spy(self, traces):
        out = real(self, traces)
        came_back.append(out)
        return out

    monkeypatch.setattr(NNsightSource, "_session", spy)
    with counted_jobs() as jobs, absent_on_server("lens_widget"):
        s1 = LogitLens(hn, compile="never").patch_sweep(clean, corrupt, pair, batch_size=7, progress=False)
    assert len(jobs) == 1 and len(came_back) == 1, jobs
    n_patches = len(s0.sites) * len(s0.clean_tokens)
    # remote: refs, clean, corrupt, the batches; here the clean run records the refs
    assert s1.meta["forwards"] == s0.meta["forwards"] + 1 == 3 + -(-n_patches // 7)
    assert s1.meta["requests"] == 1 and s0.meta["requests"] == s0.meta["forwards"]
    assert [set(r) for r in came_back[0]] == [{"logits"}] * (2 + -(-n_patches // 7))  # no activations
    assert sum(r["logits"].numel() for r in came_back[0]) == 2 * (2 + n_patches)
    assert s1.sites == s0.sites and s1.pair == s0.pair
    np.testing.assert_allclose(s1.patched_ld, s0.patched_ld, atol=1e-5, rtol=0)
    np.testing.assert_allclose(s1.recovery, s0.recovery, atol=1e-5, rtol=0)
    assert s1.clean_ld == pytest.approx(s0.clean_ld, abs=1e-5) and s1.corrupt_ld == pytest.approx(s0.corrupt_ld, abs=1e-5)
    assert np.nanmax(np.abs(s0.recovery)) > 0.5  # something recovers: the comparison is not of two empty grids


@pytest.mark.slow
def test_ioi_sweep_on_the_embedded_model_through_a_remote_request(smollm):
    clean = "When Mary and John went to the store, John gave a drink to"
    corrupt = "When Mary and John went to the store, Mary gave a drink to"
    s0 = LogitLens(smollm, compile="never").patch_sweep(clean, corrupt, (" Mary", " John"), progress=False)
    with counted_jobs() as jobs:
        s1 = LogitLens(HookedModel.from_nnsight(language_model(smollm), remote="local"), compile="never").patch_sweep(
            clean, corrupt, (" Mary", " John"), progress=False)
    print("IOI sweep, hooks:", s0.meta, "remote='local':", s1.meta)
    assert len(jobs) == 1
    np.testing.assert_allclose(s1.patched_ld, s0.patched_ld, atol=1e-4, rtol=0)


@pytest.mark.slow
def test_attribution_and_patch_on_the_embedded_model_through_a_remote_request(smollm):
    prompt, pair = "The capital of France is", (" Paris", " London")
    hn = HookedModel.from_nnsight(language_model(smollm), remote="local")
    for site in ("resid_out_29", "resid_out_12"):
        d0 = LogitLens(smollm, compile="never").attribute(prompt, site, -1, pair)
        with counted_jobs() as jobs:
            d1 = LogitLens(hn, compile="never").attribute(prompt, site, -1, pair)
        assert len(jobs) == 1 and list(d1["component"]) == list(d0["component"])
        np.testing.assert_allclose(d1["contribution"].to_numpy(), d0["contribution"].to_numpy(), atol=1e-4, rtol=0)
        assert abs(d1.attrs["error"]) < 1e-4
    src = "When Mary and John went to the store, Mary gave a drink to"
    tgt = "When Mary and John went to the store, John gave a drink to"
    p0 = LogitLens(smollm, compile="never").patch(src, tgt, "resid_out_8", 9)
    with counted_jobs() as jobs:
        p1 = LogitLens(hn, compile="never").patch(src, tgt, "resid_out_8", 9)
    assert len(jobs) == 1
    assert_same_grid(p1.patched, p0.patched)
    np.testing.assert_allclose(p1.comparison.js, p0.comparison.js, atol=1e-5, rtol=0, equal_nan=True)
