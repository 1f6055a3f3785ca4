"""The Jacobian lens: the logit lens at J = I, exact against a naive float64 computation at every
site, the published file schema (written here by a few independent lines of torch) both ways,
clear errors for bad files, an offline-safe Hub path, and the fit: deterministic, resumable, and
equal to the true Jacobian of a network whose blocks are linear."""

from __future__ import annotations

import socket
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from lens_widget import LogitLens, UnsupportedSiteError
from lens_widget.arch import get_path
from lens_widget.jacobian_lens import JacobianLens, LensFileError, lens_filename
from lens_widget.jacobian_lens import fit_jacobian_lens
from lens_widget.jacobian_training import probe_matrix
from lens_widget.lowrank import rounded
from fakes import CodePayload
from zoo import CONFIGS, char_tokenizer, counted_forwards, jittered_lens, tiny

ARCHS = sorted(CONFIGS)
PROMPT = "The capital of France is Paris."
TRACK = [5, 17, 40]
TEXTS = [
    "It was the best of times, it was the worst of times, it was the age of wisdom.",
    "short",  # too short for skip_first=4: skipped
    "Call me Ishmael. Some years ago, never mind how long precisely, having little money.",
    "In a hole in the ground there lived a hobbit. Not a nasty, dirty, wet hole.",
]


def random_jacobians(hm, seed: int = 1, embed: bool = True) -> dict:
    d = hm.model.config.hidden_size
    g = torch.Generator().manual_seed(seed)
    jac = {i: torch.randn(d, d, generator=g) / d**0.5 for i in range(hm.num_layers - 1)}
    if embed:
        jac["embed"] = torch.randn(d, d, generator=g) / d**0.5
    return jac


def naive_jlens(hm, jac: dict, prompt: str | None, ids: list[int] | None = None) -> np.ndarray:
    """float64 logits [sites, T, V] written out by hand: Hugging Face's hidden_states (0 = the
    embeddings, i + 1 = block i's output), J h in float64, the model's own final norm module,
    then the unembedding (+ bias, soft-cap) in float64; the last block is the model's logits.
    ``ids``: token ids instead of ``prompt``."""
    enc = hm.tokenizer(prompt, return_tensors="pt") if ids is None else {"input_ids": torch.tensor([ids])}
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
    keys = ["embed"] + list(range(hm.num_layers - 1))
    rows = []
    for key, h in zip(keys, out.hidden_states[:-1]):
        y = h[0].double() @ jac[key].double().T
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


def rank_band(z: np.ndarray, tid: int, tol: float = 1e-4) -> tuple[int, int]:
    """The exact rank of ``tid`` in ``z``, allowing only ties within ``tol``."""
    return 1 + int((z > z[tid] + tol).sum()), 1 + int((z > z[tid] - tol).sum())


def run(hm, decoder=None, **kw):
    return LogitLens(hm, compile="never", decoder=decoder).run(PROMPT, k=5, track=TRACK, progress=False, **kw)


# -- J = I is the logit lens --------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_identity_equals_logit_lens(arch):
    hm = tiny(arch)
    a = run(hm)
    b = run(hm, JacobianLens.identity(hm))
    assert b.lens_name == "jacobian lens" and a.sites == b.sites == hm.default_sites()
    for key in ("topk_ids", "tracked_rank", "next_rank", "topk_probs", "tracked_logit", "kl", "entropy"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)


# -- a random J is exact at every site --------------------------------------------------------------------
@pytest.mark.parametrize("arch", ARCHS)
def test_random_jacobians_match_naive(arch):
    hm = tiny(arch)
    jac = random_jacobians(hm)
    ref = naive_jlens(hm, jac, PROMPT)
    r = run(hm, JacobianLens(hm, jac))
    assert r.sites == hm.default_sites()
    logp = ref - np.logaddexp.reduce(ref, axis=-1, keepdims=True)
    p = np.exp(logp)
    for s in range(len(r.sites)):
        for t in range(ref.shape[1]):
            z = ref[s, t]
            order = np.argsort(-z, kind="stable")
            for j in range(5):  # top-5 ids, up to ties within 1e-4
                got = r.topk_ids[0, s, t, j]
                assert got == order[j] or abs(z[order[j]] - z[got]) < 1e-4
            np.testing.assert_allclose(r.topk_probs[0, s, t], p[s, t, order[:5]], atol=2e-5, rtol=1e-4)
            for m, tid in enumerate(TRACK):
                lo, hi = rank_band(z, tid)
                assert lo <= r.tracked_rank[0, s, t, m] <= hi
                np.testing.assert_allclose(r.tracked_logit[0, s, t, m], z[tid], atol=1e-4, rtol=1e-5)


def test_half_precision_input_translates_in_float32():
    hm = tiny("llama")
    lens = JacobianLens(hm, random_jacobians(hm))
    h = torch.randn(3, 32).bfloat16()
    y = lens.translate(h, "resid_out_1")
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), h.float() @ lens.jacobians[1].T, atol=0.05, rtol=0.01)
    assert lens.translate(h, "resid_out_2") is h  # the last block: the plain unembedding


