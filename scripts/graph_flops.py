#!/usr/bin/env python3
"""Arithmetic of a `tamrt track` run: the multiply-add work (2 FLOP per multiply-add) of
every MatMul, Gemm and Conv node in the graphs, at the shapes of each call the tracker
made. A measurement aid for the performance notes, not used by tests or CI.

    RUST_LOG=tamrt=debug tamrt track --model-dir DIR ... > run.log 2>&1
    python scripts/graph_flops.py --model-dir DIR --log run.log [--gflops 209 | --sgemm]

The tracker's debug log has one `call <component>: <input>=[shape] ...` line per graph
call and a `propagation: start` line; calls before that line (the prompts) are left
out unless `--all`. With `--gflops R`, also prints the time the products would take at
R GFLOP/s, a lower bound on the run's time when R is the machine's best matrix-product
rate; `--sgemm` measures that rate first: ONNX Runtime (CPU, `--threads`) running one
fp32 MatMul of the shapes the graphs use most, best of 6 runs each, the best shape's rate.

`--cuts` (SAM 2 / 2.1) also counts what the two exact reductions known to the performance
notes would remove from this run, at their ideal cost (no layout or pass overhead):
- the cross-attention's rotated-key scores computed from the raw memory with RoPE
  factored per grid axis: per query and spatial key `2·(kv_in_dim + 1)` multiply-adds
  per head instead of `head_dim` (and no key projection), plus, per layer, object and
  head, the queries folded with each grid column's and row's rotation and key projection
  (`2 · E² · head_dim/2 · (kv_in_dim + 1) · E` multiply-adds); taken per call only where
  it is smaller;
- the first layer's self-attention (it does not depend on the object) run once per
  frame: the tracker runs it once per memory-attention call and per `curr` batch row,
  and a frame's calls are those before its decoder call.
and the time left for the products at `--gflops` and at the run's own overall rate.
Needs the `onnx` package (shape inference), and `onnxruntime` for `--sgemm`.
"""

import argparse
import json
import re
from collections import defaultdict

import numpy as np
import onnx
from onnx import shape_inference

CALL = re.compile(r"call (\w+): (.*)$")
PROPAGATION = re.compile(r"propagation ([0-9.]+) s \(([0-9.]+) ms/frame\)")
ARG = re.compile(r"(\w+)=\[([0-9, ]*)\]")
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def graph_flops(path, shapes):
    """FLOP of the MatMul/Gemm/Conv nodes of `path` with its inputs at `shapes`."""
    m = onnx.load(path)
    for i in m.graph.input:
        if i.name in shapes:
            dims = i.type.tensor_type.shape.dim
            for k, v in enumerate(shapes[i.name]):
                dims[k].ClearField("dim_param")
                dims[k].dim_value = v
    m = shape_inference.infer_shapes(m, data_prop=True)
    sh = {}
    for vi in list(m.graph.value_info) + list(m.graph.input) + list(m.graph.output):
        sh[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim]
    for t in m.graph.initializer:
        sh[t.name] = list(t.dims)
    total, unknown = 0, 0
    for n in m.graph.node:
        if n.op_type not in ("MatMul", "Gemm", "Conv"):
            continue
        a, w, o = sh.get(n.input[0]), sh.get(n.input[1]), sh.get(n.output[0])
        if any(x is None or None in x or not x for x in (a, w, o)):
            unknown += 1
            continue
        if n.op_type == "MatMul":
            total += 2 * a[-1] * int(np.prod(o))
        elif n.op_type == "Gemm":
            trans_a = any(x.name == "transA" and x.i for x in n.attribute)
            total += 2 * (a[0] if trans_a else a[1]) * int(np.prod(o))
        else:  # Conv: every output value sums C_in/groups × kernel products
            total += 2 * int(np.prod(o)) * int(np.prod(w[1:]))
    return total, unknown


