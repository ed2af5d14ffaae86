#!/usr/bin/env python3
"""One memory cross-attention layer's scores, softmax and product, two exact ways, timed
in ONNX Runtime (CPU). A measurement aid for the performance notes, not used by tests or
CI; the graphs are built here with `onnx.helper`, not by tamrt.

    python scripts/rope_factoring_bench.py --frames 7 [--block 256] [--threads 2]

* plain (what `memory_attention.onnx` does): keys `k = Wk·x + bk` (x: 64-wide memory),
  rotated by RoPE (`rope_k_repeat`: the E×E table per frame), scores `q·kᵀ` 256 wide,
  softmax over the keys, product with the raw 64-wide values.
* factored (not in tamrt): the rotation of the y half depends only on the key's grid row
  y, so `q_y·R_y(y)·(Wk_y·x + bk_y) = (q_y·W_y(y))·[x; 1]` with `W_y(y) = R_y(y)·[Wk_y | bk_y]`
  (128 × 65): a 65-wide product per grid row; joined with the x half's 128 rotated dims that is one 193-wide product per
  grid row (batch = row) instead of 256 wide, but the scores come out as [row, query,
  (frame, column)], so the softmax is a max over two axes, a subtraction and an exp, and
  the weighted sum adds a column of ones for the denominator.

Queries are 4096 (the 64×64 grid), already rotated and scaled; no pointer tokens.
Prints the best of 3 runs of each and the largest difference between their outputs.
Needs `numpy`, `onnx` and `onnxruntime`.
"""

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

E, D, KV = 64, 256, 64  # grid side, d_model, memory dim


