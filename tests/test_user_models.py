"""The model a user already holds: a plain ``transformers`` causal LM works in ``LogitLens`` and
``LensWidget``, with ``tokenizer=`` or the tokenizer saved beside it, equal to the
``HookedModel`` path; anything else gets a ``TypeError`` that says what is accepted."""

from __future__ import annotations

import numpy as np
import pytest
import transformers as T

from lens_widget import HookedModel, LogitLens
from lens_widget.loading import default_model_path
from lens_widget.widget import LensWidget
from zoo import char_tokenizer, tiny

PROMPT = "The capital of France is"


def assert_same(a, b):
    np.testing.assert_array_equal(a.topk_ids, b.topk_ids)
    np.testing.assert_array_equal(a.next_rank, b.next_rank)
    np.testing.assert_array_equal(a.tracked_rank, b.tracked_rank)
    np.testing.assert_allclose(a.topk_probs, b.topk_probs, atol=1e-6)
    np.testing.assert_allclose(a.kl, b.kl, atol=1e-6)


def test_tiny_transformers_model_with_tokenizer_equals_hooked_model():
    hm = tiny("llama")
    plain = hm.model  # a LlamaForCausalLM
    assert isinstance(plain, T.PreTrainedModel)
    want = LogitLens(hm).run("abc de", track=[3], progress=False)
    got = LogitLens(plain, tokenizer=char_tokenizer()).run("abc de", track=[3], progress=False)
    assert_same(got, want)
    w = LensWidget(plain, "abc de", tokenizer=char_tokenizer(), track=[3], progress=False)
    assert_same(w.result, want)
    assert isinstance(w.model, HookedModel) and w.model.model is plain  # wrapped, not copied


def test_tiny_model_without_a_saved_tokenizer_says_to_pass_one():
    plain = tiny("gpt2").model
    with pytest.raises(ValueError, match="tokenizer="):
        LogitLens(plain)


@pytest.mark.slow
def test_embedded_model_as_plain_transformers_model(smollm):
    plain = T.AutoModelForCausalLM.from_pretrained(default_model_path(), local_files_only=True)
    want = LogitLens(smollm).run(PROMPT, track=[" Paris"], progress=False)
    # the tokenizer is found from the model's own name_or_path (the local folder)
    assert_same(LogitLens(plain).run(PROMPT, track=[" Paris"], progress=False), want)
    tok = T.AutoTokenizer.from_pretrained(default_model_path())
    assert_same(LogitLens(plain, tokenizer=tok).run(PROMPT, track=[" Paris"], progress=False), want)
    w = LensWidget(plain, PROMPT, track=[" Paris"], progress=False)
    assert_same(w.result, want)
    assert w.cell_detail(-1, -1)["top_ids"][0] == want.topk_ids[0, -1, -1, 0]


@pytest.mark.parametrize("thing", ["gpt2", 3, object(), None])
def test_wrong_object_gets_a_type_error_that_says_what_is_accepted(thing):
    if thing is None:
        with pytest.raises(ValueError, match="model and a prompt"):
            LensWidget(None, "x")
        return
    with pytest.raises(TypeError, match="HookedModel or a transformers causal LM"):
        LogitLens(thing)
    with pytest.raises(TypeError, match="HookedModel or a transformers causal LM"):
        LensWidget(thing, "x")


def test_tokenizer_with_a_hooked_model_is_refused():
    hm = tiny("llama")
    with pytest.raises(ValueError, match="already has one"):
        LogitLens(hm, tokenizer=T.AutoTokenizer)
