"""Past one device: the lens on an accelerate-offloaded model and through nnsight, against the plain
hook path, in one process at N tokens; and what comes back per cell for a 70B-shaped model.

Variants, all on the embedded SmolLM2-135M (float32), one prompt of exactly N tokens of prose,
every cell of 31 sites x N positions, k=10; repeats interleaved (a noisy neighbour on the shared
cores hits all variants alike), median reported, every variant checked equal to ``hooks``:

* ``hooks``        -- the plain load, ``LogitLens(hm, compile="never").run(ids)``.
* ``offload_disk`` -- loaded with the issue's map, ``{"model.embed_tokens": "disk",
  "model.layers": "cpu", "model.norm": "disk", "lm_head": "disk"}`` and an ``offload_folder``:
  embedding, final norm and unembedding are read from disk by accelerate's hooks.
* ``offload_cpu``  -- accelerate's ``cpu_offload`` of the whole model: every weight on ``meta``,
  loaded from a CPU state dict at each module call (what a GPU map with CPU offload does).
* ``nnsight``      -- ``HookedModel.from_nnsight(LanguageModel(model), remote=False)``: the lens
  runs inside the trace.
* ``nnsight_remote_local`` -- ``remote="local"``: the request is serialised exactly as for NDIF
  and run here.

Every variant is eager (``compile="never"``): once nnsight is imported, ``torch.compile`` of the
reductions falls back to eager anyway, and the in-trace lens is eager by design, so the ratios
compare like with like.

Bytes per cell (no model needed): a 70B-shaped result (80 block outputs, vocab 128,256, k=10,
14 tokens, as in logitlenskit's ``docs/DATA_FORMAT.md``), encoded by ``lens_widget.wire``
(kernel -> browser) and as the in-trace lens returns it (NDIF -> kernel, ``torch.save`` of the
reduced tensors).

    python bench/bigmodel_bench.py [--tokens 512] [--repeats 3]

Writes ``bench/results/bigmodel_bench.json``.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
from lens_bench import prompt_ids  # noqa: E402  (the same prose, cycled to N tokens)

K = 10
EXACT = ("topk_ids", "next_rank")
CLOSE = ("topk_probs", "entropy", "kl", "next_prob")
LOGITLENSKIT_BYTES = 491_000  # docs/DATA_FORMAT.md: 14 tokens x 80 layers of Llama-3.1-70B


def build_models(tmp: str) -> dict:
    from accelerate import cpu_offload
    from nnsight import LanguageModel

    from lens_widget import HookedModel
    from lens_widget.loading import default_model_path

    hm = HookedModel.default()
    dm = {"model.embed_tokens": "disk", "model.layers": "cpu", "model.norm": "disk", "lm_head": "disk"}
    disk = HookedModel.from_pretrained(default_model_path(), local_files_only=True, device_map=dm, offload_folder=f"{tmp}/off")
    whole = copy.deepcopy(hm.model)
    cpu_offload(whole, execution_device=torch.device("cpu"))
    assert all(p.device.type == "meta" for p in whole.parameters())
    lm = LanguageModel(hm.model, tokenizer=hm.tokenizer)
    return {
        "hooks": hm,
        "offload_disk": disk,
        "offload_cpu": HookedModel.from_model(whole, hm.tokenizer, name=hm.name),
        "nnsight": HookedModel.from_nnsight(lm, remote=False),
        "nnsight_remote_local": HookedModel.from_nnsight(lm, remote="local"),
    }


def timed(lens, ids) -> tuple[float, float, object]:
    """Wall and process CPU seconds of one grid (CPU time: what a busy neighbour disturbs least)."""
    t0, c0 = time.perf_counter(), time.process_time()
    res = lens.run(list(ids), k=K, progress=False)
    return time.perf_counter() - t0, time.process_time() - c0, res


def agreement(res, ref) -> dict:
    out = {key: bool(np.array_equal(getattr(res, key), getattr(ref, key))) for key in EXACT}
    for key in CLOSE:
        a, b = getattr(res, key), getattr(ref, key)
        out[f"{key}_max_abs"] = float(np.nanmax(np.abs(a - b)))
    return out


def bytes_per_cell(layers: int = 80, vocab: int = 128_256, tokens: int = 14, k: int = K) -> dict:
    """What one lens cell costs on each hop, for a model of this shape (random values, real layout)."""
    from lens_widget.result import LensResult
    from lens_widget.wire import result_to_wire

    rng = np.random.default_rng(0)
    S, P = layers, tokens
    ids = rng.integers(0, vocab, size=(1, P))
    f = lambda *shape: rng.random(shape, dtype=np.float32)  # noqa: E731
    res = LensResult(
        prompts=[""], input_ids=ids, lengths=np.array([P]), sites=[f"resid_out_{i}" for i in range(S)],
        positions=np.arange(P)[None], topk_ids=rng.integers(0, vocab, size=(1, S, P, k)),
        topk_probs=f(1, S, P, k), topk_logits=f(1, S, P, k), entropy=f(1, S, P),
        next_ids=np.concatenate([ids[:, 1:], [[-1]]], 1), next_prob=f(1, S, P), next_logit=f(1, S, P),
        next_rank=rng.integers(1, vocab, size=(1, S, P)), kl=f(1, S, P), tracked_ids=np.zeros(0, np.int64),
        tracked_prob=f(1, S, P, 0), tracked_logit=f(1, S, P, 0), tracked_rank=np.zeros((1, S, P, 0), np.int64),
        nonfinite=np.zeros((1, S, P), bool),
    )
    wire = result_to_wire(res)
    cell_keys = ("topk_ids", "topk_probs", "entropy", "next_prob", "next_rank", "kl", "nonfinite")
    wire_cells = sum(len(wire[key]["buffer"]) for key in cell_keys)
    distinct = len(wire["vocab_ids"]["buffer"]) // 4
    # NDIF -> kernel: what lens_widget.sources.intrace.lens_cells returns, serialised by torch
    i32 = torch.int32
    saved = {
        "topk_ids": torch.zeros(1, S, P, k, dtype=i32), "topk_probs": torch.zeros(1, S, P, k),
        "topk_logits": torch.zeros(1, S, P, k), "entropy": torch.zeros(1, S, P), "next_prob": torch.zeros(1, S, P),
        "next_logit": torch.zeros(1, S, P), "next_rank": torch.zeros(1, S, P, dtype=i32), "kl": torch.zeros(1, S, P),
        "nonfinite": torch.zeros(1, S, P, dtype=torch.bool),
    }
    buf = io.BytesIO()
    torch.save(saved, buf)
    cells = S * P
    return {
        "shape": {"layers": S, "vocab": vocab, "tokens": P, "k": k, "cells": cells},
        "wire_cell_bytes": wire_cells / cells,
        "wire_vocab_ids": distinct,
        "wire_cells_total_kb": wire_cells / 1000,
        "ndif_to_kernel_bytes_per_cell": len(buf.getvalue()) / cells,
        "ndif_to_kernel_total_kb": len(buf.getvalue()) / 1000,
        "logitlenskit_total_kb": LOGITLENSKIT_BYTES / 1000,
        "logitlenskit_bytes_per_cell": LOGITLENSKIT_BYTES / (80 * 14),
        "note": "vocabulary strings come on top: one string per distinct id in the grid (at most S*P*k + T)",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: CPU time is the work itself)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "bigmodel_bench.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from lens_widget import LogitLens

    with tempfile.TemporaryDirectory() as tmp:
        models = build_models(tmp)
        ids = prompt_ids(models["hooks"], args.tokens)
        lenses = {name: LogitLens(hm, compile="never") for name, hm in models.items()}
        for lens in lenses.values():  # warm-up: every path once at 16 tokens
            lens.run(ids[:16], k=K, progress=False)
        times: dict[str, list[float]] = {name: [] for name in lenses}
        cpu: dict[str, list[float]] = {name: [] for name in lenses}
        results = {}
        for rep in range(args.repeats):
            for name, lens in lenses.items():
                dt, ct, results[name] = timed(lens, ids)
                times[name].append(dt)
                cpu[name].append(ct)
                print(f"rep {rep} {name:22s} {dt:7.2f} s wall {ct:7.2f} s CPU", flush=True)
    med = {name: statistics.median(t) for name, t in times.items()}
    cpu_med = {name: statistics.median(t) for name, t in cpu.items()}
    out = {
        "env": {"torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor() or platform.machine(), "tokens": args.tokens, "repeats": args.repeats,
                "cells": len(results["hooks"].sites) * args.tokens},
        "seconds": {name: {"median": med[name], "all": times[name], "cpu_median": cpu_med[name], "cpu_all": cpu[name]} for name in times},
        "ratio_to_hooks": {name: med[name] / med["hooks"] for name in med},
        "cpu_ratio_to_hooks": {name: cpu_med[name] / cpu_med["hooks"] for name in cpu_med},
        "agreement_with_hooks": {name: agreement(results[name], results["hooks"]) for name in results if name != "hooks"},
        "bytes_per_cell_70b_shape": bytes_per_cell(),
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: out[k] for k in ("ratio_to_hooks", "cpu_ratio_to_hooks", "agreement_with_hooks", "bytes_per_cell_70b_shape")}, indent=1))


if __name__ == "__main__":
    main()
