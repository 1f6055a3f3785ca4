"""The tuned lens: the logit lens at zero, exact against a naive float64 computation at every site
and through every engine call, tuned-lens's file format both ways (against tuned-lens's own
code), and clear errors for bad files and unsupported sites."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from lens_widget import LogitLens, UnsupportedSiteError
from lens_widget.arch import get_path
from lens_widget.sites import select_matrix
from lens_widget.tuned_lens import LensFileError, TunedLens
from fakes import CodePayload
from reference import rank_band
from zoo import CONFIGS, tiny

ARCHS = sorted(CONFIGS)
PROMPT = "The capital of France is Paris."
TRACK = [5, 17, 40]


def random_lens(hm, seed: int = 1, scale: float = 0.5) -> TunedLens:
    lens = TunedLens(hm)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in lens.translators:
            t.weight.copy_(torch.randn(t.weight.shape, generator=g) * scale / t.weight.shape[0] ** 0.5)
            t.bias.copy_(torch.randn(t.bias.shape, generator=g) * scale)
    return lens


def naive_tuned(hm, lens: TunedLens, prompt: str) -> np.ndarray:
    """float64 logits [sites, T, V]: hidden_states[i] translated by hand (float64), the model's
    own final norm module, then the unembedding (+bias, soft-cap) by hand in float64; the last
    block is the model's own logits."""
    enc = hm.tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        out = hm.model(**enc, output_hidden_states=True)
    model, arch = hm.model, hm.arch
    norm = get_path(model, arch.final_norm)
    post = None
    if arch.post_norm:
        parent, attr = arch.post_norm.rsplit(".", 1)
        post = getattr(get_path(model, parent), attr, None)
    head = model.get_output_embeddings()
    cap = getattr(model.config, "final_logit_softcapping", None)
    rows = []
    for i, h in enumerate(out.hidden_states[:-1]):
        W = lens.translators[i].weight.detach().double()
        b = lens.translators[i].bias.detach().double()
        x = h[0].double()
        y = x + x @ W.T + b
        with torch.no_grad():
            y = norm(y.float())
            y = post(y) if post is not None else y
        z = y.double() @ head.weight.detach().double().T
        if getattr(head, "bias", None) is not None:
            z = z + head.bias.detach().double()
        if cap:
            z = torch.tanh(z / cap) * cap
        rows.append(z)
    rows.append(out.logits[0].double())
    return torch.stack(rows).numpy()


# -- zero translators are the logit lens ---------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_zero_translators_equal_logit_lens(arch):
    hm = tiny(arch)
    a = LogitLens(hm, compile="never").run(PROMPT, k=5, track=TRACK, progress=False)
    b = LogitLens(hm, compile="never", decoder=TunedLens(hm)).run(PROMPT, k=5, track=TRACK, progress=False)
    assert b.lens_name == "tuned lens" and a.sites == b.sites
    np.testing.assert_array_equal(a.topk_ids, b.topk_ids)
    np.testing.assert_array_equal(a.tracked_rank, b.tracked_rank)
    np.testing.assert_array_equal(a.next_rank, b.next_rank)
    for key in ("topk_probs", "kl", "entropy", "tracked_logit"):
        np.testing.assert_allclose(getattr(a, key), getattr(b, key), atol=1e-6, rtol=1e-6)


