"""The reference tutorial's API, and bad input: clear errors, nothing lost."""

from __future__ import annotations

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


def test_cache_handles_batches_of_different_lengths_and_positions():
    model = tiny("gpt2")
    tok = model.get_tokenizer()
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


def test_positions_spec():
    assert resolve_positions("all", 4) == [0, 1, 2, 3]
    assert resolve_positions(["last", "last-2", 0], 5) == [0, 2, 4]
    assert resolve_positions(slice(1, 3), 5) == [1, 2]
    assert resolve_positions(-1, 5) == [4]
    for bad in (7, "first", "last-9"):
        with pytest.raises((IndexError, ValueError)):
            resolve_positions(bad, 5)


def test_tokens_never_bos_and_refuse_multi_token_strings():
    model = tiny("llama")
    assert model.tokens.token_id("P") == char_tokenizer().convert_tokens_to_ids("P")
    with pytest.raises(MultiTokenError) as err:
        model.tokens.token_id("Paris")
    assert [p[1] for p in err.value.pieces] == list("Paris") and "5 tokens" in str(err.value)
    for bad in ("", 10**6, -1):
        with pytest.raises(TokenLookupError):
            model.tokens.token_id(bad)


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
    with pytest.raises(error, match=match):
        call(lens)
    after = lens.run(PROMPT, progress=False)  # the model and lens still work, same answers
    np.testing.assert_array_equal(before.topk_ids, after.topk_ids)
    np.testing.assert_allclose(before.kl, after.kl, atol=1e-6)


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
