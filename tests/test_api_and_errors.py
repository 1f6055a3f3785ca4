"""The reference tutorial's API, and bad input: clear errors, nothing lost."""

from __future__ import annotations

import copy
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import transformers as T

from lens_widget import (
    ArchSpec,
    ExtractionConfig,
    HookedModel,
    LogitLens,
    MultiTokenError,
    PromptError,
    TokenLookupError,
    UnknownArchitectureError,
)
from lens_widget.sites import resolve_positions
from zoo import char_tokenizer, tiny

PROMPT = "The capital of France is"


def test_tutorial_workflow_runs_as_written():
    model = tiny("llama")
    logit_lens = LogitLens.from_model(model)
    tokenizer = model.get_tokenizer()
    inputs = tokenizer(PROMPT, return_tensors="pt")
    cache = model.extract_cache(
        [inputs],
        target_token_positions=["last"],
        extraction_config=ExtractionConfig(extract_resid_out=True, extract_last_layernorm=True),
    )
    keys = [k for k in cache.keys() if not k.startswith("__")]
    num_layers = model.model_config.num_hidden_layers
    assert keys == [f"resid_out_{i}" for i in range(num_layers)] + ["last_layernorm", "logits"]
    results = {}
    for layer in range(num_layers):
        out = logit_lens.compute(activations=cache, target_key=f"resid_out_{layer}", apply_norm=True, apply_softmax=True)
        results[layer] = out[f"logit_lens_resid_out_{layer}"]
    assert results[0].shape == (1, 1, model.model_config.vocab_size)
    torch.testing.assert_close(results[0].sum(-1), torch.ones(1, 1))
    # the last layer's lens is the model's own next-token distribution
    torch.testing.assert_close(results[num_layers - 1][0, 0], cache["logits"][0, 0].softmax(-1), atol=1e-5, rtol=1e-4)
    # last_layernorm is the final norm of the last block's output
    torch.testing.assert_close(cache["last_layernorm"], model.model.model.norm(cache[f"resid_out_{num_layers - 1}"]))
    # section 6: logit differences; ids from the safe helper, never encode(...)[0]
    a, b = model.tokens.token_id("P"), model.tokens.token_id("L")
    diffs = []
    for layer in range(num_layers):
        res = logit_lens.compute(activations=cache, target_key=f"resid_out_{layer}", token_directions=[(a, b)], metric="logit_diff", apply_norm=True)
        diffs.append(res[f"logit_diff_resid_out_{layer}"].item())
        full = logit_lens.compute(activations=cache, target_key=f"resid_out_{layer}")[f"logit_lens_resid_out_{layer}"]
        assert diffs[-1] == pytest.approx(float(full[0, 0, a] - full[0, 0, b]), abs=1e-4)
    # "{i}" patterns expand over every layer in the cache
    every = logit_lens.compute(activations=cache, target_key="resid_out_{i}", progress=False)
    assert sorted(every) == sorted(f"logit_lens_resid_out_{i}" for i in range(num_layers))