# -- a random lens is exact at every site ------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_random_lens_run_matches_naive(arch):
    hm = tiny(arch)
    lens = random_lens(hm)
    ref = naive_tuned(hm, lens, PROMPT)
    r = LogitLens(hm, compile="never", decoder=lens).run(PROMPT, k=5, track=TRACK, progress=False)
    assert r.sites == hm.default_sites()
    logp = ref - np.logaddexp.reduce(ref, axis=-1, keepdims=True)
    p = np.exp(logp)
    for s in range(len(r.sites)):
        for t in range(ref.shape[1]):
            z = ref[s, t]
            order = np.argsort(-z, kind="stable")
            assert r.topk_ids[0, s, t, 0] == order[0] or abs(z[order[0]] - z[r.topk_ids[0, s, t, 0]]) < 1e-4
            np.testing.assert_allclose(r.topk_probs[0, s, t], p[s, t, order[:5]], atol=2e-5, rtol=1e-4)
            kl = (p[-1, t] * (logp[-1, t] - logp[s, t])).sum()
            np.testing.assert_allclose(r.kl[0, s, t], kl, atol=2e-4, rtol=1e-4)
            for m, tid in enumerate(TRACK):
                lo, hi = rank_band(z, tid)
                assert lo <= r.tracked_rank[0, s, t, m] <= hi
                np.testing.assert_allclose(r.tracked_logit[0, s, t, m], z[tid], atol=1e-4, rtol=1e-5)


def _acts(hm, prompt: str) -> dict[str, torch.Tensor]:
    batch = hm.encode(prompt)
    select, _ = select_matrix([list(range(int(batch.lengths[0])))])
    return hm.record(batch, hm.default_sites(), select).acts


@pytest.mark.parametrize("arch", ["llama", "gemma2", "opt", "gpt2"])
def test_random_lens_compute_cell_detail_trajectory_match_naive(arch):
    hm = tiny(arch)
    lens = random_lens(hm, seed=3)
    ref = naive_tuned(hm, lens, PROMPT)
    engine = LogitLens(hm, compile="never", decoder=lens)
    acts = _acts(hm, PROMPT)
    sites = hm.default_sites()
    # compute: the tutorial API, every layer and the embeddings
    out = engine.compute(acts, "resid_out_{i}", progress=False)
    out.update(engine.compute(acts, "embed", progress=False))
    for s, site in enumerate(sites):
        np.testing.assert_allclose(out[f"logit_lens_{site}"][0].double().numpy(), ref[s], atol=1e-4, rtol=1e-5)
    diff = engine.compute(acts, "resid_out_{i}", token_directions=[(5, 17)], progress=False)
    np.testing.assert_allclose(diff["logit_diff_resid_out_0"][0].numpy(), ref[1, :, 5] - ref[1, :, 17], atol=1e-4)
    # cell_detail: full-vocabulary top-k and exact ranks at every site of one position
    t = 4
    for s, site in enumerate(sites):
        d = engine.cell_detail(acts[site][0, t], site, k=7, token_ids=TRACK)
        z = ref[s, t]
        order = np.argsort(-z, kind="stable")
        np.testing.assert_allclose(d["top_logits"], z[order[:7]], atol=1e-4, rtol=1e-5)
        for st in d["token_stats"]:
            lo, hi = rank_band(z, st["id"])
            assert lo <= st["rank"] <= hi
    # trajectory: exact ranks along the column
    column = {site: acts[site][0, t] for site in sites}
    tr = engine.trajectory(column, sites, TRACK)
    for s in range(len(sites)):
        for m, tid in enumerate(TRACK):
            lo, hi = rank_band(ref[s, t], tid)
            assert lo <= tr["ranks"][s, m] <= hi
            np.testing.assert_allclose(tr["logits"][s, m], ref[s, t, tid], atol=1e-4, rtol=1e-5)
    assert engine.check_lens(PROMPT) <= 1e-4  # the last block has no translator


def test_half_precision_model_translates_in_float32():
    hm = tiny("llama")
    lens = random_lens(hm)
    h = torch.randn(3, 32).bfloat16()
    y = lens.translate(h, "resid_out_0")
    assert y.dtype == torch.bfloat16
    ref = h.float() + h.float() @ lens.translators[1].weight.T + lens.translators[1].bias
    torch.testing.assert_close(y.float(), ref, atol=0.05, rtol=0.01)
    assert lens.translators[0].weight.dtype == torch.float32


