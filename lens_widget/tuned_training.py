"""Training a tuned lens here, with tuned-lens's recipe, memory-bounded like the engine.

The recipe (AlignmentResearch/tuned-lens ``scripts/train_loop.py``): forward KL(final ‖ lens)
over every position, each layer's translator from its own loss, SGD with Nesterov momentum 0.9
at lr ``1.0 × (1 − 0.9)``, weight decay 1e-3, linear decay to 0, gradient norm clipped to 1.0
(Adam as an option).

Memory: no ``layers × tokens × vocab`` tensor ever exists. One step records every block boundary
once (``(L + 1) × tokens × d``), computes the final distribution ``p`` once (``tokens × V``,
chunked), then trains one layer at a time; the unembedding is frozen, so the loss's gradient at the
prepared vector is ``(softmax(z) − p) @ W`` — :class:`ChunkedUnembedKL` computes it chunk by chunk
in the forward pass (one matmul back, no weight gradient, no logits kept), and backward only
scales it. float32 throughout: on this CPU (AVX-512 BF16 but no AMX) bf16 matmuls measured
slower than float32 (0.39 s vs 0.28 s for 256 × 576 × 49152), so autocast would cost time and
accuracy here; ``matmul_dtype=torch.bfloat16`` is an option for machines where it pays.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch

from .decoders import Decoder
from .hooked import HookedModel, as_hooked_model
from .lens_files import save_atomic
from .sites import select_matrix

__all__ = ["train_tuned_lens", "ChunkedUnembedKL", "token_stream", "held_out_kl", "TrainingLog"]


# -- texts -> fixed-length token rows ------------------------------------------------------------
def _text_of(item: Any, column: str) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict):
        if column not in item:
            raise KeyError(f"a text item has no {column!r} field (it has {', '.join(map(str, item))}); pass column=...")
        return str(item[column])
    raise TypeError(f"texts must be strings or dicts with a {column!r} field, got {type(item).__name__}")


def token_stream(model: HookedModel, texts: Iterable[Any], seq_len: int, column: str = "text") -> Iterator[list[int]]:
    """Rows of exactly ``seq_len`` token ids: texts tokenized without special tokens, joined
    with the end-of-text token (where the tokenizer has one), cut into rows (the tail that does
    not fill a row is dropped). ``texts``: strings, dicts (``column``), or a ``datasets`` dataset."""
    tok = model.tokenizer
    eos = getattr(tok, "eos_token_id", None)
    buf: list[int] = []
    for item in texts:
        text = _text_of(item, column)
        if not text:
            continue
        buf.extend(tok(text, add_special_tokens=False)["input_ids"])
        if eos is not None:
            buf.append(int(eos))
        while len(buf) >= seq_len:
            yield buf[:seq_len]
            buf = buf[seq_len:]


# -- the loss -------------------------------------------------------------------------------------------
class ChunkedUnembedKL(torch.autograd.Function):
    """Mean over rows of KL(p ‖ softmax(unembed(x))), with its gradient at ``x``.

    ``x [N, d]`` prepared vectors (after the final norm), ``weight [V, d]`` the frozen
    unembedding, ``p [N, V]`` the target distribution and ``neg_h [N]`` = Σ p log p. Rows are
    processed ``chunk`` at a time: logits of one chunk exist at once, never of all rows. The
    gradient ``(softmax(z) − p) @ W / N`` (times the soft-cap's derivative) is computed in the
    forward pass, so backward is a scaling: one matmul forward, one back, nothing recomputed.
    """

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, softcap: float | None,
                p: torch.Tensor, neg_h: torch.Tensor, chunk: int, matmul_dtype: torch.dtype | None) -> torch.Tensor:
        N = x.shape[0]
        grad = torch.empty_like(x, dtype=torch.float32)
        total = torch.zeros((), dtype=torch.float64, device=x.device)
        w = weight if matmul_dtype is None else weight.to(matmul_dtype)
        for i in range(0, N, chunk):
            xc = x[i : i + chunk]
            z = (xc if matmul_dtype is None else xc.to(matmul_dtype)) @ w.T
            z = z.float()
            if bias is not None:
                z.add_(bias)
            if softcap is not None:
                z.div_(softcap).tanh_()
                dcap = 1 - z * z  # d(c·tanh(u/c))/du
                z.mul_(softcap)
            pc = p[i : i + chunk]
            z.sub_(torch.logsumexp(z, -1, keepdim=True))  # log q
            cross = (pc * z).sum(-1)  # Σ p log q
            total += (neg_h[i : i + chunk] - cross).sum(dtype=torch.float64)
            z.exp_().sub_(pc)  # softmax − p
            if softcap is not None:
                z.mul_(dcap)
            g = z if matmul_dtype is None else z.to(matmul_dtype)
            grad[i : i + chunk] = (g @ w).float()
        grad.div_(N)
        ctx.save_for_backward(grad)
        return (total / N).to(torch.float32)

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor):  # type: ignore[override]
        (grad,) = ctx.saved_tensors
        return grad * grad_out, None, None, None, None, None, None, None


@torch.no_grad()
def final_targets(decoder: Decoder, h_final: torch.Tensor, site: str, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``p [N, V]`` (the model's own next-token distribution) and ``Σ p log p [N]``, chunked."""
    N = h_final.shape[0]
    p = torch.empty(N, decoder.vocab, dtype=torch.float32, device=decoder.device)
    neg_h = torch.empty(N, dtype=torch.float32, device=decoder.device)
    for i in range(0, N, chunk):
        z = decoder.unembed(decoder.prepare(h_final[i : i + chunk], site))
        logp = torch.log_softmax(z, -1)
        p[i : i + chunk] = logp.exp()
        neg_h[i : i + chunk] = torch.where(p[i : i + chunk] > 0, p[i : i + chunk] * logp, 0).sum(-1)
    return p, neg_h


# -- the loop -------------------------------------------------------------------------------------------
class TrainingLog(list):
    """Per-step records: ``{"step", "loss", "loss_by_layer", "lr", "tokens", "seconds"}``."""


def _sites(n_layers: int) -> list[str]:
    return ["embed"] + [f"resid_out_{i}" for i in range(n_layers)]


def _record(model: HookedModel, rows: list[list[int]]) -> dict[str, torch.Tensor]:
    batch = model.pad(rows)
    select, _ = select_matrix([list(range(len(r))) for r in rows])
    return model.record(batch, _sites(model.num_layers), select).acts


def _make_optimizer(params: list[torch.nn.Parameter], optimizer: str, lr: float | None, momentum: float, weight_decay: float):
    if optimizer == "sgd":
        lr = 1.0 if lr is None else lr
        return torch.optim.SGD(params, lr=lr * (1 - momentum), momentum=momentum, nesterov=True, weight_decay=weight_decay)
    if optimizer == "adam":
        return torch.optim.Adam(params, lr=1e-3 if lr is None else lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {optimizer!r}")


def train_tuned_lens(
    model: Any,
    texts: Iterable[Any],
    *,
    steps: int = 100,
    tokens_per_step: int = 512,
    seq_len: int = 256,
    optimizer: str = "sgd",
    lr: float | None = None,
    momentum: float = 0.9,
    weight_decay: float = 1e-3,
    warmup_steps: int = 0,
    clip: float = 1.0,
    seed: int = 0,
    column: str = "text",
    lens: Any = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int = 10,
    resume: bool = True,
    stop_after: int | None = None,
    chunk: int = 256,
    matmul_dtype: torch.dtype | None = None,
    progress: bool = True,
    log: TrainingLog | None = None,
    callback: Callable[[dict[str, Any]], None] | None = None,
) -> Any:
    """Train a :class:`~lens_widget.tuned_lens.TunedLens` on ``texts`` (tuned-lens's recipe).

    Args:
        model: a :class:`HookedModel` or a ``transformers`` causal LM.
        texts: strings, dicts with a ``column`` field, or a ``datasets`` dataset; read once, in
            order, as rows of ``seq_len`` tokens (see :func:`token_stream`).
        steps: optimizer steps (the linear decay reaches 0 at ``steps``); each takes
            ``tokens_per_step`` tokens (rounded up to whole rows).
        optimizer: ``"sgd"`` (Nesterov, lr ``lr × (1 − momentum)``, default ``lr`` 1.0) or
            ``"adam"`` (default ``lr`` 1e-3).
        seed: seeds torch before training (the recipe itself draws nothing at random: with the
            same texts and seed two runs give the same weights bit for bit).
        lens: start from this lens (default: zero translators, i.e. the logit lens).
        checkpoint: a file written every ``checkpoint_every`` steps and at the end (lens,
            optimizer, schedule, how much text was read); with ``resume`` an existing one is
            continued from, giving the same weights as an uninterrupted run.
        stop_after: stop after this many steps in this call (checkpointed), e.g. to time-box.
        chunk: rows per logits chunk (memory: about ``3 × chunk × V × 4`` bytes).
        matmul_dtype: e.g. ``torch.bfloat16`` for the two big matmuls (softmax and KL stay
            float32); default float32.
        log: a :class:`TrainingLog` (list) that receives one record per step.

    When the text runs out before ``steps`` the loop stops cleanly, saying so on stderr (and
    checkpoints). Returns the lens.
    """
    from tqdm.auto import tqdm

    hm = as_hooked_model(model)
    torch.manual_seed(seed)
    if lens is None:
        raise ValueError("pass lens=TunedLens(model) (the lens to train; TunedLens.train does)")
    if any(p.is_inference() for p in lens.parameters()):
        raise ValueError("lens= has inference-mode tensors (made under torch.inference_mode()); build it outside")
    if lens.model is not hm and lens.model.model is not hm.model:
        raise ValueError("lens= was built for another model")
    if hm.max_length:
        seq_len = min(seq_len, hm.max_length)
    rows_per_step = max(1, math.ceil(tokens_per_step / seq_len))
    params = list(lens.parameters())
    opt = _make_optimizer(params, optimizer, lr, momentum, weight_decay)

    def schedule(step: int) -> float:
        if warmup_steps and step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, 1.0 - (step - warmup_steps) / max(1, steps - warmup_steps))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
    start, rows_read = 0, 0
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and resume and ckpt.exists():
        state = torch.load(ckpt, weights_only=True, map_location="cpu")
        if state.get("steps") != steps or state.get("seq_len") != seq_len or state.get("rows_per_step") != rows_per_step:
            raise ValueError(
                f"{ckpt} was written by a run with steps={state.get('steps')}, seq_len={state.get('seq_len')}, "
                f"rows_per_step={state.get('rows_per_step')}; this one has {steps}, {seq_len}, {rows_per_step} "
                "(resume=False starts afresh)"
            )
        lens.load_state_dict(state["lens"], source=str(ckpt))
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, rows_read = int(state["step"]), int(state["rows_read"])
        torch.set_rng_state(state["rng"])

    def checkpoint_now(step: int) -> None:
        if ckpt is not None:
            save_atomic({
                "lens": lens.state_dict(), "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                "step": step, "rows_read": rows_read, "rng": torch.get_rng_state(),
                "steps": steps, "seq_len": seq_len, "rows_per_step": rows_per_step,
            }, ckpt)

    rows = token_stream(hm, texts, seq_len, column)
    for _ in range(rows_read):  # resume: skip the text already trained on
        if next(rows, None) is None:
            break
    L = hm.num_layers
    sites = _sites(L)
    frozen = [(p, p.requires_grad) for p in hm.model.parameters()]
    end = steps if stop_after is None else min(steps, start + int(stop_after))
    bar = tqdm(total=steps, initial=start, desc="Tuned lens", unit="step", disable=not progress)
    running = None
    step = start
    try:
        for p, _ in frozen:
            p.requires_grad_(False)
        with lens.loaded():
            while step < end:
                t0 = time.perf_counter()
                batch_rows = [r for r in (next(rows, None) for _ in range(rows_per_step)) if r is not None]
                if len(batch_rows) < rows_per_step:
                    msg = (f"tuned lens: the text ran out after {step} of {steps} steps "
                           f"({rows_read * seq_len} tokens read); stopping here")
                    bar.write(msg, file=sys.stderr) if progress else print(msg, file=sys.stderr)
                    break
                rows_read += rows_per_step
                acts = _record(hm, batch_rows)
                flat = {s: acts[s].reshape(-1, acts[s].shape[-1]) for s in sites}
                p, neg_h = final_targets(lens, flat[sites[-1]], sites[-1], chunk)
                losses = []
                for i in range(L):
                    x = flat[sites[i]].clone()  # out of inference mode, for autograd
                    with torch.enable_grad():
                        xp = lens.prepare(x, sites[i])
                        loss = ChunkedUnembedKL.apply(xp, lens.weight, lens.head_bias, lens.softcap, p, neg_h, chunk, matmul_dtype)
                        loss.backward()
                    losses.append(float(loss.detach()))
                del p, neg_h, acts, flat
                if clip:
                    torch.nn.utils.clip_grad_norm_(params, clip)
                lr_now = opt.param_groups[0]["lr"]
                opt.step()
                opt.zero_grad(set_to_none=True)
                sched.step()
                step += 1
                mean = sum(losses) / len(losses)
                running = mean if running is None else 0.9 * running + 0.1 * mean
                record = {"step": step, "loss": mean, "loss_by_layer": losses, "lr": lr_now,
                          "tokens": rows_read * seq_len, "seconds": time.perf_counter() - t0}
                if log is not None:
                    log.append(record)
                if callback is not None:
                    callback(record)
                bar.set_postfix(loss=f"{running:.3f}")
                bar.update(1)
                if checkpoint_every and step % checkpoint_every == 0:
                    checkpoint_now(step)
    finally:
        bar.close()
        for p, flag in frozen:
            p.requires_grad_(flag)
    checkpoint_now(step)
    lens.trained_steps = step
    return lens


# -- an optional warm start ------------------------------------------------------------------------------
def regression_init(
    model: Any,
    texts: Iterable[Any],
    *,
    tokens: int = 32768,
    seq_len: int = 256,
    column: str = "text",
    ridge: float = 1e-3,
    lens: Any = None,
    progress: bool = True,
) -> Any:
    """A warm start (not part of tuned-lens's recipe, which starts from zero): each translator
    set by weighted least squares so that ``h_i + W_i h_i + b_i`` matches the last block's output
    ``h_L`` (weights ``1 / ‖h_L‖²``: the final norm ignores scale). Costs only forward passes and
    ``d × d`` sums (no vocabulary matmul); the KL training then refines it. Deterministic."""
    from tqdm.auto import tqdm

    hm = as_hooked_model(model)
    if lens is None:
        raise ValueError("pass lens=TunedLens(model) (the lens to fit)")
    if hm.max_length:
        seq_len = min(seq_len, hm.max_length)
    L, d = hm.num_layers, lens.d_model
    sites = _sites(L)
    A = torch.zeros(L, d + 1, d + 1, dtype=torch.float64)
    B = torch.zeros(L, d + 1, d, dtype=torch.float64)
    n = 0
    rows = token_stream(hm, texts, seq_len, column)
    bar = tqdm(total=tokens, desc="regression init", unit="tok", disable=not progress)
    while n < tokens:
        row = next(rows, None)
        if row is None:
            break
        acts = _record(hm, [row])  # inference tensors: only read here
        target = acts[sites[-1]][0].double()
        w = target.pow(2).mean(-1, keepdim=True).rsqrt()  # 1 / rms(h_L): scale-free residuals
        for i in range(L):
            x = acts[sites[i]][0].double()
            xa = torch.cat([x, torch.ones_like(x[:, :1])], 1) * w
            A[i] += xa.T @ xa
            B[i] += xa.T @ ((target - x) * w)
        n += len(row)
        bar.update(len(row))
    bar.close()
    if n == 0:
        raise ValueError("regression_init: the texts gave no full row of tokens")
    eye = torch.eye(d + 1, dtype=torch.float64)
    with torch.no_grad():
        for i, t in enumerate(lens.translators):
            reg = ridge * A[i].diagonal().mean() * eye
            theta = torch.linalg.solve(A[i] + reg, B[i])  # [d + 1, d]
            t.weight.copy_(theta[:d].T.float())
            if t.bias is not None:
                t.bias.copy_(theta[d].float())
    return lens


# -- held-out evaluation -------------------------------------------------------------------------------
@torch.inference_mode()
def held_out_kl(
    model: Any,
    decoders: dict[str, Decoder | None],
    texts: Iterable[Any],
    *,
    seq_len: int = 256,
    max_tokens: int = 4096,
    column: str = "text",
    chunk: int = 256,
    progress: bool = False,
) -> dict[str, Any]:
    """Mean KL(final ‖ lens) per site (nats) of each decoder on held-out ``texts``, all positions.

    ``decoders``: ``{"logit lens": None, "tuned lens": lens}`` (``None`` = the logit lens).
    Returns ``{"sites", "kl": {name: [per site]}, "tokens", "model"}`` (JSON-ready; what
    :func:`lens_widget.plots.kl_by_layer` draws). The last block's KL is 0 by definition.
    """
    from tqdm.auto import tqdm

    hm = as_hooked_model(model)
    decs = {name: (Decoder(hm) if d is None else d) for name, d in decoders.items()}
    if hm.max_length:
        seq_len = min(seq_len, hm.max_length)
    sites = _sites(hm.num_layers)
    sums = {name: torch.zeros(len(sites), dtype=torch.float64) for name in decs}
    n = 0
    rows = token_stream(hm, texts, seq_len, column)
    bar = tqdm(total=max_tokens, desc="held-out KL", unit="tok", disable=not progress)
    ref = next(iter(decs.values()))
    with ref.loaded():
        while n < max_tokens:
            row = next(rows, None)
            if row is None:
                break
            row = row[: max_tokens - n]
            acts = _record(hm, [row])
            flat = {s: acts[s][0] for s in sites}
            p, neg_h = final_targets(ref, flat[sites[-1]], sites[-1], chunk)
            logp = torch.where(p > 0, p.log(), 0)
            for name, dec in decs.items():
                with dec.loaded():
                    for j, s in enumerate(sites[:-1]):
                        for i in range(0, len(row), chunk):
                            logq = torch.log_softmax(dec.logits(flat[s][i : i + chunk], s), -1)
                            kl = (p[i : i + chunk] * (logp[i : i + chunk] - logq)).sum(-1)
                            sums[name][j] += kl.sum(dtype=torch.float64)
            n += len(row)
            bar.update(len(row))
    bar.close()
    if n == 0:
        raise ValueError("held_out_kl: the texts gave no full row of tokens")
    return {
        "model": hm.name,
        "sites": sites,
        "tokens": n,
        "kl": {name: (s / n).tolist() for name, s in sums.items()},
    }