def test_apply_norm_uses_each_layers_own_statistics():
    model = tiny("llama")
    lens = LogitLens(model)
    cache = model.extract_cache([PROMPT], ["last"], ExtractionConfig(), progress=False)
    h = cache["resid_out_0"][0, 0]
    normed = model.model.model.norm(h)  # RMS of layer 0 itself
    expect = normed @ model.model.lm_head.weight.T
    got = lens.compute(cache, "resid_out_0")["logit_lens_resid_out_0"][0, 0]
    torch.testing.assert_close(got, expect.detach(), atol=1e-4, rtol=1e-4)
    raw = lens.compute(cache, "resid_out_0", apply_norm=False)["logit_lens_resid_out_0"][0, 0]
    torch.testing.assert_close(raw, (h @ model.model.lm_head.weight.T).detach(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch", ["gpt2", "gemma2", "phi", "opt", "bloom"])
def test_apply_norm_false_beyond_llama(arch):
    """Without the norm the lens is the raw unembedding (+ bias, + soft-cap); with it, the
    model's own final norm first. Written out by hand from the model's modules."""
    from lens_widget.arch import get_path

    model = tiny(arch)
    lens = LogitLens(model)
    cache = model.extract_cache([PROMPT], ["all"], ExtractionConfig(), progress=False)
    head = model.model.get_output_embeddings()
    cap = getattr(model.model.config, "final_logit_softcapping", None)
    norm = get_path(model.model, model.arch.final_norm)

    def by_hand(x):
        z = x @ head.weight.T
        if getattr(head, "bias", None) is not None:
            z = z + head.bias
        return (torch.tanh(z / cap) * cap if cap else z).detach()

    h = cache["resid_out_1"]
    raw = lens.compute(cache, "resid_out_1", apply_norm=False)["logit_lens_resid_out_1"]
    normed = lens.compute(cache, "resid_out_1")["logit_lens_resid_out_1"]
    with torch.no_grad():
        torch.testing.assert_close(raw, by_hand(h), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(normed, by_hand(norm(h)), atol=1e-4, rtol=1e-4)
    assert (raw - normed).abs().max() > 1e-2  # the norm matters: the two are not the same call
    probs = lens.compute(cache, "resid_out_1", apply_norm=False, apply_softmax=True)["logit_lens_resid_out_1"]
    torch.testing.assert_close(probs, raw.softmax(-1), atol=1e-6, rtol=1e-5)


def test_compute_pads_with_nan_and_takes_several_token_pairs():
    model = tiny("llama")
    lens = LogitLens(model)
    prompts = ["ab", "The capital", "abcdef"]
    cache = model.extract_cache(prompts, ["all"], ExtractionConfig(), progress=False)
    lengths = [len(p) for p in prompts]
    assert cache.positions.shape == (3, max(lengths))
    full = lens.compute(cache, "resid_out_2")["logit_lens_resid_out_2"]
    assert full.shape == (3, max(lengths), model.vocab_size)
    for b, n in enumerate(lengths):
        assert torch.isfinite(full[b, :n]).all() and torch.isnan(full[b, n:]).all()
        one = model.extract_cache([prompts[b]], ["all"], ExtractionConfig(), progress=False)
        torch.testing.assert_close(full[b, :n], lens.compute(one, "resid_out_2")["logit_lens_resid_out_2"][0], atol=1e-4, rtol=1e-4)
    pairs = [("P", "L"), ("a", "b"), (5, 9)]
    ids = [(model.tokens.token_id(a), model.tokens.token_id(b)) for a, b in pairs]
    diff = lens.compute(cache, "resid_out_2", token_directions=pairs)["logit_diff_resid_out_2"]
    assert diff.shape == (3, max(lengths), 3)
    for j, (a, b) in enumerate(ids):
        for i, n in enumerate(lengths):
            torch.testing.assert_close(diff[i, :n, j], full[i, :n, a] - full[i, :n, b], atol=1e-4, rtol=1e-4)
            assert torch.isnan(diff[i, n:, j]).all()
    one_pair = lens.compute(cache, "resid_out_2", token_directions=pairs[:1])["logit_diff_resid_out_2"]
    assert one_pair.shape == (3, max(lengths))
    torch.testing.assert_close(one_pair, diff[..., 0], equal_nan=True)
    with pytest.raises(ValueError, match="pair"):
        lens.compute(cache, "resid_out_2", token_directions=[("P", "L", "x")])


def test_cache_handles_batches_of_different_lengths_and_positions():
    model = tiny("gpt2")
    shared = model.get_tokenizer()  # cached and shared by every test: never mutate it
    side = shared.padding_side
    tok = copy.deepcopy(shared)
    tok.padding_side = "right"
    batch = tok(["ab", "abcdef"], padding=True, return_tensors="pt")
    cache = model.extract_cache([batch, "xyz"], ["last", 0], ExtractionConfig(extract_embed=True), progress=False)
    assert cache["resid_out_0"].shape[:2] == (3, 2)
    assert cache.positions.tolist() == [[0, 1], [0, 5], [0, 2]]
    single = model.extract_cache(["abcdef"], ["last", 0], ExtractionConfig(extract_embed=True), progress=False)
    torch.testing.assert_close(cache["resid_out_2"][1], single["resid_out_2"][0], atol=1e-5, rtol=1e-5)
    left = tok(["ab", "abcdef"], padding=True, return_tensors="pt", padding_side="left")
    with pytest.raises(PromptError, match="left-padded"):
        model.extract_cache([left], ["last"], progress=False)
    assert shared.padding_side == side and model.get_tokenizer() is shared


def test_positions_spec():
    assert resolve_positions("all", 4) == [0, 1, 2, 3]
    assert resolve_positions(["last", "last-2", 0], 5) == [0, 2, 4]
    assert resolve_positions(slice(1, 3), 5) == [1, 2]
    assert resolve_positions(-1, 5) == [4]
    for bad in (7, "first", "last-9"):
        with pytest.raises((IndexError, ValueError)):
            resolve_positions(bad, 5)


def test_position_ranges_last_n_and_slice_strings():
    # "last-N" is one token (the seed's meaning); "last:N" is the range of the last N tokens
    n = 34
    assert resolve_positions("last-8", n) == [n - 9]
    assert resolve_positions("last:8", n) == list(range(n))[-8:] == list(range(26, 34))
    assert resolve_positions("last:1", n) == resolve_positions("last", n)
    assert resolve_positions("last:50", 5) == [0, 1, 2, 3, 4]  # like the slice -50:
    # slice strings read as Python's slices of range(n)
    for text, sl in (("2:10", slice(2, 10)), ("-5:", slice(-5, None)), ("::3", slice(None, None, 3)), (":4", slice(None, 4)), ("3:-3:2", slice(3, -3, 2))):
        assert resolve_positions(text, n) == list(range(n))[sl], text
    assert resolve_positions(["last:2", "0:2"], 6) == [0, 1, 4, 5]
    for bad in ("last:0", "::0", "2:10:x", "last:-3", "5:2"):
        with pytest.raises(ValueError):
            resolve_positions(bad, n)


def test_tokens_never_bos_and_refuse_multi_token_strings():
    model = tiny("llama")
    assert model.tokens.token_id("P") == char_tokenizer().convert_tokens_to_ids("P")
    with pytest.raises(MultiTokenError) as err:
        model.tokens.token_id("Paris")
    assert [p[1] for p in err.value.pieces] == list("Paris") and "5 tokens" in str(err.value)
    for bad in ("", 10**6, -1):
        with pytest.raises(TokenLookupError):
            model.tokens.token_id(bad)


def test_a_spaceless_word_warns_when_the_spaced_token_is_likelier():
    """The embedded SmolLM2's tokenizer (no weights): "Paris" is one rare token, " Paris" a common one."""
    import warnings

    from lens_widget.loading import default_model_path
    from lens_widget.tokens import TokenTable

    tok = T.AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
    table = TokenTable(tok)
    plain, spaced = tok("Paris", add_special_tokens=False)["input_ids"], tok(" Paris", add_special_tokens=False)["input_ids"]
    assert len(plain) == len(spaced) == 1 and spaced[0] < plain[0]  # the case the warning is for, from the tokenizer itself
    with pytest.warns(UserWarning) as seen:
        assert table.token_id("Paris") == plain[0]  # still the token asked for
    [w] = seen
    assert str(w.message).startswith(f'tracking "Paris" (id {plain[0]}); did you mean " Paris" (id {spaced[0]})?')
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning for the spaced form, an id, punctuation, or a word whose bare form is the common one
        assert table.token_id(" Paris") == spaced[0]
        assert table.token_id(plain[0]) == plain[0]
        table.token_id(".")
        table.token_id("Hello")
        tiny("llama").tokens.token_id("P")  # " P" is two tokens of the character tokenizer


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda lens: lens.run("", progress=False), PromptError, "empty"),
        (lambda lens: lens.run("x" * 65, progress=False), PromptError, "longer than the model's context of 64"),
        (lambda lens: lens.run([], progress=False), PromptError, "no prompts"),
        (lambda lens: lens.run(PROMPT, sites=["resid_pre_3"], progress=False), KeyError, "unknown site"),
        (lambda lens: lens.run(PROMPT, sites=["resid_out_3"], progress=False), IndexError, "layers 0..2"),
        (lambda lens: lens.run(PROMPT, track=["Paris"], progress=False), MultiTokenError, "5 tokens"),
        (lambda lens: lens.run(PROMPT, positions=[99], progress=False), IndexError, "outside"),
        (lambda lens: lens.run(PROMPT, k=0, progress=False), ValueError, "k must be"),
        (lambda lens: lens.compute(lens.model.extract_cache([PROMPT], progress=False), "resid_out_0", metric="kl"), ValueError, "unknown metric"),
        (lambda lens: lens.compute(lens.model.extract_cache([PROMPT], progress=False), "resid_out_9"), KeyError, "not in the cache"),
        (lambda lens: lens.compute(lens.model.extract_cache([PROMPT], progress=False), "resid_out_0", metric="logit_diff"), ValueError, "token_directions"),
        (lambda lens: lens.model.extract_cache([PROMPT], extraction_config=ExtractionConfig(layers=[5])), IndexError, "layer 5"),
    ],
)
def test_bad_input_gets_a_clear_error_and_loses_nothing(call, error, match):
    lens = LogitLens(tiny("llama"))
    before = lens.run(PROMPT, progress=False)
    hooked = hooks(lens.model.model)
    with pytest.raises(error, match=match):
        call(lens)
    assert hooks(lens.model.model) == hooked and ours(lens.model.model) == []  # no hook of ours is left on the model
    after = lens.run(PROMPT, progress=False)  # the model and lens still work, same answers
    np.testing.assert_array_equal(before.topk_ids, after.topk_ids)
    np.testing.assert_allclose(before.kl, after.kl, atol=1e-6)