# -- sites without a translator ----------------------------------------------------------------------------
def test_sites_without_translator_are_refused():
    hm = tiny("llama")
    lens = TunedLens(hm)
    engine = LogitLens(hm, decoder=lens)
    with pytest.raises(UnsupportedSiteError, match=r"resid_mid_0.*'embed' and 'resid_out_0' … 'resid_out_2'"):
        engine.run(PROMPT, sites="all", progress=False)
    with pytest.raises(UnsupportedSiteError, match="attn_out_1"):
        engine.run(PROMPT, sites=["embed", "attn_out_1"], progress=False)
    with pytest.raises(UnsupportedSiteError, match="resid_mid / attn_out / mlp_out sites have no translator"):
        lens.logits(torch.zeros(2, 32), "mlp_out_0")
    acts = hm.extract_cache([PROMPT], extraction_config=__import__("lens_widget").ExtractionConfig(extract_mlp_out=True), progress=False)
    with pytest.raises(UnsupportedSiteError, match="mlp_out_0"):
        engine.compute(acts, "mlp_out_{i}", progress=False)
    with pytest.raises(UnsupportedSiteError):
        lens.logits(torch.zeros(2, 32), None)
    lens.check_sites(hm.default_sites())  # the classic rows all work


# -- the published format, both ways, against tuned-lens's own code ----------------------------------------
def _their_lens_class():
    # tuned-lens==0.2.0 (scripts/setup.sh installs it with --no-deps). A missing package fails
    # these tests, it does not skip them.
    from tuned_lens.nn.lenses import TunedLens as TheirTunedLens
    from tuned_lens.nn.unembed import Unembed

    return TheirTunedLens, Unembed


def _hidden(hm):
    enc = hm.tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        return hm.model(**enc, output_hidden_states=True).hidden_states


def test_their_lens_loads_here_with_same_logits(tmp_path):
    TheirTunedLens, _ = _their_lens_class()
    hm = tiny("llama")
    theirs = TheirTunedLens.from_model(hm.model)
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for t in theirs.layer_translators:
            t.weight.copy_(torch.randn(t.weight.shape, generator=g) * 0.1)
            t.bias.copy_(torch.randn(t.bias.shape, generator=g) * 0.1)
    theirs.save(tmp_path / "lens")
    ours = TunedLens.from_pretrained(tmp_path / "lens", hm)
    hs = _hidden(hm)
    worst = 0.0
    for i in range(hm.num_layers):
        site = hm.default_sites()[i]
        with torch.no_grad():
            a = theirs(hs[i][0], idx=i)
        b = ours.logits(hs[i][0], site)
        worst = max(worst, float((a - b).abs().max()))
    assert worst <= 1e-5, worst


def test_our_lens_loads_there_with_same_logits(tmp_path):
    TheirTunedLens, Unembed = _their_lens_class()
    hm = tiny("llama")
    ours = random_lens(hm, seed=5, scale=0.3)
    ours.save(tmp_path / "lens")
    cfg = json.loads((tmp_path / "lens" / "config.json").read_text())
    assert cfg["d_model"] == 32 and cfg["num_hidden_layers"] == 3 and cfg["lens_type"] == "linear_tuned_lens"
    theirs = TheirTunedLens.from_unembed_and_pretrained(Unembed(hm.model), str(tmp_path / "lens"))
    hs = _hidden(hm)
    worst = 0.0
    for i in range(hm.num_layers):
        with torch.no_grad():
            a = theirs(hs[i][0], idx=i)
        b = ours.logits(hs[i][0], hm.default_sites()[i])
        worst = max(worst, float((a - b).abs().max()))
    assert worst <= 1e-5, worst
    # and back: a save/load round trip is exact
    again = TunedLens.from_pretrained(tmp_path / "lens", hm)
    for a, b in zip(ours.translators, again.translators):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)


def test_old_config_spelling_is_read(tmp_path):
    hm = tiny("llama")
    folder = random_lens(hm).save(tmp_path / "lens")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["unemebd_hash"] = cfg.pop("unembed_hash")
    (folder / "config.json").write_text(json.dumps(cfg))
    lens = TunedLens.from_pretrained(folder, hm)
    assert lens.config["unembed_hash"] == cfg["unemebd_hash"]


