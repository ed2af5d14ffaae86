//! EdgeTAM's `memory_attention.onnx`: `MemoryAttention.forward` with `RoPEAttention`
//! self-attention and `RoPEAttentionv2` cross-attention (`sam2/modeling/memory_attention.py`,
//! `sam2/modeling/sam/transformer.py`, `apply_rotary_enc_v2` in `position_encoding.py`).
//!
//! * Self-attention: `RoPEAttention` recomputes its table from the sequence length
//!   (`w = h = sqrt(n)`), so the E×E table is used whatever `feat_sizes` says.
//! * Cross-attention queries: `freqs_cis_q` of `q_sizes`, which must be the E×E grid
//!   (upstream asserts the table matches the 4096 queries); same head dim and theta as
//!   the self-attention, so the same E×E table.
//! * Cross-attention keys: the memory is `frames × (N1 + N2)` perceiver tokens
//!   (`rope_k_repeat = num_spatial_mem` = frames). Per frame the first
//!   `N1 + N2 − kx·ky` tokens (the global latents) are not rotated and the last `kx·ky`
//!   (the 2D latents) are rotated with the `k_sizes` table (`compute_axial_cis(end_x=kx,
//!   end_y=ky)`, unscaled positions). Pointer tokens (`num_k_exclude_rope`) are not rotated.
//!
//! Inputs and outputs are those of SAM 2's graph (`export/README.md`); `memory` holds
//! `T = frames · (N1 + N2)` tokens, frame-major, each frame `[global, 2D]`.

use crate::config::ModelConfig;
use crate::dims;
use crate::error::{graph_err, Result};
use crate::models::memory_attention::{
    layer_with, proj, raw_values_out, Dims, Inputs, MemoryTokens, LN_EPS, MEM_ATTN_QUERY_BLOCK,
};
use crate::models::perceiver::PerceiverDims;
use crate::models::rope::{apply_rotary, AxialRope, RopeConsts};
use crate::onnx::graph::Graph;
use crate::onnx::nn::{in_query_blocks, layer_norm, sdpa_scale};
use crate::onnx::proto::DataType;
use crate::onnx::Value;
use crate::weights::Vb;

/// Memory tokens per frame and, of those, the rotated (2D) ones at the end.
struct KeyLayout {
    frame_tokens: usize,
    rope_tokens: usize,
}