def hooks(model: torch.nn.Module) -> dict[str, tuple[tuple[int, ...], tuple[int, ...]]]:
    """Every forward (pre-)hook on the model, by module and handle id. Compared before and after a
    call: hooks others left on the shared model (transformers installs permanent ones on the first
    ``output_hidden_states=True``) are in both, so only what the call leaves behind shows."""
    return {name: (tuple(m._forward_hooks), tuple(m._forward_pre_hooks)) for name, m in model.named_modules() if m._forward_hooks or m._forward_pre_hooks}


def ours(model: torch.nn.Module) -> list[str]:
    """The forward (pre-)hooks on the model whose function is lens_widget's."""
    found = []
    for name, m in model.named_modules():
        for fn in [*m._forward_hooks.values(), *m._forward_pre_hooks.values()]:
            fn = getattr(fn, "func", fn)  # functools.partial
            if (getattr(fn, "__module__", "") or "").startswith("lens_widget"):
                found.append(f"{name}: {getattr(fn, '__qualname__', fn)}")
    return found


@pytest.mark.parametrize("where", ["run", "extract_cache", "widget"])
def test_an_error_inside_the_forward_removes_the_hooks_and_loses_nothing(monkeypatch, where):
    """A module that raises mid-pass (an OOM, a bad kernel): every hook is gone afterwards and
    the lens gives the same answers once the module works again."""
    from lens_widget.widget import LensWidget

    lens = LogitLens(tiny("llama"))
    hm = lens.model
    before = lens.run(PROMPT, sites="all", track=[7], progress=False)
    widget = LensWidget(hm, PROMPT, progress=False) if where == "widget" else None
    hooked = hooks(hm.model)
    calls = []

    def explode(*args, **kwargs):
        calls.append(ours(hm.model))  # mid-pass: lens_widget's hooks are on the model (and ours() sees them)
        raise RuntimeError("CUDA out of memory (simulated)")

    with monkeypatch.context() as m:
        m.setattr(hm.blocks[1].mlp, "forward", explode)  # after block 0's hooks fired, before the rest
        with pytest.raises(RuntimeError, match="simulated"):
            if where == "run":
                lens.run(PROMPT, sites="all", track=[7], progress=False)
            elif where == "extract_cache":
                hm.extract_cache([PROMPT], ["all"], ExtractionConfig(extract_attn_out=True, extract_mlp_out=True), progress=False)
            else:
                widget.set_prompt("another prompt")
        assert calls and all(calls) and hooks(hm.model) == hooked and ours(hm.model) == []
    if widget is not None:  # the old grid stays, with the error shown
        assert widget.prompt == PROMPT and "simulated" in widget.error and not widget.busy
        np.testing.assert_array_equal(widget.result.topk_ids, lens.run(PROMPT, progress=False).topk_ids)
        widget.set_prompt("another prompt")
        assert widget.error == "" and widget.prompt == "another prompt"
        widget.close()
    after = lens.run(PROMPT, sites="all", track=[7], progress=False)
    assert hooks(hm.model) == hooked and ours(hm.model) == []
    for key in ("topk_ids", "next_rank", "tracked_rank"):
        np.testing.assert_array_equal(getattr(before, key), getattr(after, key), err_msg=key)
    for key in ("topk_probs", "kl", "entropy", "tracked_prob"):
        np.testing.assert_allclose(getattr(before, key), getattr(after, key), atol=1e-6, err_msg=key)