# -- clear errors for bad files ------------------------------------------------------------------------------
def test_lens_for_another_model_is_refused(tmp_path):
    hm = tiny("llama")
    folder = random_lens(hm).save(tmp_path / "lens")
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(dict(cfg, d_model=64, num_hidden_layers=4)))
    with pytest.raises(LensFileError, match=r"d_model 64, 4 layers.*d_model 32, 3 layers.*another model"):
        TunedLens.from_pretrained(folder, hm)
    (folder / "config.json").write_text(json.dumps(cfg))
    state = torch.load(folder / "params.pt", weights_only=True)
    state["1.weight"] = torch.zeros(16, 16)
    torch.save(state, folder / "params.pt")
    with pytest.raises(LensFileError, match=r"1\.weight has shape \[16, 16\].*needs \[32, 32\]"):
        TunedLens.from_pretrained(folder, hm)
    del state["1.weight"]
    torch.save(state, folder / "params.pt")
    with pytest.raises(LensFileError, match=r"missing 1\.weight"):
        TunedLens.from_pretrained(folder, hm)


def test_missing_files(tmp_path):
    hm = tiny("llama")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LensFileError, match="config.json and params.pt missing"):
        TunedLens.from_pretrained(tmp_path / "empty", hm)
    folder = random_lens(hm).save(tmp_path / "lens")
    (folder / "params.pt").unlink()
    with pytest.raises(LensFileError, match="params.pt missing"):
        TunedLens.from_pretrained(folder, hm)
    with pytest.raises(LensFileError, match="not a tuned-lens folder"):
        TunedLens.from_pretrained(tmp_path / "does-not-exist", hm)


def test_corrupt_params(tmp_path):
    hm = tiny("llama")
    folder = random_lens(hm).save(tmp_path / "lens")
    (folder / "params.pt").write_bytes(b"\x80\x04 not a checkpoint" * 10)
    with pytest.raises(LensFileError, match="corrupt"):
        TunedLens.from_pretrained(folder, hm)
    data = (tmp_path / "ok.pt")
    torch.save(random_lens(hm).state_dict(), data)
    (folder / "params.pt").write_bytes(data.read_bytes()[:500])  # truncated
    with pytest.raises(LensFileError, match="corrupt"):
        TunedLens.from_pretrained(folder, hm)
    (folder / "config.json").write_text("{not json")
    with pytest.raises(LensFileError, match="config.json"):
        TunedLens.from_pretrained(folder, hm)


def test_code_carrying_params_never_runs(tmp_path):
    hm = tiny("llama")
    folder = random_lens(hm).save(tmp_path / "lens")
    marker = tmp_path / "pwned"
    state = random_lens(hm).state_dict()
    state["0.weight"] = CodePayload(marker)
    torch.save(state, folder / "params.pt")
    with pytest.raises(LensFileError, match=r"more than tensors.*refused.*weights_only=True"):
        TunedLens.from_pretrained(folder, hm)
    assert not marker.exists()


def test_published_name_offline_fails_fast(tmp_path):
    """Offline, a published lens name fails with the clear error at once: no connection is even
    attempted (every socket connect is made to raise and recorded), so nothing can wait on a network."""
    code = (
        "import socket, sys; sys.path.insert(0, 'tests')\n"
        "tried = []\n"
        "def refuse(*args, **kwargs):\n"
        "    tried.append(args[1:2] or args[:1])\n"
        "    raise OSError('the test forbids network connections')\n"
        "socket.create_connection = refuse\n"
        "socket.socket.connect = refuse\n"
        "socket.socket.connect_ex = refuse\n"
        "from zoo import tiny\n"
        "from lens_widget.tuned_lens import TunedLens, LensFileError\n"
        "m = tiny('llama')\n"
        "try:\n"
        "    TunedLens.from_pretrained('gpt2', m)\n"
        "except LensFileError as e:\n"
        "    print('ERR', e)\n"
        "print('CONNECTIONS', len(tried), tried)\n"
    )
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HOME=str(tmp_path / "hf"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=120).stdout
    assert "ERR" in out, out
    assert "lens/gpt2/ of the space AlignmentResearch/tuned-lens" in out and "offline" in out
    assert "CONNECTIONS 0 []" in out, out