/// Build EdgeTAM's `memory_attention.onnx`.
pub fn build_memory_attention_v2(cfg: &ModelConfig, vb: &Vb) -> Result<Graph> {
    let ma = &cfg.memory_attention;
    let (c, m, e) = (cfg.hidden_dim(), cfg.mem_dim(), cfg.embed_side());
    let [kx, ky] = ma
        .rope_v2_k_sizes
        .ok_or_else(|| graph_err("edgetam memory_attention: rope_v2_k_sizes (RoPEAttentionv2 k_sizes) not set"))?;
    let p = cfg.perceiver.as_ref().ok_or_else(|| graph_err("edgetam memory_attention: no perceiver config"))?;
    let pd = PerceiverDims::new(p, m, e)?;
    if ma.d_model != c || ma.kv_in_dim != m {
        return Err(graph_err(format!(
            "memory_attention: d_model {} / kv_in_dim {} must be hidden dim {c} / memory dim {m}",
            ma.d_model, ma.kv_in_dim
        )));
    }
    if ma.num_heads == 0 || !c.is_multiple_of(ma.num_heads) || !(c / ma.num_heads).is_multiple_of(4) {
        return Err(graph_err(format!(
            "memory_attention: head dim of {c} / {} heads must be a multiple of 4",
            ma.num_heads
        )));
    }
    if kx * ky == 0 || kx * ky > pd.tokens() {
        return Err(graph_err(format!(
            "memory_attention: k_sizes {kx}×{ky} exceed the {} tokens per frame",
            pd.tokens()
        )));
    }
    let dm = Dims { d: c, kv: m, heads: ma.num_heads, ff: ma.dim_feedforward };
    let kl = KeyLayout { frame_tokens: pd.tokens(), rope_tokens: kx * ky };

    let mut g = Graph::new("memory_attention");
    g.set_doc("EdgeTAM MemoryAttention.forward (batch-first): RoPEAttention self, RoPEAttentionv2 cross");
    let (ci, ei) = (c as i64, e as i64);
    let inputs = Inputs::declare(&mut g, c, m, e);

    let hd = c / ma.num_heads;
    let rope_q = AxialRope::new(hd, e, e, ma.rope_theta).constants(&mut g, "memory_attention");
    let rope_k = AxialRope::new(hd, kx, ky, ma.rope_theta).constants(&mut g, "memory_attention.k");

    let to_tokens = |g: &mut Graph, x: &Value| {
        let x = g.reshape(x, &[0, 0, -1]);
        g.transpose(&x, &[0, 2, 1])
    };
    let mut output = to_tokens(&mut g, &inputs.curr);
    // `output = output + 0.1 * curr_pos`
    if ma.pos_enc_at_input {
        let cp = to_tokens(&mut g, &inputs.curr_pos);
        let cp = g.mul_scalar(&cp, 0.1);
        output = g.add(&output, &cp);
    }
    let mem = inputs.memory_tokens(&mut g);

    let vb = vb.pp("memory_attention");
    for i in 0..ma.num_layers {
        let lvb = vb.pp("layers").pp(i);
        output = g.scoped(&format!("memory_attention.layers.{i}"), |g| {
            layer_with(g, &lvb, &dm, &output, &rope_q, |g, cvb, x| {
                cross_attention(g, cvb, &dm, &kl, x, &mem, &rope_q, &rope_k)
            })
        })?;
    }
    let out = layer_norm(&mut g, &vb.pp("norm"), &output, c, LN_EPS)?;
    let out = g.transpose(&out, &[0, 2, 1]);
    let out = g.reshape(&out, &[0, ci, ei, ei]);
    g.output(&out, "pix_feat_with_mem", DataType::Float, dims!["objects", ci, ei, ei]);
    Ok(g)
}

