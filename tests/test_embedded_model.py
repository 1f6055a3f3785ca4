"""Real weights: the embedded SmolLM2-135M-Instruct gives the answers a researcher expects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lens_widget import LogitLens
from lens_widget.loading import default_model_path, embedded_gguf, load_pretrained

pytestmark = pytest.mark.slow


def test_paris_wins_at_the_last_layer(smollm):
    assert smollm.num_layers == 30 and smollm.model_config.vocab_size == 49152
    assert LogitLens(smollm).check_lens("The capital of France is") <= 1e-4
    paris, london = smollm.tokens.token_id(" Paris"), smollm.tokens.token_id(" London")
    assert smollm.tokens.decode(paris) == " Paris"
    r = LogitLens(smollm).run("The capital of France is", track=[paris, london], progress=False)
    assert r.display(r.topk_ids[0, -1, -1, 0]) == "␣Paris"
    assert r.topk_probs[0, -1, -1, 0] == pytest.approx(0.77, abs=0.02)
    diff = r.logit_diff(paris, london)[0, :, -1]
    assert (diff[-3:] > 0).all()  # Paris beats London in the last layers
    first = r.first_layer(paris)
    assert first is not None and 20 <= first <= 30  # appears late, as the lens literature reports
    assert r.tracked(paris, "rank")[0, -1, -1] == 1
    # the classic lens recomputes each layer's norm: layer-0 top-1 is far from uniform
    assert r.topk_probs[0, 1, -1, 0] > 0.05


def test_token_helper_never_returns_bos(smollm):
    tok = smollm.get_tokenizer()
    paris = smollm.tokens.token_id(" Paris")
    assert paris not in (tok.bos_token_id, tok.eos_token_id)
    assert tok.decode([paris]) == " Paris"


def test_cached_copy_is_bit_identical_to_the_gguf(smollm):
    assert (default_model_path() / "model.safetensors").is_file()
    folder, file = embedded_gguf()
    gguf_model, _ = load_pretrained(folder, gguf_file=file)
    cached = dict(smollm.model.named_parameters())
    for name, p in gguf_model.named_parameters():
        assert torch.equal(p, cached[name]), name


def test_grid_statistics_are_consistent_on_real_weights(smollm):
    from reference import naive_lens, stats

    text = "The quick brown fox jumps over the lazy dog."
    r = LogitLens(smollm).run(text, k=10, progress=False)
    assert np.isfinite(r.entropy).all() and np.isfinite(r.kl).all()
    # not the signs or the last block's zero (the engine clamps and zeroes them): the values, against
    # an independent float64 pass (hidden_states, the model's norm and its own final logits)
    ref = stats(naive_lens(smollm, text, matmul_dtype=torch.float32)[0])
    np.testing.assert_allclose(r.kl[0], ref["kl"], atol=2e-3, rtol=1e-3)
    np.testing.assert_allclose(r.entropy[0], ref["entropy"], atol=2e-3, rtol=1e-3)
    assert (ref["kl"][:-1] > 1e-3).mean() > 0.9  # the earlier sites really differ from the final one
    # KL(final || final) = 0 means the final site IS the model's distribution
    final = np.take_along_axis(ref["p"][-1], r.topk_ids[0, -1], -1)
    np.testing.assert_allclose(r.topk_probs[0, -1], final, atol=1e-5, rtol=1e-4)
    valid = r.next_rank[0] > 0
    assert (r.next_rank[0][valid] <= smollm.model_config.vocab_size).all()
    # top-1 probability and next-token probability agree where the top-1 is the next token
    hit = r.topk_ids[0, :, :, 0] == r.next_ids[0][None, :]
    np.testing.assert_allclose(r.topk_probs[0, :, :, 0][hit], r.next_prob[0][hit], rtol=1e-5)
    assert (r.next_rank[0][hit] == 1).all()


def test_gguf_copy_converts_once_and_again_when_the_gguf_changes(tmp_path, monkeypatch):
    """gguf_copy's cache: the conversion (load_pretrained of the GGUF, faked here by a tiny model:
    the real conversion is pinned bit-identical above) runs once; a changed GGUF converts again."""
    import os

    from zoo import tiny

    import lens_widget.loading as loading

    monkeypatch.setenv("LENS_WIDGET_CACHE", str(tmp_path / "cache"))
    gguf = tmp_path / "models" / "toy-q4.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF v1")
    calls = []

    def fake_load(folder, gguf_file=None, **kw):
        calls.append((str(folder), gguf_file))
        hm = tiny("llama", seed=len(calls))
        return hm.model, hm.tokenizer

    monkeypatch.setattr(loading, "load_pretrained", fake_load)
    first = loading.gguf_copy(gguf)
    assert first == tmp_path / "cache" / "toy-q4" and (first / "model.safetensors").is_file()
    assert calls == [(str(gguf.parent), "toy-q4.gguf")]
    assert loading.gguf_copy(gguf) == first and len(calls) == 1  # reused
    gguf.write_bytes(b"GGUF v2, longer")
    os.utime(gguf, (1_700_000_000, 1_700_000_000))
    loading.gguf_copy(gguf)
    assert len(calls) == 2  # the GGUF changed: converted again
    assert loading.gguf_copy(gguf, refresh=True) == first and len(calls) == 3
    assert loading.gguf_copy(gguf, name="mine") == tmp_path / "cache" / "mine" and len(calls) == 4
    with pytest.raises(FileNotFoundError, match="no GGUF file"):
        loading.gguf_copy(tmp_path / "missing.gguf")
