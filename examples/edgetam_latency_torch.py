#!/usr/bin/env python3
"""CPU latency of the official EdgeTAM PyTorch modules on the inputs of a fixture
directory written by tests/fixtures/gen/gen_edgetam.py: the counterpart of
examples/edgetam_latency.rs (same cases, same medians). A benchmark, not a test.

    python examples/edgetam_latency_torch.py /tmp/tamrt_fixtures/edgetam [--threads 2] [--runs 7]

Uses the checkpoint and config of the fixture dir (the real size with `--real`); the
upstream calls are those the golden outputs came from.
"""

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests/fixtures/gen"))
import gen_edgetam as gen  # noqa: E402

CASES = [
    "image_encoder_image",
    "prompt_decoder_points_1",
    "memory_encoder_sigmoid",
    "memory_attention_f1_p0",
    "memory_attention_f3_p16",
    "memory_attention_f7_p64",
]


def load_case(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def runner(model, case, t, meta):
    graph = case.split("_")[0] + "_" + case.split("_")[1]
    if graph == "image_encoder":
        return lambda: model.forward_image(t["image"])
    if graph == "prompt_decoder":
        pts = {"point_coords": t["point_coords"], "point_labels": t["point_labels"].to(torch.int32)}
        feats = [t["high_res_feat0"], t["high_res_feat1"]]
        mm = bool(t["multimask_output"].item())
        return lambda: model._forward_sam_heads(
            backbone_features=t["image_embed"], point_inputs=pts, mask_inputs=None, high_res_features=feats, multimask_output=mm
        )
    if graph == "memory_encoder":
        return lambda: gen.me_reference_b1(model, t)
    if graph == "memory_attention":
        return lambda: gen.ma_reference(model, t, meta["flags"]["frames"])
    raise SystemExit(f"unknown case {case}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fixtures", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    index = json.loads((args.fixtures / "cases.json").read_text())
    if not index["model"].endswith("tiny"):
        overrides = []
    else:
        overrides = gen.TINY_OVERRIDES
        gen._REPVIT_KW["embed_dim"] = gen.TINY_REPVIT_DIMS
    with torch.no_grad():
        model = gen.build(overrides, ckpt_path=str(args.fixtures / "checkpoint.pt"))
        print(f"PyTorch {torch.__version__} CPU, {args.threads} threads, median of {args.runs} runs")
        for case in CASES:
            path = args.fixtures / f"{case}.safetensors"
            if not path.exists():
                print(f"{case:<28} (no case file)")
                continue
            meta = next(f for f in index["files"] if f["file"] == path.name)
            fn = runner(model, case, load_case(path), meta)
            fn()
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
            print(f"{case:<28} median {statistics.median(times):9.2f} ms   (min {min(times):.2f}, max {max(times):.2f})")


if __name__ == "__main__":
    main()