# -- sites without a J ------------------------------------------------------------------------------------
def test_sites_without_a_jacobian_are_refused():
    hm = tiny("llama")
    jac = random_jacobians(hm, embed=False)
    del jac[1]
    lens = JacobianLens(hm, jac)
    assert lens.supported_sites == ["resid_out_0", "resid_out_2"]
    with pytest.raises(UnsupportedSiteError, match=r"no J for 'embed', 'resid_out_1'.*published files have no J for 'embed'"):
        run(hm, lens)
    with pytest.raises(UnsupportedSiteError, match="mlp_out_0"):
        lens.logits(torch.zeros(2, 32), "mlp_out_0")
    with pytest.raises(UnsupportedSiteError):
        lens.logits(torch.zeros(2, 32), None)
    r = run(hm, lens, sites=lens.supported_sites)
    assert r.sites == ["resid_out_0", "resid_out_2"]


# -- the published schema -----------------------------------------------------------------------------------
def write_published(path, jac: dict, d: int, dtype=torch.float16) -> None:
    """A file in Neuronpedia's schema, by a few lines of torch (no lens_widget code)."""
    layers = sorted(k for k in jac if isinstance(k, int))
    torch.save({"J": {i: jac[i].to(dtype) for i in layers}, "n_prompts": 7, "d_model": d, "source_layers": layers}, path)


def test_published_file_loads_and_decodes_identically(tmp_path):
    hm = tiny("gemma2")
    jac = random_jacobians(hm, embed=False)
    path = tmp_path / lens_filename("google/gemma-2-9b-it")
    assert path.name == "gemma-2-9b-it_jacobian_lens.pt"
    write_published(path, jac, 32)
    lens = JacobianLens.from_pretrained(path, hm)
    assert lens.n_prompts == 7 and lens.source_layers == [0, 1] and lens.J_embed is None
    assert lens.jacobians[0].dtype == torch.float32
    same = JacobianLens(hm, {i: J.half().float() for i, J in jac.items()})
    a, b = run(hm, lens, sites=lens.supported_sites), run(hm, same, sites=same.supported_sites)
    for key in ("topk_ids", "tracked_rank", "topk_probs", "tracked_logit"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)
    # kept in the file's float16 and upcast per call: the same numbers
    half = JacobianLens.from_pretrained(tmp_path, hm, dtype=None)  # the folder's one *_jacobian_lens.pt
    assert half.jacobians[0].dtype == torch.float16
    c = run(hm, half, sites=half.supported_sites)
    np.testing.assert_array_equal(a.topk_probs, c.topk_probs)
    # and against the naive computation (the float16-rounded matrices)
    ref = naive_jlens(hm, dict({i: J.half().float() for i, J in jac.items()}, embed=torch.eye(32)), PROMPT)
    for s_ref, s in ((1, 0), (2, 1), (3, 2)):
        np.testing.assert_allclose(a.tracked_logit[0, s], ref[s_ref][:, TRACK], atol=1e-4, rtol=1e-5)


def test_save_round_trip_and_schema(tmp_path):
    hm = tiny("llama")
    lens = JacobianLens(hm, random_jacobians(hm), n_prompts=3, metadata={"fit": {"seed": 5}})
    path = lens.save(tmp_path / "mine.pt")
    raw = torch.load(path, weights_only=True)  # what any reader of the schema sees
    assert set(raw) >= {"J", "n_prompts", "d_model", "source_layers"}
    assert raw["source_layers"] == [0, 1] and raw["d_model"] == 32 and raw["n_prompts"] == 3
    assert all(isinstance(k, int) and v.shape == (32, 32) for k, v in raw["J"].items())
    meta = raw["lens_widget"]
    assert meta["model"] == "tiny-llama" and meta["n_layers"] == 3 and meta["fit"] == {"seed": 5}
    assert set(meta["environment"]) >= {"transformers", "torch"}
    again = JacobianLens.from_pretrained(path, hm)
    for i in (0, 1):
        assert torch.equal(again.jacobians[i], lens.jacobians[i])
    assert torch.equal(again.J_embed, lens.J_embed)
    half = lens.save(tmp_path / "half.pt", dtype=torch.float16)
    assert torch.load(half, weights_only=True)["J"][0].dtype == torch.float16