# -- the low-rank shipped format ----------------------------------------------------------------------------
def test_lowrank_round_trip_and_model_check(tmp_path):
    from lens_widget.lowrank import load_lowrank, save_lowrank, truncate

    hm = tiny("llama")
    lens = random_lens(hm, seed=9)
    save_lowrank(lens, tmp_path / "lr", rank=8, extra={"command": "test"})
    loaded = load_lowrank(TunedLens, tmp_path / "lr", hm)
    want = truncate(lens, 8)
    for a, b in zip(loaded.translators, want.translators):
        torch.testing.assert_close(a.weight, b.weight, atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(a.bias, b.bias)
    assert loaded.shipped["rank"] == "8" and json.loads(loaded.shipped["extra"]) == {"command": "test"}
    # rank 8 < d = 32 against an SVD of the test's own: the top-8 singular triplets (Eckart–Young:
    # the best rank-8 approximation, off by exactly the tail of the spectrum), up to float16
    for i, (src, mine, saved) in enumerate(zip(lens.translators, want.translators, loaded.translators)):
        W = src.weight.detach().double().numpy()
        U, S, Vh = np.linalg.svd(W)
        best = (U[:, :8] * S[:8]) @ Vh[:8]
        tail = float(np.sqrt((S[8:] ** 2).sum()))
        worst = (U[:, -8:] * S[-8:]) @ Vh[-8:]  # the 8 smallest: what the check must tell apart
        assert np.abs(worst - best).max() > 20 * 2e-3 * np.abs(W).max()
        for got in (mine.weight, saved.weight):
            got = got.detach().double().numpy()
            np.testing.assert_allclose(got, best, atol=2e-3 * np.abs(W).max(), err_msg=f"translator {i}")
            assert abs(np.linalg.norm(W - got) - tail) <= 1e-2 * tail + 1e-3 * np.linalg.norm(W), (i, np.linalg.norm(W - got), tail)
    # full rank is the lens itself, up to float16
    full = truncate(lens, 32)
    torch.testing.assert_close(full.translators[1].weight, lens.translators[1].weight, atol=2e-3, rtol=2e-3)
    # same shapes, another model's unembedding: refused
    with pytest.raises(LensFileError, match="unembedding differs"):
        load_lowrank(TunedLens, tmp_path / "lr", tiny("gpt2"))
    with pytest.raises(LensFileError, match="3 layers, d_model 32"):
        load_lowrank(TunedLens, tmp_path / "lr", _other_width())
    with pytest.raises(LensFileError, match="missing"):
        load_lowrank(TunedLens, tmp_path / "nothing", hm)


def _other_width():
    import transformers as T

    from lens_widget import HookedModel
    from zoo import char_tokenizer

    torch.manual_seed(0)
    cfg = T.LlamaConfig(vocab_size=101, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
    return HookedModel.from_model(T.AutoModelForCausalLM.from_config(cfg).eval(), char_tokenizer(), name="tiny-llama-48")


@pytest.mark.slow
def test_shipped_lens_for_the_embedded_model(smollm):
    from lens_widget.corpus import corpus_texts
    from lens_widget.tuned_training import held_out_kl

    tuned = TunedLens.default(smollm)
    assert tuned.n_layers == 30 and tuned.d_model == 576 and tuned.name == "tuned lens"
    assert int(tuned.shipped["rank"]) >= 1
    kl = held_out_kl(smollm, {"logit lens": None, "tuned lens": tuned}, corpus_texts("held_out"), max_tokens=256)
    logit, mine = kl["kl"]["logit lens"][:-1], kl["kl"]["tuned lens"][:-1]
    assert all(t < l for t, l in zip(mine, logit))
    assert sum(mine) < 0.2 * sum(logit)
    with pytest.raises(LensFileError):
        TunedLens.default(tiny("llama"))
