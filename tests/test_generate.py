"""`LogitLens.generate`: the model writes with the lens on every token.

Checked against things computed another way: `transformers`' own `generate` (the tokens), and
`LogitLens.run` on prompt + generated ids (a full forward without a cache: the grid).
"""

from __future__ import annotations

import copy
import functools
import threading

import numpy as np
import pytest
import torch

from lens_widget import HookedModel, LogitLens, PromptError
from lens_widget.arch import get_path
from lens_widget.generation import GeneratedColumn, GenerationProgress
from zoo import VOCAB, tiny

ARCHS = ["llama", "gpt2", "gpt_neox", "opt", "qwen3", "gemma2", "phi3", "mistral", "olmo2", "falcon", "bloom", "gptj"]
PROMPT = "Hello wor"
EXACT = ("topk_ids", "next_ids", "next_rank", "tracked_rank", "input_ids", "positions", "lengths", "nonfinite")
CLOSE = ("topk_probs", "topk_logits", "entropy", "next_prob", "next_logit", "tracked_prob", "tracked_logit")


def hf_greedy(hm: HookedModel, ids: list[int], n: int) -> list[int]:
    """The tokens `transformers` writes greedily after ``ids``."""
    x = torch.tensor([ids])
    out = hm.model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[0].tolist()


def assert_grid_equals_run(res, ref, atol=1e-5, kl_tol=1e-4, near_ties: HookedModel | None = None):
    """`res` (a generation) against `ref` (run() on the same ids): ids and ranks identical, values close.

    The two read residuals computed two ways (with and without a key/value cache), which agree
    to float rounding only. With ``near_ties`` (the model, for a real one whose vocabulary has
    near-ties), a rank may differ, in a few cells, by no more than the number of tokens whose
    float64 logit there lies within 1e-4 of the ranked token's: a tie broken by that rounding."""
    for key in EXACT:
        if near_ties is not None and key in ("next_rank", "tracked_rank"):
            assert_ranks_equal_up_to_near_ties(near_ties, res, ref, key)
        else:
            np.testing.assert_array_equal(getattr(res, key), getattr(ref, key), err_msg=key)
    for key in CLOSE:
        np.testing.assert_allclose(getattr(res, key), getattr(ref, key), atol=atol, rtol=1e-5, err_msg=key)
    np.testing.assert_allclose(res.kl, ref.kl, atol=kl_tol, rtol=1e-4, err_msg="kl")
    assert res.sites == ref.sites
    assert res.tracked_ids.tolist() == ref.tracked_ids.tolist()


