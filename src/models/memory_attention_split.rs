//! SAM 2's `memory_attention.onnx` cut at its cross-attention cores, for the CPU path
//! that computes the cores with [`crate::backend::rope_cross_attention`] (see
//! `backend::split_attention`). Not exported: built when a model is loaded, from the
//! weights of the exported graph. Same layers as [`super::memory_attention`]:
//!
//! * `first`: `curr` (+ `0.1·curr_pos`), then layer 0 up to its cross-attention
//!   queries. Outputs `tgt_out` (after the self-attention residual) and `q` (`q_proj` of
//!   `norm2(tgt)`, rotated, times the 1/√d score scale), both `[curr_batch, E·E, C]`.
//! * `mids[l]`: inputs `tgt` and `attn` (layer l's attention-weighted raw memory,
//!   `[objects, E·E, M]`); layer l's `out_proj@v_proj`, residual and feed-forward, then
//!   layer l+1 up to its queries; outputs `tgt_out` and `q`.
//! * `last`: inputs `tgt` and `attn` of the last layer; its rest, the final norm and
//!   the `[objects, C, E, E]` layout: output `pix_feat_with_mem`.

use crate::config::ModelConfig;
use crate::dims;
use crate::error::{graph_err, Result};
use crate::models::memory_attention::{before_cross, feed_forward, Dims, LN_EPS};
use crate::models::rope::{apply_rotary, RopeConsts};
use crate::onnx::graph::Graph;
use crate::onnx::nn::{layer_norm, linear, sdpa_scale};
use crate::onnx::proto::DataType;
use crate::onnx::Value;
use crate::weights::Vb;

/// Inputs of `first` and `mids` that carry `compute_axial_cis`'s table for the E×E grid
/// (cos, sin as `AxialRope` lays them out, shaped `[E·E, C/2, 1]`).
pub const ROPE_INPUTS: [&str; 2] = ["rope_cos", "rope_sin"];

/// The pieces, in run order: `first`, then `mids[0..layers-1]`, then `last`.
pub struct SplitGraphs {
    pub first: Graph,
    pub mids: Vec<Graph>,
    pub last: Graph,
}

/// Build the pieces. `vb` must serve `memory_attention.layers.{l}.cross_attn_image.
/// out_proj@v_proj^T` / `.bias` (the folded value-output projection, as the exported
/// graph holds it). One head only (every official SAM 2 / 2.1 config).
pub fn build_split(cfg: &ModelConfig, vb: &Vb) -> Result<SplitGraphs> {
    let ma = &cfg.memory_attention;
    let (c, m, e) = (cfg.hidden_dim(), cfg.mem_dim(), cfg.embed_side());
    if ma.num_heads != 1 || ma.d_model != c || ma.kv_in_dim != m || ma.num_layers == 0 {
        return Err(graph_err(format!(
            "split memory attention needs one head of d_model = hidden dim and kv_in_dim = memory dim; \
             got {} heads, d_model {}, kv_in_dim {} (hidden {c}, memory {m}), {} layers",
            ma.num_heads, ma.d_model, ma.kv_in_dim, ma.num_layers
        )));
    }
    let dm = Dims { d: c, kv: m, heads: 1, ff: ma.dim_feedforward };
    let vb = vb.pp("memory_attention");
    let layer = |l: usize| vb.pp("layers").pp(l);
    let (ci, mi, ei, n) = (c as i64, m as i64, e as i64, (e * e) as i64);
    // the rotary table as inputs (`rope_cos` / `rope_sin`, [E·E, C/2, 1]): one copy for all
    // pieces, held by the caller (see `ROPE_INPUTS`)
    let (len, half) = (e * e, c / 2);
    let piece = |name: String| {
        let mut g = Graph::new(&name);
        g.set_doc(&format!("SAM 2 memory attention, CPU piece {name} (built at load, not exported)"));
        let cos = g.input(ROPE_INPUTS[0], DataType::Float, dims![len as i64, half as i64, 1]);
        let sin = g.input(ROPE_INPUTS[1], DataType::Float, dims![len as i64, half as i64, 1]);
        (g, RopeConsts { len, half, cos, sin })
    };

    let (mut first, r) = piece("memory_attention.first".into());
    let curr = first.input("curr", DataType::Float, dims!["curr_batch", ci, ei, ei]);
    let curr_pos = first.input("curr_pos", DataType::Float, dims!["curr_batch", ci, ei, ei]);
    // `output = output + 0.1 * curr_pos`, then [B, C, E, E] -> [B, E·E, C]
    let mut x = curr;
    if ma.pos_enc_at_input {
        let p = first.mul_scalar(&curr_pos, 0.1);
        x = first.add(&x, &p);
    }
    let x = first.reshape(&x, &[0, 0, -1]);
    let x = first.transpose(&x, &[0, 2, 1]);
    let (tgt, q) = first.scoped("memory_attention.layers.0", |g| to_queries(g, &layer(0), &dm, &x, &r))?;
    outputs(&mut first, &tgt, &q, n, ci);

    let mut mids = Vec::new();
    for l in 0..ma.num_layers - 1 {
        let (mut g, r) = piece(format!("memory_attention.mid{l}"));
        let (tgt, attn) = inputs(&mut g, n, ci, mi);
        let x =
            g.scoped(&format!("memory_attention.layers.{l}"), |g| from_attention(g, &layer(l), &dm, &tgt, &attn))?;
        let next = format!("memory_attention.layers.{}", l + 1);
        let (tgt, q) = g.scoped(&next, |g| to_queries(g, &layer(l + 1), &dm, &x, &r))?;
        outputs(&mut g, &tgt, &q, n, ci);
        mids.push(g);
    }

    let mut last = Graph::new("memory_attention.last");
    last.set_doc("SAM 2 memory attention, CPU piece memory_attention.last (built at load, not exported)");
    let (tgt, attn) = inputs(&mut last, n, ci, mi);
    let l = ma.num_layers - 1;
    let x = last.scoped(&format!("memory_attention.layers.{l}"), |g| from_attention(g, &layer(l), &dm, &tgt, &attn))?;
    // `normed_output = self.norm(output)`, back to [B, C, E, E]
    let out = layer_norm(&mut last, &vb.pp("norm"), &x, c, LN_EPS)?;
    let out = last.transpose(&out, &[0, 2, 1]);
    let out = last.reshape(&out, &[0, ci, ei, ei]);
    last.output(&out, "pix_feat_with_mem", DataType::Float, dims!["objects", ci, ei, ei]);
    Ok(SplitGraphs { first, mids, last })
}