def exact_cuts(cfg, frames):
    """FLOP the two exact reductions (module doc) would remove; `frames`: per propagated
    frame, the memory-attention calls' input shapes."""
    ma = cfg["memory_attention"]
    if ma.get("rope_v2_k_sizes"):
        raise SystemExit("--cuts counts SAM 2 / 2.1's memory attention, not EdgeTAM's")
    d, kv, heads, layers = ma["d_model"], ma["kv_in_dim"], ma["num_heads"], ma["num_layers"]
    e = cfg["image_size"] // cfg["backbone_stride"]
    nq, hd = e * e, d // heads
    # per query and key, direct: head_dim products per head; factored: both halves from the
    # raw memory + bias; per layer, object and head, folding the queries
    fold = 2 * 2 * nq * (hd // 2) * (kv + 1) * e
    self_attn = 2 * nq * d * d * 4 + 2 * 2 * nq * nq * d
    rope, shared = 0, 0
    for calls in frames:
        rows = 0
        for sh in calls:
            b, t = sh["memory"][0], sh["memory"][1]
            direct = 2 * nq * t * d + 2 * t * kv * d
            factored = heads * (2 * nq * t * 2 * (kv + 1) + fold)
            rope += layers * b * max(0, direct - factored)
            rows += sh["curr"][0]
        shared += max(0, rows - 1) * self_attn
    return rope, shared


def sgemm_rate(threads):
    """Best fp32 MatMul rate (GFLOP/s) of ONNX Runtime on this CPU."""
    import time

    import onnxruntime as ort
    from onnx import TensorProto, helper

    best = 0.0
    for m, k, n in [(4096, 256, 4096), (4096, 256, 2048), (4096, 1024, 256), (1024, 1024, 1024), (2048, 2048, 2048)]:
        g = helper.make_graph(
            [helper.make_node("MatMul", ["a", "b"], ["c"])],
            "sgemm",
            [helper.make_tensor_value_info("a", TensorProto.FLOAT, [m, k]), helper.make_tensor_value_info("b", TensorProto.FLOAT, [k, n])],
            [helper.make_tensor_value_info("c", TensorProto.FLOAT, [m, n])],
        )
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        sess = ort.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(), so, providers=["CPUExecutionProvider"])
        rng = np.random.default_rng(0)
        feeds = {"a": rng.random((m, k), dtype=np.float32), "b": rng.random((k, n), dtype=np.float32)}
        t_best = float("inf")
        for _ in range(6):
            t = time.perf_counter()
            sess.run(None, feeds)
            t_best = min(t_best, time.perf_counter() - t)
        rate = 2 * m * k * n / t_best / 1e9
        print(f"sgemm {m}x{k}x{n}: {rate:.1f} GFLOP/s")
        best = max(best, rate)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--log", required=True, help="output of `RUST_LOG=tamrt=debug tamrt track ...`")
    ap.add_argument("--all", action="store_true", help="count the prompt calls too")
    ap.add_argument("--gflops", type=float, help="matrix-product rate for a time bound")
    ap.add_argument("--sgemm", action="store_true", help="measure the rate (ONNX Runtime MatMul) instead")
    ap.add_argument("--threads", type=int, default=2, help="threads for --sgemm (default 2)")
    ap.add_argument("--cuts", action="store_true", help="also count the exact reductions known (module doc)")
    args = ap.parse_args()

    calls = defaultdict(int)
    counting, propagating = args.all, False
    frames, frame, seconds = [], [], None
    for line in open(args.log, encoding="utf-8", errors="replace"):
        line = ANSI.sub("", line.rstrip())
        if line.endswith("propagation: start"):
            counting = propagating = True
        if p := PROPAGATION.search(line):
            seconds = float(p.group(1))
        m = CALL.search(line)
        if counting and m:
            shapes = tuple((k, tuple(int(x) for x in v.split(",") if x.strip())) for k, v in ARG.findall(m.group(2)))
            calls[(m.group(1), shapes)] += 1
        if propagating and m and m.group(1) == "memory_attention":
            frame.append(dict(shapes))
        if propagating and m and m.group(1) == "prompt_decoder" and frame:
            frames.append(frame)
            frame = []
    if not calls:
        raise SystemExit(f"{args.log}: no `call` lines (run tamrt track with RUST_LOG=tamrt=debug)")

    per = defaultdict(lambda: [0, 0.0])
    for (comp, shapes), n in sorted(calls.items()):
        f, unknown = graph_flops(f"{args.model_dir}/{comp}.onnx", dict(shapes))
        if unknown:
            print(f"warning: {comp}: {unknown} product node(s) without inferred shapes are not counted")
        per[comp][0] += n
        per[comp][1] += n * f / 1e9
    total = sum(g for _, g in per.values())
    for comp, (n, g) in per.items():
        print(f"{comp:18s} {n:4d} calls {g:10.1f} GFLOP")
    print(f"{'total':18s} {sum(n for n, _ in per.values()):4d} calls {total:10.1f} GFLOP")
    if args.sgemm:
        args.gflops = sgemm_rate(args.threads)
    if args.gflops:
        print(f"at {args.gflops:.1f} GFLOP/s: {total / args.gflops:.1f} s")
    if args.cuts:
        cfg = json.load(open(f"{args.model_dir}/model.json"))["config"]
        rope, shared = exact_cuts(cfg, frames)
        left = total - (rope + shared) / 1e9
        print(f"cut: RoPE factored per grid axis (ideal cost) {rope / 1e9:10.1f} GFLOP")
        print(f"cut: first self-attention once per frame    {shared / 1e9:10.1f} GFLOP")
        print(f"{'left':18s}           {left:10.1f} GFLOP")
        if args.gflops:
            print(f"left at {args.gflops:.1f} GFLOP/s: {left / args.gflops:.1f} s")
        if seconds and not args.all:  # the time is the propagation's
            rate = total / seconds
            print(f"left at the run's overall {rate:.1f} GFLOP/s ({total:.0f} GFLOP in {seconds:.2f} s): {left / rate:.1f} s")


if __name__ == "__main__":
    main()