def assert_ranks_equal_up_to_near_ties(hm: HookedModel, res, ref, key: str, tol: float = 1e-4) -> None:
    a, b = getattr(res, key), getattr(ref, key)
    bad = np.argwhere(a != b)
    assert len(bad) <= max(1, a.size // 200), f"{key}: {len(bad)} of {a.size} ranks differ"
    W = hm.model.get_output_embeddings().weight.detach().double()
    norm = copy.deepcopy(get_path(hm.model, hm.arch.final_norm)).double()
    for idx in bad:
        p, s, col = (int(i) for i in idx[:3])
        site = ref.sites[s]
        batch = hm.as_batch([ref.input_ids[p, : ref.lengths[p]].tolist()])
        h = hm.record(batch, [site], torch.tensor([[col]])).acts[site][0, 0].double()
        logits = W @ norm(h)  # the model's own final norm and head (no bias, no soft-cap: SmolLM2's), in float64
        token = int(ref.tracked_ids[idx[3]]) if key == "tracked_rank" else int(ref.next_ids[p, col])
        near = int(((logits - logits[token]).abs() < tol).sum()) - 1
        assert abs(int(a[tuple(idx)]) - int(b[tuple(idx)])) <= near, (key, tuple(idx), int(a[tuple(idx)]), int(b[tuple(idx)]), near)


# A prompt (and a model seed) per architecture whose greedy continuation varies. Tiny random models
# often fall into repeating one token; then the token just read and the next token are the same and
# a grid that swaps them passes. Tiny bloom repeats whatever it writes first for every prompt and
# seed tried (tied embeddings: a token predicts itself), so it gets an untied random head.
GREEDY = {
    "llama": ("Hello wor", 0), "gpt2": ('{"key": [1, 2]}', 0), "gpt_neox": ("Hello wor", 0), "opt": ("qwertyuiop", 0),
    "qwen3": ("Hello wor", 0), "gemma2": ("Once upon a time", 0), "phi3": ("xyzzy plugh", 0), "mistral": ("Once upon a time", 0),
    "olmo2": ("Hello wor", 0), "falcon": ("xyzzy plugh", 0), "bloom": ("xyzzy plugh", 0), "gptj": ("xyzzy plugh", 2),
}


@functools.lru_cache(maxsize=None)
def untied_bloom() -> HookedModel:
    from zoo import char_tokenizer

    model = copy.deepcopy(tiny("bloom").model)
    g = torch.Generator().manual_seed(0)
    model.lm_head.weight = torch.nn.Parameter(torch.randn(model.lm_head.weight.shape, generator=g) * 0.1)
    model.config.tie_word_embeddings = False
    assert model.lm_head.weight is not model.transformer.word_embeddings.weight
    return HookedModel.from_model(model, char_tokenizer(), name="tiny-bloom-untied")


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_tokens_equal_transformers_generate_and_grid_equals_run(arch):
    prompt, seed = GREEDY[arch]
    hm = untied_bloom() if arch == "bloom" else tiny(arch, seed=seed)
    lens = LogitLens(hm, compile="never")
    prompt_ids = hm.encode(prompt).rows()[0]
    res = lens.generate(prompt, 10, track=["o", " "], progress=False)
    ids = res.input_ids[0].tolist()
    assert ids == hf_greedy(hm, prompt_ids, 10)
    assert len(set(ids[len(prompt_ids):])) > 2, ids  # the text varies (see GREEDY)
    assert res.generated_from.tolist() == [len(prompt_ids)]
    assert res.n_positions == len(prompt_ids) + 10
    assert_grid_equals_run(res, lens.run([ids], track=["o", " "], progress=False))


def test_callback_once_per_token_with_its_column():
    hm = tiny("llama")
    lens = LogitLens(hm, compile="never")
    got: list[GeneratedColumn] = []
    res = lens.generate(PROMPT, 7, track=["l"], callback=got.append, progress=False)
    ids = res.input_ids[0].tolist()
    ref = lens.run([ids], track=["l"], progress=False)
    n0 = int(res.generated_from[0])
    assert len(set(ids[n0:])) > 2  # the text varies: the token read and the next token differ
    assert [c.index for c in got] == list(range(7))
    assert [c.col for c in got] == list(range(n0, n0 + 7))
    for c in got:
        assert c.token_id == ids[c.col]
        assert c.next_id == (ids[c.col + 1] if c.col + 1 < len(ids) else -1)
        # the column as reported is already final: equal to a full run's column
        for key in ("topk_ids", "next_rank", "tracked_rank"):
            np.testing.assert_array_equal(c.cells[key], getattr(ref, key)[0, :, c.col], err_msg=key)
        for key in ("topk_probs", "entropy", "next_prob", "tracked_prob"):
            np.testing.assert_allclose(c.cells[key], getattr(ref, key)[0, :, c.col], atol=1e-5, err_msg=key)
        assert set(c.acts) >= set(ref.sites)
        assert {c.token_id} | set(c.cells["topk_ids"].ravel().tolist()) <= set(c.token_strings)
        assert c.token_strings[c.token_id] == hm.tokenizer.decode([c.token_id])


def test_progress_callable_counts_tokens():
    hm = tiny("llama")
    seen: list[GenerationProgress] = []
    LogitLens(hm, compile="never").generate(PROMPT, 5, progress=seen.append)
    assert [p.done for p in seen] == [1, 2, 3, 4, 5]
    assert all(p.total == 5 for p in seen)
    assert seen[-1].eta == 0.0 and seen[0].eta is not None and seen[0].eta >= 0


@pytest.mark.parametrize("stop_kind", ["event", "callable"])
def test_stop_half_way_keeps_a_consistent_grid(stop_kind):
    hm = tiny("gpt2")
    lens = LogitLens(hm, compile="never")
    full = lens.generate(PROMPT, 10, progress=False).input_ids[0].tolist()
    event = threading.Event()
    stop = event if stop_kind == "event" else event.is_set

    def after(col: GeneratedColumn) -> None:
        if col.index == 3:
            event.set()

    res = lens.generate(PROMPT, 10, callback=after, stop=stop, progress=False)
    ids = res.input_ids[0].tolist()
    n0 = len(hm.encode(PROMPT).rows()[0])
    assert ids == full[: n0 + 4]  # the four tokens read so far, the same the full run wrote
    assert res.next_ids[0, -1] == -1 and res.next_rank[0, :, -1].tolist() == [0] * res.n_sites
    assert np.isnan(res.next_prob[0, :, -1]).all()
    assert_grid_equals_run(res, lens.run([ids], progress=False))


def test_stop_before_the_first_token_gives_the_prompt_grid():
    hm = tiny("llama")
    lens = LogitLens(hm, compile="never")
    res = lens.generate(PROMPT, 5, stop=lambda: True, progress=False)
    assert res.input_ids[0].tolist() == hm.encode(PROMPT).rows()[0]
    assert_grid_equals_run(res, lens.run(PROMPT, progress=False))


def test_sampling_with_a_seed_is_reproducible_and_top_k_1_is_greedy():
    hm = tiny("llama")
    lens = LogitLens(hm, compile="never")
    a = lens.generate(PROMPT, 12, do_sample=True, seed=3, temperature=1.5, progress=False)
    b = lens.generate(PROMPT, 12, do_sample=True, seed=3, temperature=1.5, progress=False)
    np.testing.assert_array_equal(a.input_ids, b.input_ids)
    np.testing.assert_array_equal(a.topk_ids, b.topk_ids)
    others = {tuple(lens.generate(PROMPT, 12, do_sample=True, seed=s, temperature=1.5, progress=False).input_ids[0].tolist()) for s in range(4, 8)}
    assert len(others | {tuple(a.input_ids[0].tolist())}) > 1  # the seed matters
    greedy = lens.generate(PROMPT, 12, progress=False).input_ids
    np.testing.assert_array_equal(lens.generate(PROMPT, 12, do_sample=True, top_k=1, seed=9, progress=False).input_ids, greedy)
    np.testing.assert_array_equal(lens.generate(PROMPT, 12, do_sample=True, top_p=1e-6, seed=9, progress=False).input_ids, greedy)
    # a sampled generation's grid is the lens of its text too
    assert_grid_equals_run(a, lens.run([a.input_ids[0].tolist()], progress=False))


def _first_tokens(lens, n: int, **kw) -> np.ndarray:
    """Empirical frequencies ``[V]`` of the first sampled token over seeds 0..n-1."""
    draws = [int(lens.generate(PROMPT, 1, do_sample=True, seed=s, progress=False, **kw).input_ids[0, -1]) for s in range(n)]
    return np.bincount(draws, minlength=VOCAB) / n


def _assert_follows(freq: np.ndarray, p: np.ndarray, n: int, what: str) -> None:
    """Every token's frequency within 5 binomial standard errors (+ one draw) of its probability:
    a bound that shrinks like 1/sqrt(n)."""
    bound = 5 * np.sqrt(p * (1 - p) / n) + 1 / n
    worst = int(np.argmax(np.abs(freq - p) - bound))
    assert np.all(np.abs(freq - p) <= bound), f"{what}: token {worst} drawn {freq[worst]:.3f}, p = {p[worst]:.3f}"


def test_sampled_tokens_follow_the_model_distribution():
    """The first-token frequencies over many seeds match softmax(logits / T) at two low
    temperatures, where the distribution is peaked (max p >= 0.3), so sampling uniformly or
    ignoring the temperature is far outside the bound; top_k keeps the kept tokens' proportions."""
    hm = tiny("llama")
    lens = LogitLens(hm, compile="never")
    ids = hm.encode(PROMPT).rows()[0]
    with torch.no_grad():
        z = hm.model(torch.tensor([ids])).logits[0, -1].double()
    N = 800
    seen = {}
    for T in (0.06, 0.15):
        p = torch.softmax(z / T, -1).numpy()
        assert p.max() >= 0.3 and np.sort(p)[-2] >= 0.05  # peaked, and not a single token
        seen[T] = _first_tokens(lens, N, temperature=T)
        _assert_follows(seen[T], p, N, f"T={T}")
    # the two temperatures give measurably different frequencies: the favourite's share drops
    top = int(torch.argmax(z))
    p1, p2 = (float(torch.softmax(z / T, -1)[top]) for T in (0.06, 0.15))
    assert p1 - p2 > 0.15  # what the model says
    assert seen[0.06][top] - seen[0.15][top] > 10 * np.sqrt(0.25 / N)  # and what was drawn
    # top_k=3: only the three best, in their own proportions (not uniform among them)
    kept = torch.topk(z, 3).indices
    q = torch.zeros_like(z)
    q[kept] = torch.softmax(z[kept] / 0.1, -1)
    q = q.numpy()
    assert q.max() - q[q > 0].min() > 0.3
    freq = _first_tokens(lens, N, temperature=0.1, top_k=3)
    assert set(np.nonzero(freq)[0]) <= set(kept.tolist())
    _assert_follows(freq, q, N, "top_k=3")


def test_eos_ends_the_generation_after_it():
    hm = tiny("llama")
    lens = LogitLens(hm, compile="never")
    full = lens.generate(PROMPT, 10, eos_token_id=None, progress=False).input_ids[0].tolist()
    n0 = len(hm.encode(PROMPT).rows()[0])
    eos = full[n0 + 2]
    first = full.index(eos, n0)
    res = lens.generate(PROMPT, 10, eos_token_id=eos, progress=False)
    assert res.input_ids[0].tolist() == full[: first + 1]
    assert_grid_equals_run(res, lens.run([full[: first + 1]], progress=False))


def test_chat_prompt_uses_the_template_with_the_generation_prompt():
    base = tiny("llama")
    tok = copy.deepcopy(base.tokenizer)
    tok.chat_template = "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}\n{% endfor %}{% if add_generation_prompt %}<a>{% endif %}"
    hm = HookedModel(base.model, tok)
    chat = [{"role": "u", "content": "hi"}]
    want = list(tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)["input_ids"])
    res = LogitLens(hm, compile="never").generate(chat, 4, progress=False)
    assert res.input_ids[0, : len(want)].tolist() == want
    assert res.generated_from.tolist() == [len(want)]
    assert res.input_ids[0].tolist() == hf_greedy(hm, want, 4)