def test_unknown_architecture_names_the_override():
    cfg = T.CodeGenConfig(vocab_size=101, n_embd=32, n_layer=2, n_head=4, n_positions=64, rotary_dim=4)
    model = T.AutoModelForCausalLM.from_config(cfg)
    with pytest.raises(UnknownArchitectureError, match="arch=ArchSpec"):
        HookedModel.from_model(model, char_tokenizer())
    hm = HookedModel.from_model(model, char_tokenizer(), arch=ArchSpec(blocks="transformer.h", final_norm="transformer.ln_f", attn_out="attn", mlp_out="mlp"))
    assert LogitLens(hm).check_lens("abc") <= 1e-4
    with pytest.raises(UnknownArchitectureError, match="does not match"):
        HookedModel.from_model(model, char_tokenizer(), arch=ArchSpec(blocks="model.layers", final_norm="model.norm"))


def test_hub_names_fail_offline_with_a_clear_message(monkeypatch, tmp_path):
    import huggingface_hub.constants

    # as on a machine without network: the hub is not asked (and not waited for)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(OSError, match="HookedModel.default"):
        HookedModel.from_pretrained("hf-internal-testing/tiny-random-LlamaForCausalLM")
    with pytest.raises(OSError):
        LogitLens.from_model_name("hf-internal-testing/tiny-random-LlamaForCausalLM")


