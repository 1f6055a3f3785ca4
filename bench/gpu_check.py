"""The lens on a CUDA device: exactness per architecture, fused (Triton) vs eager, bf16, and speed.

    PYTHONPATH=. python bench/gpu_check.py [--out DIR]

Needs only torch, transformers, tokenizers, numpy, pandas, tqdm (no notebook stack). Checks that
every tiny registry architecture moved to the GPU reproduces the model's logits (lens of the
last block) and agrees with the CPU lens (identical top-k ids and ranks; probabilities, entropy,
KL within 1e-4), then times a SmolLM2-shaped model (random weights: 30 layers, d=576,
V=49152) at 1024 and 4096 tokens: forward, the bare unembedding matmul of all rows (floor) and
the lens, with peak GPU memory. Writes gpu_check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import transformers as T

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from lens_widget import HookedModel, LogitLens  # noqa: E402
from zoo import CONFIGS, tiny  # noqa: E402

PROMPT = "The capital of France is Paris, and of Italy, Rome."


def exactness(dev: str) -> dict:
    rows = {}
    for arch in sorted(CONFIGS):
        cpu = tiny(arch)
        ref = LogitLens(cpu, compile=False).run(PROMPT, track=[5, 17], progress=False)
        gpu_model = T.AutoModelForCausalLM.from_config(cpu.model.config, attn_implementation="eager")
        gpu_model.load_state_dict(cpu.model.state_dict())
        hm = HookedModel.from_model(gpu_model.to(dev).eval(), cpu.tokenizer)
        row = {"check_lens": LogitLens(hm).check_lens(PROMPT)}
        for compiled in (True, False):
            r = LogitLens(hm, compile=compiled).run(PROMPT, track=[5, 17], progress=False)
            tag = "fused" if compiled else "eager"
            row[f"{tag}_topk_equal"] = float((r.topk_ids == ref.topk_ids).mean())
            row[f"{tag}_ranks_equal"] = float((r.next_rank == ref.next_rank).mean())
            row[f"{tag}_tracked_ranks_equal"] = float((r.tracked_rank == ref.tracked_rank).mean())
            row[f"{tag}_max_err"] = float(
                max(np.nanmax(np.abs(getattr(r, k) - getattr(ref, k))) for k in ("topk_probs", "entropy", "kl", "next_prob"))
            )
        rows[arch] = row
        print(arch, row, flush=True)
    return rows


def bf16(dev: str) -> dict:
    cpu = tiny("llama")
    m = T.AutoModelForCausalLM.from_config(cpu.model.config).to(torch.bfloat16)
    m.load_state_dict({k: v.to(torch.bfloat16) for k, v in cpu.model.state_dict().items()})
    hm = HookedModel.from_model(m.to(dev).eval(), cpu.tokenizer)
    r = LogitLens(hm).run(PROMPT, progress=False)
    return {
        "dtype_of_stats": str(r.topk_probs.dtype),
        "finite": bool(np.isfinite(r.entropy).all() and np.isfinite(r.kl).all()),
        "check_lens_bf16": LogitLens(hm).check_lens(PROMPT),
        "unembed_still_bf16": str(hm.model.get_output_embeddings().weight.dtype),
    }


def sync(dev: str) -> None:
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, dev: str, reps: int = 3) -> float:
    best = float("inf")
    for _ in range(reps):
        sync(dev)
        t0 = time.perf_counter()
        fn()
        sync(dev)
        best = min(best, time.perf_counter() - t0)
    return best


def speed(dev: str, lengths: list[int]) -> dict:
    cfg = T.LlamaConfig(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                        num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, tie_word_embeddings=True)
    torch.manual_seed(0)
    model = T.AutoModelForCausalLM.from_config(cfg).to(dev).eval()
    from zoo import char_tokenizer

    hm = HookedModel.from_model(model, char_tokenizer())
    out = {}
    for n in lengths:
        ids = torch.randint(0, 49152, (n,)).tolist()
        batch = hm.pad([ids])
        lens = LogitLens(hm, memory_budget=2 * 2**30)
        lens.run(ids[:64], progress=False)  # compile + warm up
        with torch.inference_mode():
            fwd = timed(lambda: model(input_ids=batch.input_ids.to(dev), use_cache=False, logits_to_keep=1), dev)
            x = torch.randn(31 * n, 576, device=dev)
            w = model.get_output_embeddings().weight
            buf = torch.empty(min(31 * n, 8192), 49152, device=dev)

            def floor():
                for i in range(0, x.shape[0], buf.shape[0]):
                    torch.matmul(x[i : i + buf.shape[0]], w.T, out=buf[: x[i : i + buf.shape[0]].shape[0]])

            flo = timed(floor, dev)
        torch.cuda.reset_peak_memory_stats() if dev.startswith("cuda") else None
        base = torch.cuda.memory_allocated() if dev.startswith("cuda") else 0
        t_lens = timed(lambda: lens.run(ids, k=10, progress=False), dev, reps=2)
        peak = (torch.cuda.max_memory_allocated() - base) if dev.startswith("cuda") else 0
        out[n] = {
            "forward_s": fwd,
            "floor_matmul_s": flo,
            "lens_s": t_lens,
            "lens_over_forward_plus_floor": t_lens / (fwd + flo),
            "peak_gpu_mem_growth_mb": peak / 2**20,
            "naive_logits_tensor_would_be_mb": 31 * n * 49152 * 4 / 2**20,
        }
        print(n, out[n], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "bench/out"))
    ap.add_argument("--lengths", default="1024,4096")
    args = ap.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    report = {"device": torch.cuda.get_device_name() if dev == "cuda" else "cpu", "torch": torch.__version__, "transformers": T.__version__}
    report["exactness"] = exactness(dev)
    report["bf16"] = bf16(dev)
    print("bf16", report["bf16"], flush=True)
    report["speed"] = speed(dev, [int(x) for x in args.lengths.split(",")])
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_check.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
