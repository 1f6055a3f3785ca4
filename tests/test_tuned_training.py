"""Training a tuned lens on a tiny model: the chunked loss and its gradient are exact, the loss
goes down, a resumed run ends with the same weights, a seed makes runs repeat, running out of
text stops cleanly, and the CLI writes a loadable lens."""

from __future__ import annotations

import torch

from lens_widget.tuned_lens import TunedLens
from lens_widget.tuned_training import ChunkedUnembedKL, TrainingLog, held_out_kl, regression_init
from zoo import tiny

TEXTS = [f"Line {i}: the quick brown fox jumps over the lazy dog, {i * 7 % 13} times." for i in range(400)]
FAST = dict(tokens_per_step=128, seq_len=64, progress=False)


def test_chunked_loss_and_gradient_match_autograd():
    g = torch.Generator().manual_seed(0)
    N, d, V = 37, 8, 29
    x = torch.randn(N, d, generator=g, dtype=torch.float64)
    W = torch.randn(V, d, generator=g, dtype=torch.float64)
    b = torch.randn(V, generator=g, dtype=torch.float64)
    p = torch.softmax(torch.randn(N, V, generator=g, dtype=torch.float64) * 3, -1)
    neg_h = (p * p.log()).sum(-1)
    for cap in (None, 2.5):
        xa = x.clone().requires_grad_(True)
        z = xa @ W.T + b
        if cap:
            z = torch.tanh(z / cap) * cap
        ref = (p * (p.log() - torch.log_softmax(z, -1))).sum(-1).mean()
        ref.backward()
        xb = x.float().clone().requires_grad_(True)
        loss = ChunkedUnembedKL.apply(xb, W.float(), b.float(), cap, p.float(), neg_h.float(), 5, None)
        (loss * 3).backward()  # backward scales the saved gradient
        torch.testing.assert_close(loss.double(), ref.detach(), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(xb.grad.double(), 3 * xa.grad, atol=1e-5, rtol=1e-4)


def test_loss_goes_down_and_held_out_kl_improves():
    hm = tiny("llama")
    log = TrainingLog()
    lens = TunedLens.train(hm, TEXTS[:300], steps=30, log=log, **FAST)
    first, last = log[0]["loss"], sum(r["loss"] for r in log[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    assert len(log[0]["loss_by_layer"]) == hm.num_layers and log[-1]["tokens"] == 30 * 128
    kl = held_out_kl(hm, {"logit lens": None, "tuned lens": lens}, TEXTS[300:], seq_len=64, max_tokens=640)
    assert kl["tokens"] == 640 and kl["sites"] == hm.default_sites()
    # (the last block's entry is 0 by definition: held_out_kl never computes it, so nothing to check there)
    assert all(len(kl["kl"][name]) == len(kl["sites"]) for name in kl["kl"])
    assert min(kl["kl"]["tuned lens"][:-1]) > 0  # computed, not a placeholder
    assert all(t < l for t, l in zip(kl["kl"]["tuned lens"][:-1], kl["kl"]["logit lens"][:-1]))


def _weights(lens: TunedLens) -> list[torch.Tensor]:
    return [p.detach().clone() for p in lens.parameters()]


def test_seed_determinism_and_adam():
    hm = tiny("gpt2")
    a = _weights(TunedLens.train(hm, TEXTS, steps=6, seed=3, **FAST))
    b = _weights(TunedLens.train(hm, TEXTS, steps=6, seed=3, **FAST))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert any(x.abs().sum() > 0 for x in a)
    c = _weights(TunedLens.train(hm, TEXTS, steps=6, optimizer="adam", **FAST))
    assert not all(torch.equal(x, y) for x, y in zip(a, c))


def test_resume_gives_the_same_weights(tmp_path):
    hm = tiny("llama")
    straight = _weights(TunedLens.train(hm, TEXTS, steps=8, **FAST))
    ckpt = tmp_path / "ckpt.pt"
    half = TunedLens.train(hm, TEXTS, steps=8, checkpoint=ckpt, checkpoint_every=2, stop_after=3, **FAST)
    assert half.trained_steps == 3 and ckpt.exists()
    resumed = TunedLens.train(hm, TEXTS, steps=8, checkpoint=ckpt, **FAST)
    assert resumed.trained_steps == 8
    assert all(torch.equal(x, y) for x, y in zip(straight, _weights(resumed)))
    # a finished checkpoint resumes to the same lens again, without training
    again = TunedLens.train(hm, TEXTS, steps=8, checkpoint=ckpt, **FAST)
    assert all(torch.equal(x, y) for x, y in zip(straight, _weights(again)))


def test_text_running_out_stops_cleanly(capsys):
    hm = tiny("llama")
    log = TrainingLog()
    lens = TunedLens.train(hm, TEXTS[:20], steps=50, log=log, **FAST)
    err = capsys.readouterr().err
    assert "the text ran out after" in err and "of 50 steps" in err
    assert 0 < lens.trained_steps == len(log) < 50


def test_dicts_and_datasets_like_iterables():
    hm = tiny("llama")
    rows = [{"text": t, "id": i} for i, t in enumerate(TEXTS)]
    a = _weights(TunedLens.train(hm, rows, steps=3, **FAST))
    b = _weights(TunedLens.train(hm, iter(TEXTS), steps=3, **FAST))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    c = _weights(TunedLens.train(hm, [{"body": t} for t in TEXTS], steps=3, column="body", **FAST))
    assert all(torch.equal(x, y) for x, y in zip(a, c))


def test_regression_init_beats_zero():
    hm = tiny("llama")
    lens = regression_init(hm, TEXTS[:300], tokens=2048, seq_len=64, progress=False, lens=TunedLens(hm))
    kl = held_out_kl(hm, {"logit lens": None, "tuned lens": lens}, TEXTS[300:], seq_len=64, max_tokens=640)
    assert sum(kl["kl"]["tuned lens"]) < sum(kl["kl"]["logit lens"])


def test_classmethod_and_cli(tmp_path):
    hm = tiny("llama")
    lens = TunedLens.train(hm, TEXTS, steps=2, **FAST)
    assert isinstance(lens, TunedLens) and lens.trained_steps == 2
    import json

    from lens_widget.cli import main

    model_dir = tmp_path / "model"
    hm.model.save_pretrained(model_dir)
    hm.tokenizer.save_pretrained(model_dir)
    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(TEXTS))
    out = tmp_path / "lens"
    argv = ["train-tuned-lens", "--out", str(out), "--model", str(model_dir), "--text", str(text), "--steps", "3",
            "--tokens-per-step", "128", "--seq-len", "64", "--init", "regression", "--init-tokens", "512"]
    assert main(argv) == 0
    loaded = TunedLens.from_pretrained(out, hm)
    report = json.loads((out / "training.json").read_text())
    assert report["steps"] == 3 and len(report["log"]) == 3 and report["args"]["init"] == "regression"
    assert any(p.abs().sum() > 0 for p in loaded.parameters())
    assert main(["train-tuned-lens", "--out", str(out), "--model", str(tmp_path / "nope"), "--steps", "1"]) == 2