def test_no_network_fails_at_once_without_a_hub_retry_loop(tmp_path):
    """HF_HUB_OFFLINE unset, no network: every connection attempt (and name lookup) raises and is
    counted. A misspelled hub model name and a published tuned-lens name must fail with the reason
    after the one probe, not after huggingface_hub's retries (46 s / 23 s of them before)."""
    code = (
        "import socket, sys; sys.path.insert(0, 'tests')\n"
        "tried = []\n"
        "def refuse(*args, **kwargs):\n"
        "    tried.append(repr(args[:2])[:80])\n"
        "    raise OSError('the test forbids network connections')\n"
        "def no_lookup(*args, **kwargs):\n"
        "    tried.append('lookup ' + repr(args[:1]))\n"
        "    raise socket.gaierror(-2, 'Name or service not known')\n"
        "socket.create_connection = refuse\n"
        "socket.socket.connect = refuse\n"
        "socket.socket.connect_ex = refuse\n"
        "socket.getaddrinfo = no_lookup\n"
        "# huggingface_hub (>= 1.x) fetches an agent registry once per process (one 3 s attempt, not\n"
        "# a retry loop, not ours): start with it empty so every attempt counted is a load's own\n"
        "import huggingface_hub.utils as hu\n"
        "da = getattr(hu, '_detect_agent', None)\n"
        "if da is not None and hasattr(da, '_EMPTY_REGISTRY'):\n"
        "    da._registry = da._EMPTY_REGISTRY\n"
        "from zoo import tiny\n"
        "from lens_widget import HookedModel\n"
        "from lens_widget.tuned_lens import TunedLens, LensFileError\n"
        "for name, call in (('model', lambda: HookedModel.from_pretrained('no-such-org/misspelled-model')),\n"
        "                   ('tuned', lambda: TunedLens.from_pretrained('gpt2', tiny('llama')))):\n"
        "    before = len(tried)\n"
        "    try:\n"
        "        call()\n"
        "    except (OSError, LensFileError) as e:\n"
        "        print(name, 'ERR', str(e).replace(chr(10), ' '))\n"
        "    print(name, 'CONNECTIONS', len(tried) - before, tried[before:])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE")}
    env.update(HF_HOME=str(tmp_path / "hf"), HF_HUB_CACHE=str(tmp_path / "hf" / "hub"))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=root, capture_output=True, text=True, timeout=300)
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if line.startswith(("model ", "tuned ")))
    assert set(lines) == {"model", "tuned"}, out.stdout + out.stderr[-3000:]
    model_lines = [line for line in out.stdout.splitlines() if line.startswith("model ")]
    tuned_lines = [line for line in out.stdout.splitlines() if line.startswith("tuned ")]
    assert "no network" in model_lines[0] and "misspelled-model" in model_lines[0] and "cannot reach huggingface.co:443" in model_lines[0], out.stdout
    assert "offline" in tuned_lines[0] and "cannot reach huggingface.co:443" in tuned_lines[0], out.stdout
    # the one probe each (a lookup refused inside create_connection is one attempt), no retry loop
    assert model_lines[1].startswith("model CONNECTIONS 1 "), out.stdout
    assert tuned_lines[1].startswith("tuned CONNECTIONS 1 "), out.stdout