/// `RoPEAttentionv2.forward(q, k=memory + pos, v=memory, num_k_exclude_rope=P,
/// rope_k_repeat=frames)`.
///
/// The keys are scored in two sets, then share one softmax (the order of keys inside a
/// softmax and its weighted sum does not matter, as long as values follow their keys):
/// * rotated (the 2D latents of every frame): `k_proj`, RoPE with the K×K table, then
///   `q·k` over the 256-wide head as upstream;
/// * unrotated (the global latents of every frame and the pointers): no rotation sits
///   between `k_proj` and the product, so `q_h·(Wk_h·m + bk_h) = (Wk_hᵀ·q_h)·m + q_h·bk_h`
///   is scored in the raw 64-wide memory space (a quarter of the products; `Wk_hᵀ·q_h`
///   costs `nq·hd·kv` once per head).
///
/// Values are the raw memory in the same key order, with `v_proj` folded into `out_proj`
/// ([`raw_values_out`]).
#[allow(clippy::too_many_arguments)]
fn cross_attention(
    g: &mut Graph,
    vb: &Vb,
    dm: &Dims,
    kl: &KeyLayout,
    x: &Value,
    mem: &MemoryTokens,
    rope_q: &RopeConsts,
    rope_k: &RopeConsts,
) -> Result<Value> {
    let MemoryTokens { mem_k, mem_v, ptr_k, ptr_v } = mem;
    let (heads, hd, kv) = (dm.heads, dm.hd(), dm.kv);
    let q = proj(g, &vb.pp("q_proj"), dm, x, dm.d)?;
    // `q = apply_rotary_enc_v2(q, freqs_cis_q, repeat_freqs=1)`
    let q = apply_rotary(g, &q, rope_q);
    // `x.view(B, h, frames, n, c)`: per frame, tokens [0, n − R) unrotated, [n − R, n) rotated
    let (n, r) = (kl.frame_tokens as i64, kl.rope_tokens as i64);
    // (global tokens, 2D tokens) of every frame, each [B, frames·count, kv]
    let by_frame = |g: &mut Graph, t: &Value| -> (Option<Value>, Value) {
        if n == r {
            return (None, t.clone());
        }
        let f = g.reshape(t, &[0, -1, n, kv as i64]);
        let parts = g.split(&f, &[n - r, r], 2);
        (Some(g.reshape(&parts[0], &[0, -1, kv as i64])), g.reshape(&parts[1], &[0, -1, kv as i64]))
    };
    let (k_global, k_2d) = by_frame(g, mem_k);
    let (v_global, v_2d) = by_frame(g, mem_v);
    // rotated keys: `k_proj`, then the K×K table repeated per frame (`rope_k_repeat`)
    let k_rot = proj(g, &vb.pp("k_proj"), dm, &k_2d, kv)?;
    let k_rot = apply_rotary(g, &k_rot, rope_k);
    let k_rot_t = g.transpose(&k_rot, &[0, 1, 3, 2]);
    // unrotated keys, raw: [B, 1, kv, n_unrotated]
    let k_raw = match &k_global {
        Some(kg) => g.concat(&[kg, ptr_k], 1),
        None => ptr_k.clone(),
    };
    let k_raw_t = g.transpose(&k_raw, &[0, 2, 1]);
    let k_raw_t = g.unsqueeze(&k_raw_t, &[1]);
    // values in key order: [rotated, unrotated]
    let values = match &v_global {
        Some(vg) => g.concat(&[&v_2d, vg, ptr_v], 1),
        None => g.concat(&[&v_2d, ptr_v], 1),
    };
    let values = g.unsqueeze(&values, &[1]);

    // `Wk_h` as [heads, hd, kv] (k_proj.weight is [heads·hd, kv], row-major) and `bk_h`
    // as [heads, hd, 1]
    let wk = vb.pp("k_proj").tensor("weight", &[dm.d, kv])?;
    let bk = vb.pp("k_proj").tensor("bias", &[dm.d])?;
    let wk = g.initializer(&format!("{}.k_proj.weight@heads", vb.prefix()), &[heads, hd, kv], wk.data.into());
    let bk = g.initializer(&format!("{}.k_proj.bias@heads", vb.prefix()), &[heads, hd, 1], bk.data.into());
    let q = g.mul_scalar(&q, sdpa_scale(hd));
    let q_raw = g.matmul(&q, &wk);
    let q_bias = g.matmul(&q, &bk);

    // one softmax over both score sets, in query blocks as `nn::sdpa_in_blocks` runs
    let o = in_query_blocks(g, &[&q, &q_raw, &q_bias], rope_q.len, MEM_ATTN_QUERY_BLOCK, |g, b| {
        let s_rot = g.matmul(&b[0], &k_rot_t);
        let s_raw = g.matmul(&b[1], &k_raw_t);
        let s_raw = g.add(&s_raw, &b[2]);
        let s = g.concat(&[&s_rot, &s_raw], -1);
        let p = g.softmax(&s, -1);
        g.matmul(&p, &values)
    });
    raw_values_out(g, vb, dm, &o)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::{RandomWeights, Weights};

    #[test]
    fn builds_for_edgetam() {
        let cfg = ModelConfig::edgetam();
        let w = Weights::new(Box::new(RandomWeights { seed: 0 }));
        let g = build_memory_attention_v2(&cfg, &w.root()).unwrap();
        let model = g.into_model("test", vec![]);
        let dims_of = |n: &str| model.graph.initializers.iter().find(|t| t.name == n).unwrap().dims.clone();
        assert_eq!(dims_of("memory_attention.rope_cos"), vec![4096, 128, 1]);
        assert_eq!(dims_of("memory_attention.k.rope_cos"), vec![256, 128, 1]);
        let names: Vec<&str> = model.graph.initializers.iter().map(|t| t.name.as_str()).collect();
        assert!(names.contains(&"memory_attention.layers.1.cross_attn_image.k_proj.weight^T"));
        assert!(!names.iter().any(|n| n.contains("layers.2.")));
    }
}
