"""Several lenses from one recorded pass: the model runs once whatever the number of lenses,
and each lens's grid equals its own single-lens run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lens_widget.decoders import Decoder
from lens_widget.engine import LogitLens
from lens_widget.schema import CELL_KEYS
from lens_widget.tuned_lens import TunedLens
from lens_widget.widget import LensWidget
from zoo import AffineLens, counted_forwards, tiny

PROMPTS = ["Hello world", "The cat sat on the mat."]


class ScaledLens(Decoder):
    """A third decoder: a fixed per-site scaling before the final norm."""

    name = "scaled lens"

    def translate(self, h: torch.Tensor, site: str | None) -> torch.Tensor:
        return h * (1.5 if site == "embed" else 0.7)


def random_tuned(hm) -> TunedLens:
    lens = TunedLens(hm)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in lens.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return lens


def assert_same(a, b):
    for key in CELL_KEYS:
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key), err_msg=key)
    assert a.lens_name == b.lens_name and a.sites == b.sites


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2"])
def test_three_lenses_from_one_forward_equal_their_own_runs(arch):
    hm = tiny(arch)
    decoders = {"logit": None, "tuned": random_tuned(hm), "scaled": ScaledLens(hm)}
    lens = LogitLens(hm, compile="never")
    with counted_forwards(hm) as calls:
        results = lens.run(PROMPTS, track=[5, 9], progress=False, decoders=decoders, batch_size=2)
    assert len(calls) == 1  # one batch, one forward, three lenses
    assert list(results) == ["logit", "tuned", "scaled"]
    for label, decoder in decoders.items():
        alone = lens.with_decoder(decoder).run(PROMPTS, track=[5, 9], progress=False, batch_size=2)
        assert_same(results[label], alone)
    # the three lenses really differ (a lens ignored would pass the equalities above trivially)
    assert not np.array_equal(results["logit"].topk_probs, results["tuned"].topk_probs)
    assert not np.array_equal(results["logit"].topk_probs, results["scaled"].topk_probs)


def test_lenses_share_small_chunks_exactly():
    """A budget of a few rows: many chunks, shared buffers, the same grids."""
    hm = tiny("llama")
    decoders = {"logit": None, "affine": AffineLens(hm)}
    small = LogitLens(hm, memory_budget=3 * hm.vocab_size * 17, compile="never").run(PROMPTS[1], decoders=decoders, track=[3], progress=False)
    for label, decoder in decoders.items():
        alone = LogitLens(hm, compile="never", decoder=decoder).run(PROMPTS[1], track=[3], progress=False)
        for key in ("topk_ids", "next_rank", "tracked_rank"):
            np.testing.assert_array_equal(getattr(small[label], key), getattr(alone, key), err_msg=key)
        for key in ("topk_probs", "entropy", "kl", "next_prob"):
            np.testing.assert_allclose(getattr(small[label], key), getattr(alone, key), atol=1e-5, rtol=1e-5, err_msg=key)


def test_a_three_lens_widget_runs_the_model_once():
    hm = tiny("llama")
    decoders = {"logit": None, "tuned": random_tuned(hm), "scaled": ScaledLens(hm)}
    with counted_forwards(hm) as calls:
        w = LensWidget(hm, PROMPTS[0], decoders=decoders, progress=False)
        assert len(calls) == 1
        w.set_prompt("A new prompt here")
        assert len(calls) == 2  # a recompute: one more forward for all three lenses
    assert w.lenses == ["logit", "tuned", "scaled"]
    for label, decoder in decoders.items():
        alone = LogitLens(hm, decoder=decoder if decoder is not None else None).run("A new prompt here", progress=False)
        assert_same(w.results[label], alone)
    w.close()


def test_decoders_must_be_decoders():
    hm = tiny("llama")
    with pytest.raises(TypeError, match="must be a lens_widget Decoder"):
        LogitLens(hm).run("hi", decoders={"x": "not a decoder"}, progress=False)
    with pytest.raises(ValueError, match="another model"):
        LogitLens(hm).run("hi", decoders={"x": Decoder(tiny("gpt2"))}, progress=False)


def test_the_default_memory_budget_follows_the_device(monkeypatch):
    from lens_widget import engine

    assert engine.default_memory_budget(torch.device("cpu")) == engine.DEFAULT_MEMORY_BUDGET
    assert LogitLens(tiny("llama")).memory_budget == engine.DEFAULT_MEMORY_BUDGET
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (40 * 2**30, 80 * 2**30))
    assert engine.default_memory_budget(torch.device("cuda:0")) == 10 * 2**30  # a quarter of the free memory
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (120 * 2**30, 141 * 2**30))
    assert engine.default_memory_budget(torch.device("cuda:0")) == engine.GPU_BUDGET_CAP
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**20, 2**30))
    assert engine.default_memory_budget(torch.device("cuda:0")) == engine.DEFAULT_MEMORY_BUDGET
