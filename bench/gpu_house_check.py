"""The refactored engine on a CUDA device, in one short run (≤ 3 minutes on an H200): the one chunk
loop, several lenses from one pass, interventions, patching and attribution on tiny models of
several architectures, each against the same computation on the CPU; then the grid of a
Llama-3-8B-shaped bf16 model (random weights from a config) at 4096 tokens with the device's
default scratch budget, against the forward pass and the float32 unembedding floor.

    PYTHONPATH=. python bench/gpu_house_check.py [--out bench/results/gpu_house_check.json] [--tokens 4096]

Needs only torch, transformers, numpy, pandas, tqdm (no notebook stack). Runs on the CPU too
(``--device cpu --tokens 64 --small``: a smoke test).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from lens_widget import HookedModel, LogitLens  # noqa: E402
from lens_widget.decoders import Decoder  # noqa: E402
from zoo import char_tokenizer, jittered_lens, tiny  # noqa: E402

ARCHS = ["llama", "gpt2", "gemma2", "qwen3", "gpt_neox", "opt"]


class Scaled(Decoder):
    name = "scaled"

    def translate(self, h, site):
        return h * 0.7


def on(device: str, arch: str) -> HookedModel:
    import copy

    hm = tiny(arch)
    return HookedModel.from_model(copy.deepcopy(hm.model).to(device).eval(), char_tokenizer(), name=f"tiny-{arch}")


def same(a, b, tol=2e-4) -> dict:
    out = {"ids": bool(np.array_equal(a.topk_ids, b.topk_ids)), "ranks_equal_frac": float((a.next_rank == b.next_rank).mean()),
           "max_prob_diff": float(np.nanmax(np.abs(a.topk_probs - b.topk_probs)))}
    out["ok"] = out["ids"] and out["ranks_equal_frac"] > 0.99 and out["max_prob_diff"] < tol
    return out


def correctness(device: str) -> dict:
    res = {}
    prompt, other = "The cat sat on the mat", "A dog ran in the park!"
    for arch in ARCHS:
        cpu, dev = on("cpu", arch), on(device, arch)
        r = {}
        lc, ld = LogitLens(cpu, compile="never"), LogitLens(dev, compile="never")
        r["grid"] = same(ld.run(prompt, track=[7], progress=False), lc.run(prompt, track=[7], progress=False))
        two = ld.run(prompt, decoders={"logit": None, "scaled": Scaled(dev)}, progress=False)
        r["one_pass_scaled"] = same(two["scaled"], LogitLens(cpu, compile="never", decoder=Scaled(cpu)).run(prompt, progress=False))
        pc, pd = lc.patch(other, prompt, "resid_out_1", 5, 3), ld.patch(other, prompt, "resid_out_1", 5, 3)
        r["patch"] = same(pd.patched, pc.patched)
        cone = pd.in_cone()
        r["patch"]["outside_cone_equal_clean"] = bool(np.array_equal(pd.patched.topk_ids[0][~cone], pd.clean.topk_ids[0][~cone]))
        ac, ad = lc.attribute(prompt, "resid_out_1", -1), ld.attribute(prompt, "resid_out_1", -1)
        r["attribution"] = {"max_row_diff": float(np.max(np.abs(ac["contribution"].to_numpy() - ad["contribution"].to_numpy()))),
                            "sum_error": float(ad.attrs["error"])}
        r["attribution"]["ok"] = r["attribution"]["max_row_diff"] < 1e-3 and abs(r["attribution"]["sum_error"]) < 1e-4
        # the sweep's batched patched forwards (one token_logits call) and a J lens's matrices, on the device
        sc, sd = lc.patch_sweep(other, prompt, ("a", "e"), progress=False), ld.patch_sweep(other, prompt, ("a", "e"), progress=False)
        r["sweep"] = {"max_patched_ld_diff": float(np.nanmax(np.abs(sc.patched_ld - sd.patched_ld))), "forwards": int(sd.meta["forwards"])}
        r["sweep"]["ok"] = r["sweep"]["max_patched_ld_diff"] < 1e-3
        jc, jd = jittered_lens(cpu), jittered_lens(dev)
        r["jlens"] = same(LogitLens(dev, compile="never", decoder=jd).run(prompt, progress=False),
                          LogitLens(cpu, compile="never", decoder=jc).run(prompt, progress=False))
        res[arch] = r
    return res


def speed(device: str, tokens: int, small: bool) -> dict:
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = (LlamaConfig(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2, vocab_size=4096)
           if small else LlamaConfig(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                                     num_key_value_heads=8, vocab_size=128256, max_position_embeddings=8192))
    torch.manual_seed(0)
    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    with torch.device(device):
        model = LlamaForCausalLM(cfg).to(dtype).eval()
    hm = HookedModel.from_model(model, char_tokenizer(), name="llama3-8b-shaped")
    ids = torch.randint(0, cfg.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(1))
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    lens = LogitLens(hm, compile="never")

    def timed(fn, n=2):
        fn()
        sync()
        best = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            sync()
            best.append(time.perf_counter() - t0)
        return min(best)

    with torch.inference_mode():
        fwd = timed(lambda: model(input_ids=ids.to(device), use_cache=False, logits_to_keep=1))
        S = cfg.num_hidden_layers + 1
        x = torch.randn(S * tokens, cfg.hidden_size, device=device)
        W = model.get_output_embeddings().weight
        dec = Decoder(hm)
        out = torch.empty(min(S * tokens, 4096), cfg.vocab_size, device=device)

        def floor():
            with dec.loaded():
                for i in range(0, x.shape[0], out.shape[0]):
                    dec.unembedding.unembed(x[i : i + out.shape[0]], out=out[: min(out.shape[0], x.shape[0] - i)])

        fl = timed(floor, 1)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() if device == "cuda" else 0
        grid = timed(lambda: lens.run(ids[0].tolist(), progress=False), 1)
        peak = (torch.cuda.max_memory_allocated() - base) / 2**30 if device == "cuda" else None
        compiled = LogitLens(hm, compile="always")  # compiled before the first run: its compile is not timed
        grid_compiled = timed(lambda: compiled.run(ids[0].tolist(), progress=False), 1)
    return {"tokens": tokens, "sites": S, "memory_budget_gb": lens.memory_budget / 2**30, "forward_s": fwd, "float32_floor_s": fl,
            "lens_eager_s": grid, "lens_compiled_s": grid_compiled, "lens_eager_over_forward_plus_floor": grid / (fwd + fl),
            "lens_compiled_over_forward_plus_floor": grid_compiled / (fwd + fl), "lens_eager_peak_gb": peak, "weight_dtype": str(W.dtype)}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--tokens", type=int, default=4096)
    ap.add_argument("--small", action="store_true")
    ap.add_argument("--skip-correctness", action="store_true")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_house_check.json"))
    args = ap.parse_args()
    t0 = time.perf_counter()
    report = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", "torch": torch.__version__}
    import transformers

    report["transformers"] = transformers.__version__
    report["correctness"] = {} if args.skip_correctness else correctness(args.device)
    report["all_ok"] = all(v.get("ok", True) for r in report["correctness"].values() for v in r.values() if isinstance(v, dict))
    print("correctness all ok:", report["all_ok"], f"({time.perf_counter() - t0:.1f} s)", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=1))
    report["speed"] = speed(args.device, args.tokens, args.small)
    report["wall_s"] = time.perf_counter() - t0
    Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report["speed"], indent=1))
    if not report["all_ok"]:
        print(json.dumps(report["correctness"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