# -- clear errors for bad files ---------------------------------------------------------------------------------
def test_wrong_shapes_and_foreign_files(tmp_path):
    hm = tiny("llama")
    p = tmp_path / "x.pt"
    torch.save({"J": {0: torch.zeros(16, 16)}, "n_prompts": 1, "d_model": 32, "source_layers": [0]}, p)
    with pytest.raises(LensFileError, match=r"J\[0\] has shape \[16, 16\].*needs \[32, 32\].*another model"):
        JacobianLens.from_pretrained(p, hm)
    torch.save({"J": {0: torch.zeros(48, 48)}, "n_prompts": 1, "d_model": 48, "source_layers": [0]}, p)
    with pytest.raises(LensFileError, match=r"d_model 48.*d_model 32.*another model"):
        JacobianLens.from_pretrained(p, hm)
    torch.save({"J": {i: torch.zeros(32, 32) for i in range(5)}, "n_prompts": 1, "d_model": 32, "source_layers": list(range(5))}, p)
    with pytest.raises(LensFileError, match=r"layer\(s\) \[2, 3, 4\].*3 layers.*0 … 1.*another model"):
        JacobianLens.from_pretrained(p, hm)
    # our metadata names another depth
    lens = JacobianLens(hm, random_jacobians(hm))
    state = lens.state_dict()
    state["lens_widget"]["n_layers"] = 12
    torch.save(state, p)
    with pytest.raises(LensFileError, match=r"12 layers.*has 3 layers.*another model"):
        JacobianLens.from_pretrained(p, hm)
    # same shapes, another model's unembedding
    lens.save(p)
    with pytest.raises(LensFileError, match="unembedding differs.*another model"):
        JacobianLens.from_pretrained(p, tiny("mistral"))
    # a published file of layers 0 … 0 only, for a 3-layer model: looks foreign, warns
    torch.save({"J": {0: torch.eye(32)}, "n_prompts": 1, "d_model": 32, "source_layers": [0]}, p)
    with pytest.warns(UserWarning, match="2-layer model.*another model"):
        JacobianLens.from_pretrained(p, hm)


def test_missing_layer_that_is_asked_for(tmp_path):
    hm = tiny("llama")
    p = tmp_path / "x.pt"
    torch.save({"J": {1: torch.eye(32)}, "n_prompts": 1, "d_model": 32, "source_layers": [1]}, p)
    lens = JacobianLens.from_pretrained(p, hm, layers=[1, "resid_out_2"])
    assert lens.source_layers == [1]
    with pytest.raises(LensFileError, match=r"no J for layer\(s\) 0, embed that were asked for"):
        JacobianLens.from_pretrained(p, hm, layers=[0, 1, "embed"])


def test_not_a_lens_file(tmp_path):
    hm = tiny("llama")
    p = tmp_path / "x.pt"
    torch.save(torch.zeros(3), p)
    with pytest.raises(LensFileError, match="holds a Tensor, not a Jacobian-lens dict"):
        JacobianLens.from_pretrained(p, hm)
    torch.save([1, 2], p)
    with pytest.raises(LensFileError, match="holds a list"):
        JacobianLens.from_pretrained(p, hm)
    torch.save({"sum": {}, "n_done": 1}, p)
    with pytest.raises(LensFileError, match="no 'J'.*fit checkpoint"):
        JacobianLens.from_pretrained(p, hm)
    torch.save({"J": [torch.eye(32)]}, p)
    with pytest.raises(LensFileError, match="'J' holds a list"):
        JacobianLens.from_pretrained(p, hm)
    torch.save({"J": {0: torch.zeros(32, 32, dtype=torch.long)}}, p)
    with pytest.raises(LensFileError, match="not a floating-point tensor"):
        JacobianLens.from_pretrained(p, hm)
    p.write_bytes(b"\x80\x04 not a checkpoint" * 10)
    with pytest.raises(LensFileError, match="corrupt"):
        JacobianLens.from_pretrained(p, hm)
    with pytest.raises(LensFileError, match="does not exist"):
        JacobianLens.from_pretrained(tmp_path / "nothing.pt", hm)
    (tmp_path / "empty").mkdir()
    with pytest.raises(LensFileError, match="no \\*_jacobian_lens.pt"):
        JacobianLens.from_pretrained(tmp_path / "empty", hm)


def test_code_carrying_file_never_runs(tmp_path):
    hm = tiny("llama")
    marker = tmp_path / "pwned"
    p = tmp_path / "evil_jacobian_lens.pt"
    torch.save({"J": {0: CodePayload(marker)}, "n_prompts": 1, "d_model": 32, "source_layers": [0]}, p)
    with pytest.raises(LensFileError, match=r"more than tensors.*refused.*weights_only=True"):
        JacobianLens.from_pretrained(p, hm)
    assert not marker.exists()


def test_other_library_versions_warn(tmp_path):
    hm = tiny("llama")
    state = JacobianLens(hm, random_jacobians(hm)).state_dict()
    state["lens_widget"]["environment"].update(transformers="4.0.0", torch="1.0.0")
    p = tmp_path / "old.pt"
    torch.save(state, p)
    with pytest.warns(UserWarning) as caught:
        JacobianLens.from_pretrained(p, hm)
    text = " | ".join(str(w.message) for w in caught)
    assert "transformers 4.0.0" in text and "torch 1.0.0" in text and "refit" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a file from this environment: silent
        JacobianLens(hm, random_jacobians(hm)).save(p)
        JacobianLens.from_pretrained(p, hm)


