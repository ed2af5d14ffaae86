#!/usr/bin/env python3
"""Where one `memory_attention.onnx` call spends its time in ONNX Runtime (CPU): an
ONNX Runtime profile of one run, summed per operator type and per matrix-product shape.
A measurement aid for the performance notes, not used by tests or CI.

    python scripts/profile_memory_attention.py --model-dir DIR [--frames 7] [--objects 1]
        [--pointers 7] [--threads 2] [--keep-profile FILE]

The graph is run twice on seeded random inputs of the SAM 2 layout (`curr` and `curr_pos`
[1, C, E, E]: one frame for all objects; `memory` and `memory_pos` [objects, frames·E·E, M];
`obj_ptrs` and `obj_ptrs_pos` [objects, pointers·C/M, M]); the second run is the one
reported, with its wall time. For each MatMul / FusedMatMul shape the rate is
2·(output elements)·(inner size) / time. Needs `numpy` and `onnxruntime`.
"""

import argparse
import collections
import json
import math
import os
import tempfile
import time

import numpy as np
import onnxruntime as ort


def inputs(session, frames, objects, pointers, seed=0):
    """Random inputs for the graph's declared inputs, sizes taken from its static axes."""
    shapes = {i.name: i.shape for i in session.get_inputs()}
    c, e = shapes["curr"][1], shapes["curr"][2]
    m = shapes["memory"][2]
    if not all(isinstance(v, int) for v in (c, e, m)):
        raise SystemExit(f"curr / memory have no static channel or grid axes: {shapes}")
    rng = np.random.default_rng(seed)
    tokens = {
        "curr": (1, c, e, e),
        "curr_pos": (1, c, e, e),
        "memory": (objects, frames * e * e, m),
        "memory_pos": (objects, frames * e * e, m),
        "obj_ptrs": (objects, pointers * (c // m), m),
        "obj_ptrs_pos": (objects, pointers * (c // m), m),
    }
    missing = sorted(set(shapes) - set(tokens))
    if missing:
        raise SystemExit(f"unexpected graph inputs {missing} (SAM 2 memory attention expected)")
    return {k: rng.standard_normal(v, dtype=np.float32) for k, v in tokens.items()}


def node_events(profile_path):
    """Kernel events of the last run in an ONNX Runtime profile."""
    with open(profile_path) as f:
        events = json.load(f)
    runs = [i for i, e in enumerate(events) if e.get("cat") == "Session" and e.get("name") == "model_run"]
    start = events[runs[-2]]["ts"] + events[runs[-2]]["dur"] if len(runs) >= 2 else 0
    return [
        e
        for e in events
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time") and e["ts"] >= start
    ]


def shape_of(entry):
    return list(entry.values())[0]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model-dir", required=True, help="a `tamrt export` output directory")
    ap.add_argument("--frames", type=int, default=7, help="memory frames (E·E tokens each)")
    ap.add_argument("--objects", type=int, default=1)
    ap.add_argument("--pointers", type=int, default=7, help="object pointers (C/M tokens each)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--keep-profile", help="copy ONNX Runtime's profile JSON here")
    a = ap.parse_args()

    graph = os.path.join(a.model_dir, "memory_attention.onnx")
    if not os.path.isfile(graph):
        raise SystemExit(f"{graph}: no such file")
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "ma")
        session = ort.InferenceSession(graph, so, providers=["CPUExecutionProvider"])
        feeds = inputs(session, a.frames, a.objects, a.pointers)
        session.run(None, feeds)
        t = time.perf_counter()
        session.run(None, feeds)
        wall = time.perf_counter() - t
        path = session.end_profiling()
        events = node_events(path)
        if a.keep_profile:
            with open(path) as src, open(a.keep_profile, "w") as dst:
                dst.write(src.read())

    by_op = collections.Counter()
    by_shape = collections.defaultdict(lambda: [0, 0, 0])
    for e in events:
        args = e["args"]
        op = args["op_name"]
        by_op[op] += e["dur"]
        if op not in ("MatMul", "FusedMatMul", "Softmax"):
            continue
        first = shape_of(args["input_type_shape"][0])
        out = shape_of(args["output_type_shape"][0])
        block = e["name"].split("/")[0].rsplit(".", 1)[-1]
        if block.isdigit():  # `memory_attention.layers.N/MatMul…`: linear1 / linear2
            block = "feed-forward"
        key = (op, block, str(first), str(out))
        by_shape[key][0] += e["dur"]
        by_shape[key][1] += 1
        if op != "Softmax":
            by_shape[key][2] += 2 * math.prod(out) * first[-1]

    total = sum(by_op.values())
    print(f"run {wall * 1e3:.1f} ms wall, {total / 1e3:.1f} ms in kernels "
          f"({a.frames} frames, {a.objects} object(s), {a.pointers} pointers, {a.threads} threads)")
    for op, us in by_op.most_common():
        print(f"  {op:20s} {us / 1e3:9.1f} ms  {100 * us / total:5.1f}%")
    print("matrix products and softmax by shape (first input -> output):")
    for (op, block, first, out), (us, n, flop) in sorted(by_shape.items(), key=lambda kv: -kv[1][0]):
        rate = f"{flop / (us / 1e6) / 1e9:6.1f} GFLOP/s" if flop else ""
        print(f"  {op:11s} {block:17s} {first:20s} -> {out:20s} {us / 1e3:8.1f} ms x{n:<3d} {rate}")


if __name__ == "__main__":
    main()
