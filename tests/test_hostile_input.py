"""Untrusted text and hostile use: strings stay data, fast edits never leave a stale grid."""

from __future__ import annotations

import pytest

from lens_widget import HookedModel, LogitLens
from lens_widget.tokens import display_token
from lens_widget.widget import LensWidget
from zoo import tiny


DISPLAY_CASES = [
    ("\u202eevil", "\\u202eevil"),  # right-to-left override cannot flip the grid's text
    ("a\u200bb", "a\\u200bb"),  # zero-width space made visible
    ("\u2066x\u2069", "\\u2066x\\u2069"),  # bidi isolates
    (" <script>", "␣<script>"),  # markup is just characters (the front end never parses it)
    ("\x00\x1b[31m", "\\u0000\\u001b[31m"),  # control characters
    ("", "∅"),
    ("<0x0a>", "<0x0A>"),
    ("👩\u200d👧", "👩\\u200d👧"),
]


@pytest.mark.parametrize("text, shown", DISPLAY_CASES)
def test_display_form_makes_invisible_and_directional_characters_visible(text, shown):
    assert display_token(text) == shown


@pytest.mark.slow
def test_emoji_split_across_byte_tokens_shows_its_bytes(smollm):
    ids = smollm.tokenizer("I love 🍕", add_special_tokens=False)["input_ids"]
    shown = [smollm.tokens.display(i) for i in ids]
    assert shown == ["I", "␣love", "␣<0xF0><0x9F>", "<0x8D>", "<0x95>"]  # F0 9F 8D 95 is 🍕
    assert "".join(smollm.tokens.decode(i) for i in ids[:2]) == "I love"
    # whole characters inside one token still read as text (" café" is one token of SmolLM2's)
    assert smollm.tokens.encode(" café") == [smollm.tokens.token_id(" café")]
    assert smollm.tokens.display(smollm.tokens.token_id(" café")) == "␣café"


@pytest.mark.slow
def test_hostile_prompt_on_real_weights_exports_without_breaking_out(smollm, tmp_path):
    prompt = '</script><script>alert(1)</script> <img src=x onerror=alert(2)> javascript:alert(3) "\'& \u202e 🍕'
    r = LogitLens(smollm).run(prompt, progress=False)
    page = LensWidget(result=r).save_html(tmp_path / "p.html").read_text()
    body = page.split("<script", 1)[0] + "".join(chunk.split("</script>", 1)[-1] for chunk in page.split("<script")[1:])
    assert "<img src=x" not in page and "</script><script>alert" not in page
    assert "<img" not in body and "<script>alert" not in body
    assert "&lt;/script&gt;&lt;script&gt;alert(1)" in page  # the title shows it, escaped


def test_rapid_prompt_edits_end_on_the_latest_prompt():
    w = LensWidget(tiny("llama"), "start", progress=False)
    replies = []
    w.send = lambda content, buffers=None: replies.append(content) if content.get("type") == "reply" else None
    prompts = [f"edit number {i}" + "!" * (i % 5) for i in range(25)] + ["", "final prompt"]
    for i, p in enumerate(prompts):
        w.handle_message({"type": "set_prompt", "request_id": f"p{i}", "prompt": p})
    w.wait()  # they run in the background, one after the other, in the order they came
    assert [r["request_id"] for r in replies] == [f"p{i}" for i in range(len(prompts))]  # every reply arrives
    assert [r["ok"] for r in replies] == [True] * 25 + [False, True]
    assert w.prompt == "final prompt" and w.data["prompt"] == "final prompt" and w.error == ""
    assert w.result.prompts == ["final prompt"] and w.data["n_positions"] == len("final prompt")


def test_remote_code_stays_off_and_safetensors_are_preferred(monkeypatch, tmp_path):
    import transformers

    seen = {}

    def spy(kind, real):
        def load(*args, **kwargs):
            seen[kind] = kwargs
            return real(*args, **kwargs)

        return load

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", spy("tokenizer", transformers.AutoTokenizer.from_pretrained))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", spy("model", transformers.AutoModelForCausalLM.from_pretrained))
    hm = tiny("gpt2")
    hm.model.save_pretrained(tmp_path)  # safetensors by default
    hm.tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and not (tmp_path / "pytorch_model.bin").exists()
    loaded = HookedModel.from_pretrained(tmp_path)
    assert seen["tokenizer"]["trust_remote_code"] is False and seen["model"]["trust_remote_code"] is False
    assert LogitLens(loaded).check_lens("abc") <= 1e-4