def test_bad_arguments_are_clear_errors():
    lens = LogitLens(tiny("llama"), compile="never")
    with pytest.raises(ValueError, match="max_new_tokens"):
        lens.generate(PROMPT, -1, progress=False)
    with pytest.raises(PromptError, match="one prompt"):
        lens.generate(["ab", "cd"], 2, progress=False)
    with pytest.raises(ValueError, match="temperature"):
        lens.generate(PROMPT, 2, do_sample=True, temperature=0, progress=False)
    with pytest.raises(TypeError, match="stop"):
        lens.generate(PROMPT, 2, stop=3, progress=False)


def test_the_context_limit_caps_the_new_tokens():
    hm = tiny("llama")  # max_position_embeddings = 64
    res = LogitLens(hm, compile="never").generate("x" * 60, 10, eos_token_id=None, progress=False)
    assert res.n_positions == 64


@pytest.mark.slow
def test_embedded_model_greedy_equals_transformers_and_run(smollm):
    lens = LogitLens(smollm, compile="never")
    prompt = "The capital of France is"
    res = lens.generate(prompt, 16, track=[" Paris"], progress=False)
    ids = res.input_ids[0].tolist()
    assert ids == hf_greedy(smollm, smollm.encode(prompt).rows()[0], 16)
    assert smollm.tokenizer.decode(ids[res.generated_from[0]:]).startswith(" Paris")
    assert_grid_equals_run(res, lens.run([ids], track=[" Paris"], progress=False), kl_tol=2e-3, near_ties=smollm)


@pytest.mark.slow
def test_embedded_model_chat_generation(smollm):
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    want = list(smollm.tokenizer.apply_chat_template(chat, add_generation_prompt=True, tokenize=True)["input_ids"])
    res = LogitLens(smollm, compile="never").generate(chat, 8, progress=False)
    assert res.input_ids[0, : len(want)].tolist() == want
    assert res.input_ids[0].tolist() == hf_greedy(smollm, want, 8)