# -- the Hub path, offline ----------------------------------------------------------------------------------
def test_hub_without_network_fails_at_once(tmp_path, monkeypatch):
    hm = tiny("llama")
    attempts = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network unreachable (test)")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    with pytest.raises(LensFileError, match=r"could not download tiny-llama_jacobian_lens.pt of the Hub repo neuronpedia/jacobian-lens.*local .pt file"):
        JacobianLens.from_pretrained("neuronpedia/jacobian-lens", hm, cache_dir=str(tmp_path / "hf"))
    assert 1 <= len(attempts) <= 10  # failed on the first refusals, no retry loop
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    attempts.clear()
    with pytest.raises(LensFileError, match="not in the local cache and HF_HUB_OFFLINE is set"):
        JacobianLens.from_pretrained("neuronpedia/jacobian-lens", hm, filename="llama/x_jacobian_lens.pt", cache_dir=str(tmp_path / "hf"))
    assert not attempts


# -- fitting ------------------------------------------------------------------------------------------------
def test_fit_is_deterministic_and_resumes(tmp_path):
    hm = tiny("llama")
    kw = dict(skip_first=4, max_seq_len=40, progress=False, probe_batch=8)
    a = fit_jacobian_lens(hm, TEXTS, seed=3, **kw)
    b = JacobianLens.fit(hm, TEXTS, seed=3, **kw)
    assert a.n_prompts == 3 and a.metadata["fit"]["skipped_short"] == 1
    assert a.metadata["fit"]["n_tokens"] > 100 and a.metadata["fit"]["seed"] == 3
    assert all(p.requires_grad for p in hm.model.parameters())  # weights unfrozen after
    for i in (0, 1):
        assert torch.equal(a.jacobians[i], b.jacobians[i])
    assert torch.equal(a.J_embed, b.J_embed)
    # interrupted after 2 prompts, then resumed: the same J, bit for bit
    ck = tmp_path / "ck.pt"
    part = fit_jacobian_lens(hm, TEXTS, seed=3, checkpoint=ck, stop_after=2, **kw)
    assert part.n_prompts == 2
    c = fit_jacobian_lens(hm, TEXTS, seed=3, checkpoint=ck, **kw)
    assert c.n_prompts == 3
    for i in (0, 1):
        assert torch.equal(a.jacobians[i], c.jacobians[i])
    assert torch.equal(a.J_embed, c.J_embed)
    with pytest.raises(ValueError, match="resume=False"):
        fit_jacobian_lens(hm, TEXTS, seed=3, checkpoint=ck, **dict(kw, skip_first=5))
    # the probe estimator: the same under a seed, another under another seed, resumable too
    kp = dict(kw, probes=8)
    p1, p2 = fit_jacobian_lens(hm, TEXTS, seed=1, **kp), fit_jacobian_lens(hm, TEXTS, seed=1, **kp)
    p3 = fit_jacobian_lens(hm, TEXTS, seed=2, **kp)
    assert torch.equal(p1.jacobians[0], p2.jacobians[0]) and not torch.equal(p1.jacobians[0], p3.jacobians[0])
    ck2 = tmp_path / "ck2.pt"
    fit_jacobian_lens(hm, TEXTS, seed=1, checkpoint=ck2, stop_after=1, **kp)
    p4 = fit_jacobian_lens(hm, TEXTS, seed=1, checkpoint=ck2, **kp)
    assert torch.equal(p1.jacobians[1], p4.jacobians[1])
    # the fitted lens saves and loads with its metadata
    path = a.save(tmp_path / "fitted.pt")
    back = JacobianLens.from_pretrained(path, hm)
    assert back.metadata["fit"]["n_prompts"] == 3 and "exact" in back.metadata["fit"]["estimator"]


def test_probes_are_unbiased_and_full_probes_are_exact():
    d, k = 8, 2
    acc = torch.zeros(d, d, dtype=torch.float64)
    n = 3000
    for i in range(n):
        U = probe_matrix(d, k, seed=0, index=i).double()
        acc += U.T @ U / k
    assert float((acc / n - torch.eye(d)).abs().max()) < 0.12  # E[u uᵀ] = I (Monte Carlo)
    U = probe_matrix(d, d, seed=0, index=0).double()
    torch.testing.assert_close(U.T @ U / d, torch.eye(d, dtype=torch.float64), atol=1e-6, rtol=0)
    # on a model: d probes give the exact J
    hm = tiny("qwen2")
    kw = dict(skip_first=4, max_seq_len=40, progress=False, max_prompts=1)
    exact = fit_jacobian_lens(hm, TEXTS, **kw)
    full = fit_jacobian_lens(hm, TEXTS, probes=32, **kw)
    for i in (0, 1):
        torch.testing.assert_close(full.jacobians[i], exact.jacobians[i], atol=2e-4, rtol=1e-4)


class LinearBlock(nn.Module):
    """A causal linear block: ``out[t] = A h[t] + B Σ_{s<t} h[s]`` (a tensor out, as transformers 5 blocks)."""

    def __init__(self, d: int, g: torch.Generator):
        super().__init__()
        self.A = nn.Parameter(torch.eye(d) + torch.randn(d, d, generator=g) * 0.3)
        self.B = nn.Parameter(torch.randn(d, d, generator=g) * 0.1)

    def forward(self, hidden_states, *args, **kwargs):
        before = torch.cumsum(hidden_states, 1) - hidden_states
        return hidden_states @ self.A.T + before @ self.B.T


