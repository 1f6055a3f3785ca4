"""Chat prompts: a list of messages goes through the tokenizer's own chat template."""

from __future__ import annotations

import numpy as np
import pytest

from lens_widget import LogitLens, PromptError
from zoo import tiny

CHAT = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.mark.slow
def test_chat_ids_equal_apply_chat_template(smollm):
    want = smollm.tokenizer.apply_chat_template(CHAT, tokenize=True)["input_ids"]
    assert smollm.as_batch(CHAT).rows() == [list(want)]
    want_gen = smollm.tokenizer.apply_chat_template(CHAT, tokenize=True, add_generation_prompt=True)["input_ids"]
    assert smollm.as_batch(CHAT, add_generation_prompt=True).rows() == [list(want_gen)]
    # the grid shows the template's tokens as they are, and equals a run on those ids
    r = LogitLens(smollm).run(CHAT, progress=False)
    np.testing.assert_array_equal(r.input_ids[0, : r.lengths[0]], want)
    np.testing.assert_array_equal(r.topk_ids, LogitLens(smollm).run(list(want), progress=False).topk_ids)


def test_chat_without_a_template_or_content_is_a_clear_error():
    hm = tiny("llama")
    with pytest.raises(PromptError, match="no chat template"):
        hm.as_batch(CHAT)
    with pytest.raises(PromptError, match="chat is a list"):
        hm.as_batch([{"content": "x"}, "y"])