fn inputs(g: &mut Graph, n: i64, c: i64, m: i64) -> (Value, Value) {
    let tgt = g.input("tgt", DataType::Float, dims!["tgt_batch", n, c]);
    let attn = g.input("attn", DataType::Float, dims!["objects", n, m]);
    (tgt, attn)
}

fn outputs(g: &mut Graph, tgt: &Value, q: &Value, n: i64, c: i64) {
    g.output(tgt, "tgt_out", DataType::Float, dims!["batch", n, c]);
    g.output(q, "q", DataType::Float, dims!["batch", n, c]);
}

/// `MemoryAttentionLayer.forward` up to the cross-attention's queries: `_forward_sa`
/// (norm1, self-attention, residual), then `norm2` and `q_proj`, rotated
/// (`apply_rotary_enc`) and scaled by `1/√d` as `scaled_dot_product_attention` does.
fn to_queries(g: &mut Graph, vb: &Vb, dm: &Dims, tgt: &Value, rope: &RopeConsts) -> Result<(Value, Value)> {
    let d = dm.d;
    let (tgt, tgt2) = before_cross(g, vb, dm, tgt, rope)?;
    let q = g.scoped("cross_attn_image", |g| {
        let q = linear(g, &vb.pp("cross_attn_image").pp("q_proj"), &tgt2, d, d, true)?;
        // one head: [B, n, d] as [B, 1, n, d] for the rotation
        let q = g.unsqueeze(&q, &[1]);
        let q = apply_rotary(g, &q, rope);
        let q = g.mul_scalar(&q, sdpa_scale(d));
        Ok(g.reshape(&q, &[0, -1, d as i64]))
    })?;
    Ok((tgt, q))
}

/// The rest of `MemoryAttentionLayer.forward` from the cross-attention's weighted raw
/// memory `attn`: `Σ attn·(Wo·Wv)ᵀ + (Wo·bv + bo)` (folded at export), the residual
/// (broadcast over objects when `tgt` is shared), `norm3`, `linear2(relu(linear1))`,
/// residual.
fn from_attention(g: &mut Graph, vb: &Vb, dm: &Dims, tgt: &Value, attn: &Value) -> Result<Value> {
    let (d, kv) = (dm.d, dm.kv);
    let cvb = vb.pp("cross_attn_image");
    let w = cvb.get(g, "out_proj@v_proj^T", &[kv, d])?;
    let b = cvb.get(g, "out_proj@v_proj.bias", &[d])?;
    let ca = g.matmul(attn, &w);
    let ca = g.add(&ca, &b);
    let tgt = g.add(tgt, &ca);
    feed_forward(g, vb, dm, &tgt)
}