def linear_model(d: int = 16, n_layers: int = 4):
    import transformers as T

    from lens_widget import HookedModel

    torch.manual_seed(0)
    cfg = T.LlamaConfig(vocab_size=101, hidden_size=d, num_hidden_layers=n_layers, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    model = T.AutoModelForCausalLM.from_config(cfg).eval()
    g = torch.Generator().manual_seed(11)
    model.model.layers = nn.ModuleList([LinearBlock(d, g) for _ in range(n_layers)])
    return HookedModel.from_model(model, char_tokenizer(), name="linear-toy")


def true_jacobian(blocks, T: int, skip_first: int, first: int) -> torch.Tensor:
    """Closed form, no autograd: each block as a [T·d, T·d] block-lower-triangular matrix, their
    product from block ``first`` on, then (1/n) Σ_{s ≤ t valid} of its [t, s] blocks."""
    d = blocks[0].A.shape[0]
    P = torch.eye(T * d, dtype=torch.float64)
    for blk in blocks[first:]:
        A, B = blk.A.detach().double(), blk.B.detach().double()
        M = torch.kron(torch.eye(T, dtype=torch.float64), A) + torch.kron(torch.tril(torch.ones(T, T, dtype=torch.float64), -1), B)
        P = M @ P
    valid = range(skip_first, T - 1)
    J = sum(P[t * d:(t + 1) * d, s * d:(s + 1) * d] for t in valid for s in valid if s <= t)
    return J / len(valid)


def test_fit_of_a_linear_network_is_its_true_jacobian():
    hm = linear_model()
    texts = TEXTS[:1] + TEXTS[2:]
    lens = fit_jacobian_lens(hm, texts, skip_first=3, max_seq_len=24, progress=False, probe_batch=5)
    blocks = list(hm.blocks)
    Ts = [min(24, len(hm.tokenizer(t)["input_ids"])) for t in texts]
    want = {}
    for key, first in [("embed", 0)] + [(i, i + 1) for i in range(3)]:
        want[key] = sum(true_jacobian(blocks, T, 3, first) for T in Ts) / len(Ts)
    for i in range(3):
        torch.testing.assert_close(lens.jacobians[i].double(), want[i], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(lens.J_embed.double(), want["embed"], atol=1e-4, rtol=1e-4)
    # without the causal mixing (B = 0) it is the plain product of the later blocks' A
    with torch.no_grad():
        for blk in blocks:
            blk.B.zero_()
    lens = fit_jacobian_lens(hm, texts[:1], skip_first=3, max_seq_len=24, progress=False, layers=[1])
    A2, A3 = blocks[2].A.detach(), blocks[3].A.detach()
    torch.testing.assert_close(lens.jacobians[1], A3 @ A2, atol=1e-5, rtol=1e-5)


# -- the command ------------------------------------------------------------------------------------------
def test_fit_command(tmp_path):
    from lens_widget.cli import main

    hm = tiny("llama")
    model_dir = tmp_path / "model"
    hm.model.save_pretrained(model_dir)
    hm.tokenizer.save_pretrained(model_dir)
    text = tmp_path / "prompts.txt"
    text.write_text("\n\n".join(TEXTS))
    out = tmp_path / "tiny_jacobian_lens.pt"
    argv = ["fit-jacobian-lens", "--out", str(out), "--model", str(model_dir), "--text", str(text), "--prompts", "2",
            "--skip-first", "4", "--seq-len", "40", "--seed", "7", "--dtype", "float16", "--probes", "8"]
    assert main(argv) == 0
    raw = torch.load(out, weights_only=True)
    assert raw["J"][0].dtype == torch.float16 and raw["n_prompts"] == 2 and raw["source_layers"] == [0, 1]
    fit = raw["lens_widget"]["fit"]
    assert fit["seed"] == 7 and fit["probes"] == 8 and fit["n_prompts"] == 2 and fit["n_tokens"] > 50
    assert fit["command"].startswith("python -m lens_widget fit-jacobian-lens --out") and "--seed 7" in fit["command"]
    lens = JacobianLens.from_pretrained(out, hm)  # same weights, another HookedModel: loads
    assert lens.J_embed is not None
    assert main(["fit-jacobian-lens", "--out", str(out), "--model", str(tmp_path / "nope")]) == 2


# -- the shipped (compact) form ----------------------------------------------------------------------------
def numpy_rank_r(J: torch.Tensor, r: int) -> np.ndarray:
    """The best rank-r approximation by numpy's own SVD (float64), for comparison."""
    U, S, Vt = np.linalg.svd(J.double().numpy())
    return (U[:, :r] * S[:r]) @ Vt[:r]


def test_shipped_form_round_trips_at_a_rank_and_whole(tmp_path):
    hm = tiny("llama")
    jac = random_jacobians(hm)
    lens = JacobianLens(hm, jac, n_prompts=3, metadata={"fit": {"command": "fit it", "seed": 4, "n_prompts": 3, "n_tokens": 384},
                                                         "environment": {"torch": "t", "transformers": "x"}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the recorded versions differ from these on purpose
        whole = JacobianLens.from_shipped(lens.save_shipped(tmp_path / "whole.safetensors", None, record={"source": "f.pt"}), hm)
        low = JacobianLens.from_shipped(lens.save_shipped(tmp_path / "r8.safetensors", 8), hm)
    for key in list(range(hm.num_layers - 1)):
        torch.testing.assert_close(whole.jacobians[key], jac[key].half().float(), rtol=0, atol=0)
        np.testing.assert_allclose(low.jacobians[key].double().numpy(), numpy_rank_r(jac[key], 8), atol=2e-3, rtol=0)
        # what scripts/jlens_quality.py measures at a rank is exactly what ships at it
        torch.testing.assert_close(low.jacobians[key], rounded(jac[key], 8), rtol=0, atol=0)
    np.testing.assert_allclose(low.J_embed.double().numpy(), numpy_rank_r(jac["embed"], 8), atol=2e-3, rtol=0)
    assert whole.n_prompts == 3 and whole.metadata["fit"]["seed"] == 4 and whole.metadata["shipped"]["rank"] == "full"
    text = low.describe()
    for want in ("rank 8 (float16)", "3 prompts, 384 tokens, seed 4", "command: fit it", "fitted under torch t, transformers x"):
        assert want in text, (want, text)
    # the low-rank lens decodes like the naive computation with its own (multiplied-out) matrices
    mats = {**low.jacobians, "embed": low.J_embed}
    ref = naive_jlens(hm, mats, PROMPT)
    r = run(hm, low)
    np.testing.assert_allclose(r.tracked_logit[0], ref[:, :, TRACK], atol=1e-4, rtol=1e-5)
    # deterministic: the same lens gives the same bytes
    again = lens.save_shipped(tmp_path / "again.safetensors", 8)
    assert again.read_bytes() == (tmp_path / "r8.safetensors").read_bytes()


def test_shipped_form_refuses_another_model(tmp_path):
    hm = tiny("llama")
    path = JacobianLens(hm, random_jacobians(hm)).save_shipped(tmp_path / "j.safetensors", 4)
    import transformers as T

    from lens_widget import HookedModel
    from zoo import char_tokenizer

    cfg = T.LlamaConfig(vocab_size=101, hidden_size=48, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    other = HookedModel.from_model(T.AutoModelForCausalLM.from_config(cfg).eval(), char_tokenizer(), name="tiny-llama-48")
    with pytest.raises(LensFileError, match=r"for tiny-llama \(3 layers, d_model 32\); tiny-llama-48 has 2 layers.*another model"):
        JacobianLens.from_shipped(path, other)
    with pytest.raises(LensFileError, match="unembedding differs.*another model"):
        JacobianLens.from_shipped(path, tiny("llama", seed=3))  # same shapes, other weights
    with pytest.raises(LensFileError, match="missing"):
        JacobianLens.from_shipped(tmp_path / "nothing.safetensors", hm)


def test_the_shipped_lens_refuses_another_model():
    from lens_widget.jacobian_lens import SHIPPED_JLENS_FILE

    assert SHIPPED_JLENS_FILE.is_file() and SHIPPED_JLENS_FILE.stat().st_size < 21e6  # float16, whole (see its README)
    with pytest.raises(LensFileError, match="SmolLM2-135M-Instruct.*another model.*HookedModel.default"):
        JacobianLens.default(tiny("llama"))


@pytest.mark.slow
def test_a_check_under_these_versions_silences_the_version_warning_and_only_such_a_check(monkeypatch):
    """``checked_here``: a shipped file's held-out check counts only if it was made under this
    process's transformers and torch; the fit's own versions are warned about otherwise."""
    import lens_widget.jacobian_lens as jl

    now = {"transformers": "5.25.0", "torch": "2.13.0+cpu", "lens_widget": "0.1.0"}
    monkeypatch.setattr(jl, "lens_environment", lambda: dict(now))
    fitted = {"environment": {"transformers": "5.17.0", "torch": "2.11.0+cu130", "lens_widget": "0.1.0"}}
    cases = {
        "no check": (fitted, 2),
        "checked here": (dict(fitted, shipped={"checked": {"environment": dict(now)}}), 0),
        "checked under another torch": (dict(fitted, shipped={"checked": {"environment": dict(now, torch="2.12.0")}}), 2),
        "checked under another transformers": (dict(fitted, shipped={"checked": {"environment": dict(now, transformers="5.24.0")}}), 2),
        "fitted here": ({"environment": dict(now)}, 0),
    }
    for name, (meta, n_warnings) in cases.items():
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            jl._warn_versions(meta, "lens.pt")
        said = [str(w.message) for w in seen]
        assert len(said) == n_warnings, (name, said)
        assert all("lens.pt was fitted under" in m for m in said), said


def test_the_shipped_lens_loads_for_the_embedded_model_and_says_where_it_came_from(smollm):
    from lens_widget.lens_files import lens_environment

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        lens = JacobianLens.default(smollm)
    assert lens.supported_sites == smollm.default_sites()
    fit, env, shipped = lens.metadata["fit"], lens.metadata["environment"], lens.metadata["shipped"]
    assert fit["probes"] is None and fit["n_prompts"] == lens.n_prompts >= 100 and fit["n_tokens"] >= 100 * 100
    assert fit["seed"] == 0 and fit["command"] and fit["seconds"] > 0
    assert set(env) == {"transformers", "torch", "lens_widget"} and all(env.values())
    # recorded versions other than these are said at load time (Neuronpedia's lesson), unless the
    # file records a held-out check made under these very versions (ship_jlens.py's, at ship time)
    from lens_widget.jacobian_lens import checked_here

    checked = shipped["checked"]
    assert checked["mean_kl"]["J lens"] < checked["mean_kl"]["logit lens"] and checked["tokens"] >= 200
    differ = [] if checked_here(lens.metadata) else [lib for lib in ("transformers", "torch") if env[lib] != lens_environment()[lib]]
    said = [str(w.message) for w in seen if "was fitted under" in str(w.message)]
    assert len(said) == len(differ) and all(f"fitted under {lib} {env[lib]}" in m for lib, m in zip(differ, said))
    assert shipped["command"].startswith("python scripts/ship_jlens.py") and len(shipped["source_sha256"]) == 64
    text = lens.describe()
    for want in (f"{lens.n_prompts} prompts, {fit['n_tokens']} tokens, seed 0", fit["command"], f"rank {shipped['rank']} (float16)",
                 f"transformers {env['transformers']}", f"torch {env['torch']}"):
        assert want in text, (want, text)
    # it decodes: the last block is the model's own logits, the lens differs from the logit lens before it
    r = LogitLens(smollm, decoder=lens, compile="never").run("The capital of France is", k=3, progress=False)
    r0 = LogitLens(smollm, compile="never").run("The capital of France is", k=3, progress=False)
    np.testing.assert_array_equal(r.topk_ids[0, -1], r0.topk_ids[0, -1])
    assert (r.topk_ids[0, 1:-1, :, 0] != r0.topk_ids[0, 1:-1, :, 0]).any()


# -- generation with a J lens ------------------------------------------------------------------------------
def test_generation_with_a_j_lens_equals_a_fresh_run_column_by_column():
    hm = tiny("llama")
    jl = jittered_lens(hm)
    lens = LogitLens(hm, compile="never", decoder=jl)
    got = []
    res = lens.generate("Hello wor", 6, track=["o"], callback=got.append, progress=False)
    ids = res.input_ids[0].tolist()
    fresh = LogitLens(hm, compile="never", decoder=jl).run([ids], track=["o"], progress=False)
    logit = LogitLens(hm, compile="never").run([ids], track=["o"], progress=False)
    assert res.lens_name == "jacobian lens" and len(got) == 6
    assert (fresh.topk_ids[0, :-1, :, 0] != logit.topk_ids[0, :-1, :, 0]).any()  # J really changes the grid
    for c in got:
        for key in ("topk_ids", "next_rank", "tracked_rank"):
            np.testing.assert_array_equal(c.cells[key], getattr(fresh, key)[0, :, c.col], err_msg=key)
        np.testing.assert_allclose(c.cells["topk_probs"], fresh.topk_probs[0, :, c.col], atol=1e-5)
    for key in ("topk_ids", "next_rank", "tracked_rank"):
        np.testing.assert_array_equal(getattr(res, key), getattr(fresh, key), err_msg=key)
    np.testing.assert_allclose(res.kl, fresh.kl, atol=1e-5)  # the cached forward differs in rounding only


def test_the_widget_generates_with_a_j_lens():
    from lens_widget.widget import LensWidget

    hm = tiny("llama")
    jl = jittered_lens(hm)
    w = LensWidget(hm, "Hello wor", decoders={"J": jl}, progress=False)
    seen = []
    w.send = lambda content, buffers=None: seen.append(content)
    try:
        n0 = w.result.n_positions
        w.generate(5, wait=True)
        cols = [c for c in seen if c.get("type") == "column"]
        assert [c["col"] for c in cols] == [n0 - 1] + list(range(n0, n0 + 5))
        ids = w.result.input_ids[0].tolist()
        fresh = LogitLens(hm, compile="never", decoder=jl).run([ids], progress=False)
        assert w.result.lens_name == "jacobian lens"
        for key in ("topk_ids", "next_rank", "tracked_rank"):
            np.testing.assert_array_equal(getattr(w.result, key), getattr(fresh, key), err_msg=key)
    finally:
        w.close()


# -- next to a remote model (nnsight remote="local": the request serialised exactly as for NDIF) ----------------
def test_a_j_lens_travels_by_value_to_a_remote_model():
    """The J matrices go with the request (d x d float32 per site) and the lens runs in the trace:
    the grid and cell detail equal the local run; a lens whose translate is code, or J beside
    another lens in one remote run, is refused saying why."""
    from test_nnsight import absent_on_server, assert_same, language_model

    from lens_widget import HookedModel
    from lens_widget.cells import cell_detail
    from lens_widget.sources import ActivationRef
    from zoo import AffineLens

    hm = tiny("llama")
    jl = jittered_lens(hm)
    prompts = ["Hello world, this is", "The cat sat"]
    kw = dict(track=["a", "e"], progress=False)
    ref = LogitLens(hm, compile="never", decoder=jl).run(prompts, **kw)
    nn_hm = HookedModel.from_nnsight(language_model(hm), remote="local")
    jr = JacobianLens(nn_hm, {**jl.jacobians, "embed": jl.J_embed})
    assert jr.portable and not AffineLens(nn_hm).portable
    maps = jr.in_trace_maps(nn_hm.default_sites())
    assert sorted(maps) == sorted(nn_hm.default_sites()[:-1]) and all(m.dtype == torch.float32 for m in maps.values())
    assert sum(m.numel() * 4 for m in maps.values()) == 3 * 32 * 32 * 4  # d² x 4 bytes a site, the last block none
    with absent_on_server("lens_widget"):
        remote = LogitLens(nn_hm, compile="never", decoder=jr).run(prompts, **kw)
        logit_remote = LogitLens(nn_hm, compile="never").run(prompts, **kw)
        ref_row = ActivationRef(nn_hm.as_batch(prompts[:1]), "resid_out_1", 3)
        detail = cell_detail(nn_hm, jr, ref_row, "resid_out_1", k=5, token_ids=[7])
    assert_same(remote, ref)
    assert (remote.topk_ids[:, :-1] != logit_remote.topk_ids[:, :-1]).any()  # the J really ran there
    want = cell_detail(hm, jl, LogitLens(hm, decoder=jl).run(prompts[:1], return_activations=True, progress=False)[1][0]["resid_out_1"][3],
                       "resid_out_1", k=5, token_ids=[7])
    np.testing.assert_array_equal(detail["top_ids"], want["top_ids"])
    assert detail["token_stats"][0]["rank"] == want["token_stats"][0]["rank"]
    with pytest.raises(ValueError, match="one trace decodes one lens.*run the Jacobian lens on its own"):
        LogitLens(nn_hm).run("Hello", progress=False, decoders={"logit": None, "J": jr})
    with pytest.raises(ValueError, match="code of its own.*matrix per site"):
        LogitLens(nn_hm, decoder=AffineLens(nn_hm)).run("Hello", progress=False)


def test_a_j_lens_too_big_to_travel_is_refused_saying_why(monkeypatch):
    from lens_widget import jacobian_lens

    hm = tiny("llama")
    jl = jittered_lens(hm)
    monkeypatch.setattr(jacobian_lens, "MAX_TRAVEL_BYTES", 2 * 32 * 32 * 4)
    assert len(jl.in_trace_maps(["resid_out_0", "resid_out_1"])) == 2
    with pytest.raises(ValueError, match=r"would send 3 d x d matrices \(0 MB, float32\).*ask for fewer sites"):
        jl.in_trace_maps(hm.default_sites())


def test_a_j_lens_goes_where_a_lens_goes_in_the_widget():
    """Logit, tuned and J lenses in one widget from one forward: each grid equals that lens run
    alone, cell detail and the exact compare answer for the J lens, and the export carries all three."""
    from lens_widget.widget import LensWidget
    from zoo import AffineLens

    hm = tiny("llama")
    d = hm.model.config.hidden_size
    g = torch.Generator().manual_seed(5)
    jl = JacobianLens(hm, {i: torch.eye(d) + 0.2 * torch.randn(d, d, generator=g) for i in range(hm.num_layers - 1)})
    sites = jl.supported_sites
    with counted_forwards(hm) as calls:
        w = LensWidget(hm, "The cat sat", decoders={"logit": None, "tuned": AffineLens(hm), "J": jl}, sites=sites, progress=False)
    assert len(calls) == 1 and w.lenses == ["logit", "tuned", "J"]
    alone = LogitLens(hm, decoder=jl).run("The cat sat", sites=sites, progress=False)
    np.testing.assert_array_equal(w.results["J"].topk_ids, alone.topk_ids)
    np.testing.assert_array_equal(w.results["J"].next_rank, alone.next_rank)
    w.lens = "J"
    detail = w.cell_detail(1, 2, k=5)
    assert detail["lens_name"] == "jacobian lens"
    np.testing.assert_array_equal(detail["top_ids"], alone.topk_ids[0, 1, 2, :5])
    c = w.compare_with(("logit", 0), ("J", 0))
    assert c.js_exact and float(np.nanmax(c.js)) > 0
    state = w.export_state()
    assert set(state["grids"]) == {"logit", "tuned", "J"}
    w.close()