def test_local_folder_round_trip(tmp_path):
    hm = tiny("qwen2")
    hm.model.save_pretrained(tmp_path)
    hm.tokenizer.save_pretrained(tmp_path)
    loaded = HookedModel.from_pretrained(tmp_path)
    assert LogitLens(loaded).check_lens("hello") <= 1e-4
    a = LogitLens(hm).run("hello", progress=False)
    b = LogitLens(loaded).run("hello", progress=False)
    np.testing.assert_array_equal(a.topk_ids, b.topk_ids)


def test_nonfinite_activations_are_flagged_not_drawn():
    hm = tiny("llama")
    lens = LogitLens(hm)
    block = hm.blocks[1]

    def overflow(_m, _args, out):
        h = out[0] if isinstance(out, tuple) else out
        h[:, 2] = float("inf")  # what an fp16 overflow looks like
        return out

    handle = block.register_forward_hook(overflow)
    try:
        r = lens.run(PROMPT, progress=False)
    finally:
        handle.remove()
    s = r.sites.index("resid_out_1")
    assert r.nonfinite[0, s, 2] and not r.nonfinite[0, : s, 2].any()
    assert np.isnan(r.topk_probs[0, s, 2]).all() and np.isnan(r.entropy[0, s, 2])
    # layers before the overflow are untouched; every flagged cell carries NaN, never numbers
    assert not r.nonfinite[0, :s].any() and np.isfinite(r.entropy[0, :s]).all()
    assert np.isnan(r.entropy[0][r.nonfinite[0]]).all() and np.isnan(r.kl[0][r.nonfinite[0]]).all()


def test_run_accepts_token_ids_and_tokenizer_outputs():
    hm = tiny("llama")
    lens = LogitLens(hm)
    text = lens.run("Hello", progress=False)
    ids = hm.tokenizer("Hello")["input_ids"]
    for form in (ids, [ids], torch.tensor(ids), hm.tokenizer("Hello", return_tensors="pt")):
        np.testing.assert_array_equal(lens.run(form, progress=False).topk_ids, text.topk_ids)
    both = lens.run([ids, ids[:3]], progress=False)
    assert both.lengths.tolist() == [5, 3]
    for bad, match in (([[]], "non-empty"), ([10**6], "outside the vocabulary"), ({"x": 1}, "cannot run")):
        with pytest.raises(PromptError, match=match):
            lens.run(bad, progress=False)