def rope_angles(theta=10000.0):
    """Angles [E·E, 128] of `compute_axial_cis(dim=256, end_x=E, end_y=E)`: 64 x pairs then 64 y pairs."""
    freqs = 1.0 / (theta ** (np.arange(0, D // 2, 2)[: D // 4] / (D // 2)))
    t = np.arange(E * E)
    return np.concatenate([np.outer(t % E, freqs), np.outer(t // E, freqs)], 1)


def swap_pairs(n):
    """S with (v·S)[2j] = -v[2j+1], (v·S)[2j+1] = v[2j]: rot(v) = v·cos + (v·S)·sin."""
    s = np.zeros((n, n), np.float32)
    for j in range(n // 2):
        s[2 * j + 1, 2 * j] = -1
        s[2 * j, 2 * j + 1] = 1
    return s


class G:
    """A tiny graph builder: nodes, initializers, fresh names."""

    def __init__(self):
        self.nodes, self.inits, self.n = [], [], 0

    def const(self, a, dtype=np.float32):
        self.n += 1
        name = f"c{self.n}"
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(np.asarray(a, dtype)), name))
        return name

    def op(self, kind, inputs, outputs=1, **attrs):
        names = []
        for _ in range(outputs):
            self.n += 1
            names.append(f"t{self.n}")
        self.nodes.append(helper.make_node(kind, inputs, names, **attrs))
        return names if outputs > 1 else names[0]

    def model(self, out, n_keys):
        ins = [
            helper.make_tensor_value_info("q", TensorProto.FLOAT, [4096, D]),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [n_keys, KV]),
            helper.make_tensor_value_info("v", TensorProto.FLOAT, [n_keys, KV]),
        ]
        self.nodes.append(helper.make_node("Identity", [out], ["out"]))
        outs = [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)]
        graph = helper.make_graph(self.nodes, "bench", ins, outs, self.inits)
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        return m.SerializeToString()


def plain(frames, block, wk, bk, cos, sin):
    g, n = G(), frames * E * E
    k = g.op("Add", [g.op("MatMul", ["x", g.const(wk)]), g.const(bk)])
    pairs = g.op("Reshape", [k, g.const([n, 128, 2], np.int64)])
    swapped = g.op("MatMul", [pairs, g.const([[0, 1], [-1, 0]])])
    c = g.const(np.tile(cos, (frames, 1)).reshape(n, 128, 1))
    s = g.const(np.tile(sin, (frames, 1)).reshape(n, 128, 1))
    k = g.op("Add", [g.op("Mul", [pairs, c]), g.op("Mul", [swapped, s])])
    kt = g.op("Transpose", [g.op("Reshape", [k, g.const([n, D], np.int64)])], perm=[1, 0])
    nb = 4096 // block
    qs = g.op("Split", ["q", g.const([block] * nb, np.int64)], outputs=nb, axis=0)
    qs = qs if nb > 1 else [qs]
    outs = [g.op("MatMul", [g.op("Softmax", [g.op("MatMul", [qb, kt])], axis=-1), "v"]) for qb in qs]
    return g.model(g.op("Concat", outs, axis=0), n)


def factored(frames, block, wk, bk, cos, sin):
    g, n = G(), frames * E * E
    sw = swap_pairs(128)
    wx = np.concatenate([wk[:, :128], bk[None, :128]], 0)  # [65, 128], x half with bias row
    wy = np.concatenate([wk[:, 128:], bk[None, 128:]], 0)
    # keys' x half, channels first and batched by grid row: [row, 256, (frame, column)]
    # (both k and k·S, rotated afterwards with the column's angles)
    wxt = np.concatenate([wx, wx @ sw], 1).T  # [256, 65]
    cx = np.repeat(cos[:E, :64].T, 2, 0)[None, :, None, :]  # [1, 128, 1, column]
    sx = np.repeat(sin[:E, :64].T, 2, 0)[None, :, None, :]
    # per grid row y: R_y(y) folded into the y half's projection, [row, 128, 65]
    wp = np.stack(
        [
            wy.T * np.repeat(cos[y * E, 64:], 2)[:, None] + (wy @ sw).T * np.repeat(sin[y * E, 64:], 2)[:, None]
            for y in range(E)
        ]
    )
    ones = g.const(np.ones((n, 1)))
    shape5 = g.const([frames, E, E, KV + 1], np.int64)
    xa = g.op("Reshape", [g.op("Concat", ["x", ones], axis=1), shape5])
    xt = g.op("Reshape", [g.op("Transpose", [xa], perm=[1, 3, 0, 2]), g.const([E, KV + 1, frames * E], np.int64)])
    va = g.op("Reshape", [g.op("Concat", ["v", ones], axis=1), shape5])
    vr = g.op("Reshape", [g.op("Transpose", [va], perm=[1, 0, 2, 3]), g.const([E, frames * E, KV + 1], np.int64)])
    kx = g.op("Reshape", [g.op("MatMul", [g.const(wxt), xt]), g.const([E, 256, frames, E], np.int64)])
    ka, kb = g.op("Split", [kx, g.const([128, 128], np.int64)], outputs=2, axis=1)
    kx = g.op("Add", [g.op("Mul", [ka, g.const(cx)]), g.op("Mul", [kb, g.const(sx)])])
    kx = g.op("Reshape", [kx, g.const([E, 128, frames * E], np.int64)])
    b = g.op("Concat", [kx, xt], axis=1)  # [row, 193, (frame, column)]
    nb = 4096 // block
    qs = g.op("Split", ["q", g.const([block] * nb, np.int64)], outputs=nb, axis=0)
    qs = qs if nb > 1 else [qs]
    wpc, halves, expand = g.const(wp), g.const([128, 128], np.int64), g.const([E, block, 128], np.int64)
    outs = []
    for qb in qs:
        qx, qy = g.op("Split", [qb, halves], outputs=2, axis=1)
        a = g.op("Concat", [g.op("Expand", [qx, expand]), g.op("MatMul", [qy, wpc])], axis=2)
        s = g.op("MatMul", [a, b])  # [row, block, (frame, column)]
        e = g.op("Exp", [g.op("Sub", [s, g.op("ReduceMax", [s], axes=[0, 2], keepdims=1)])])
        acc = g.op("ReduceSum", [g.op("MatMul", [e, vr]), g.const([0], np.int64)], keepdims=0)
        num, den = g.op("Split", [acc, g.const([KV, 1], np.int64)], outputs=2, axis=1)
        outs.append(g.op("Div", [num, den]))
    return g.model(g.op("Concat", outs, axis=0), n)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=7)
    ap.add_argument("--block", type=int, default=256, help="query rows per block (divides 4096)")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    r = np.random.default_rng(0)
    wk = (r.standard_normal((KV, D)) * 0.1).astype(np.float32)
    bk = (r.standard_normal(D) * 0.1).astype(np.float32)
    ang = rope_angles()
    cos, sin = np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)
    n = a.frames * E * E
    feeds = {
        "q": (r.standard_normal((4096, D)) * 0.05).astype(np.float32),
        "x": r.standard_normal((n, KV)).astype(np.float32),
        "v": r.standard_normal((n, KV)).astype(np.float32),
    }
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads = a.threads, 1
    outs = {}
    for name, build in [("plain", plain), ("factored", factored)]:
        sess = ort.InferenceSession(build(a.frames, a.block, wk, bk, cos, sin), so, providers=["CPUExecutionProvider"])
        outs[name] = sess.run(None, feeds)[0]
        times = []
        for _ in range(3):
            t = time.perf_counter()
            sess.run(None, feeds)
            times.append(time.perf_counter() - t)
        print(f"{name:9s} best of 3: {min(times) * 1e3:7.1f} ms")
    diff = np.abs(outs["plain"] - outs["factored"]).max()
    print(f"max |plain - factored| = {diff:.2e} (max |plain| {np.abs(outs['plain']).max():.2e})")


if __name__ == "__main__":
    main()
