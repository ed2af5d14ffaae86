//! SAM 2's `memory_attention.onnx` cut at its attention cores, for the CPU path that
//! computes the self-attention cores with [`crate::backend::self_attention`] and the
//! cross-attention cores with [`crate::backend::rope_cross_attention`] (see
//! `backend::split_attention`). Not exported: built when a model is loaded, from the
//! weights of the exported graph. Same layers as [`super::memory_attention`]:
//!
//! * `first`: `curr` (+ `0.1·curr_pos`), then layer 0 up to its self-attention core.
//! * `mids[l]`: inputs `tgt` and `attn` (layer l's attention-weighted raw memory,
//!   `[objects, E·E, M]`); layer l's `out_proj@v_proj`, residual and feed-forward, then
//!   layer l+1 up to its self-attention core.
//! * `first` and `mids` output `tgt_out` (the residual stream) and `sq`, `sk`, `sv`: the
//!   self-attention's `q_proj`, `k_proj` (both rotated, `sq` times the 1/√d score scale)
//!   and `v_proj` of `norm1(tgt)`, all `[batch, E·E, C]`.
//! * `post_self[l]`: inputs `tgt` and `sa` (layer l's self-attention core output,
//!   `[batch, E·E, C]`); `out_proj`, the residual, then `norm2` and the cross-attention's
//!   `q_proj`, rotated and scaled: outputs `tgt_out` and `q`.
//! * `last`: inputs `tgt` and `attn` of the last layer; its rest, the final norm and
//!   the `[objects, C, E, E]` layout: output `pix_feat_with_mem`.

use crate::config::ModelConfig;
use crate::dims;
use crate::error::{graph_err, Result};
use crate::models::memory_attention::{cross_attention_q, feed_forward, self_attention_qkv, Dims, LN_EPS};
use crate::models::rope::RopeConsts;
use crate::onnx::graph::Graph;
use crate::onnx::nn::{in_query_blocks, layer_norm, linear, sdpa_scale};
use crate::onnx::proto::DataType;
use crate::onnx::Value;
use crate::weights::Vb;

/// Most rows per block of the feed-forward in `mids` and `last` (a quarter of the grid,
/// at most this): its hidden layer is `rows × dim_feedforward` per object (8 MB at 1024 ×
/// 2048 fp32, against 32 MB for the whole 4096-row grid, and as much again after the
/// ReLU), the largest activation of the pieces, which sets ONNX Runtime's arena peak
/// when two objects go through together.
const FFN_ROWS: usize = 1024;

/// Inputs of `first`, `mids` and `post_self` that carry `compute_axial_cis`'s table for the E×E grid
/// (cos, sin as `AxialRope` lays them out, shaped `[E·E, C/2, 1]`).
pub const ROPE_INPUTS: [&str; 2] = ["rope_cos", "rope_sin"];

/// The pieces: run `first`, `post_self[0]`, then `mids[l]`, `post_self[l+1]` for each
/// following layer, then `last` (the cores between them).
pub struct SplitGraphs {
    pub first: Graph,
    pub post_self: Vec<Graph>,
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
    let sqkv = first.scoped("memory_attention.layers.0", |g| to_self_core(g, &layer(0), &dm, &x, &r))?;
    self_outputs(&mut first, &x, &sqkv, n, ci);

    let mut post_self = Vec::new();
    for l in 0..ma.num_layers {
        let (mut g, r) = piece(format!("memory_attention.post_self{l}"));
        let tgt = g.input("tgt", DataType::Float, dims!["batch", n, ci]);
        let sa = g.input("sa", DataType::Float, dims!["batch", n, ci]);
        let (tgt, q) =
            g.scoped(&format!("memory_attention.layers.{l}"), |g| to_queries(g, &layer(l), &dm, &tgt, &sa, &r))?;
        g.output(&tgt, "tgt_out", DataType::Float, dims!["batch", n, ci]);
        g.output(&q, "q", DataType::Float, dims!["batch", n, ci]);
        post_self.push(g);
    }

    let mut mids = Vec::new();
    for l in 0..ma.num_layers - 1 {
        let (mut g, r) = piece(format!("memory_attention.mid{l}"));
        let (tgt, attn) = inputs(&mut g, n, ci, mi);
        let x = g.scoped(&format!("memory_attention.layers.{l}"), |g| {
            from_attention(g, &layer(l), &dm, &tgt, &attn, e * e)
        })?;
        let next = format!("memory_attention.layers.{}", l + 1);
        let sqkv = g.scoped(&next, |g| to_self_core(g, &layer(l + 1), &dm, &x, &r))?;
        self_outputs(&mut g, &x, &sqkv, n, ci);
        mids.push(g);
    }

    let mut last = Graph::new("memory_attention.last");
    last.set_doc("SAM 2 memory attention, CPU piece memory_attention.last (built at load, not exported)");
    let (tgt, attn) = inputs(&mut last, n, ci, mi);
    let l = ma.num_layers - 1;
    let x = last
        .scoped(&format!("memory_attention.layers.{l}"), |g| from_attention(g, &layer(l), &dm, &tgt, &attn, e * e))?;
    // `normed_output = self.norm(output)`, back to [B, C, E, E]
    let out = layer_norm(&mut last, &vb.pp("norm"), &x, c, LN_EPS)?;
    let out = last.transpose(&out, &[0, 2, 1]);
    let out = last.reshape(&out, &[0, ci, ei, ei]);
    last.output(&out, "pix_feat_with_mem", DataType::Float, dims!["objects", ci, ei, ei]);
    Ok(SplitGraphs { first, post_self, mids, last })
}

fn inputs(g: &mut Graph, n: i64, c: i64, m: i64) -> (Value, Value) {
    let tgt = g.input("tgt", DataType::Float, dims!["tgt_batch", n, c]);
    let attn = g.input("attn", DataType::Float, dims!["objects", n, m]);
    (tgt, attn)
}

fn self_outputs(g: &mut Graph, tgt: &Value, [q, k, v]: &[Value; 3], n: i64, c: i64) {
    g.output(tgt, "tgt_out", DataType::Float, dims!["batch", n, c]);
    for (t, name) in [(q, "sq"), (k, "sk"), (v, "sv")] {
        g.output(t, name, DataType::Float, dims!["batch", n, c]);
    }
}

/// One head `[B, 1, n, d]` as `[B, n, d]`, multiplied by `1/√d` where `scale` (queries,
/// as `scaled_dot_product_attention` scales them).
fn one_head(g: &mut Graph, x: &Value, d: usize, scale: bool) -> Value {
    let x = if scale { g.mul_scalar(x, sdpa_scale(d)) } else { x.clone() };
    g.reshape(&x, &[0, -1, d as i64])
}

/// `_forward_sa` up to the attention core: `tgt2 = self.norm1(tgt)`, `q = k = tgt2`
/// (pos_enc_at_attn false), then `RoPEAttention`'s `q_proj`, `k_proj`, `v_proj` (one
/// head), `q` and `k` rotated with the E×E table, `q` scaled by `1/√d`.
fn to_self_core(g: &mut Graph, vb: &Vb, dm: &Dims, tgt: &Value, rope: &RopeConsts) -> Result<[Value; 3]> {
    let d = dm.d;
    let tgt2 = layer_norm(g, &vb.pp("norm1"), tgt, d, LN_EPS)?;
    g.scoped("self_attn", |g| {
        let [q, k, v] = self_attention_qkv(g, &vb.pp("self_attn"), dm, &tgt2, rope)?;
        Ok([one_head(g, &q, d, true), one_head(g, &k, d, false), one_head(g, &v, d, false)])
    })
}

/// The rest of `MemoryAttentionLayer.forward` up to the cross-attention's queries, from
/// the self-attention core output `sa`: `out_proj`, `tgt = tgt + tgt2`, then `norm2` and
/// the cross-attention's `q_proj`, rotated and scaled by `1/√d`.
fn to_queries(g: &mut Graph, vb: &Vb, dm: &Dims, tgt: &Value, sa: &Value, rope: &RopeConsts) -> Result<(Value, Value)> {
    let d = dm.d;
    let o = g.scoped("self_attn", |g| linear(g, &vb.pp("self_attn").pp("out_proj"), sa, d, d, true))?;
    let tgt = g.add(tgt, &o);
    // _forward_ca: `tgt2 = self.norm2(tgt)`; queries without pos
    let tgt2 = layer_norm(g, &vb.pp("norm2"), &tgt, d, LN_EPS)?;
    let q = g.scoped("cross_attn_image", |g| {
        let q = cross_attention_q(g, &vb.pp("cross_attn_image"), dm, &tgt2, rope)?;
        Ok(one_head(g, &q, d, true))
    })?;
    Ok((tgt, q))
}

/// The rest of `MemoryAttentionLayer.forward` from the cross-attention's weighted raw
/// memory `attn`: `Σ attn·(Wo·Wv)ᵀ + (Wo·bv + bo)` (folded at export), the residual
/// (broadcast over objects when `tgt` is shared), `norm3`, `linear2(relu(linear1))`,
/// residual; `n` rows (the E×E grid).
fn from_attention(g: &mut Graph, vb: &Vb, dm: &Dims, tgt: &Value, attn: &Value, n: usize) -> Result<Value> {
    let (d, kv) = (dm.d, dm.kv);
    let cvb = vb.pp("cross_attn_image");
    let w = cvb.get(g, "out_proj@v_proj^T", &[kv, d])?;
    let b = cvb.get(g, "out_proj@v_proj.bias", &[d])?;
    let ca = g.matmul(attn, &w);
    let ca = g.add(&ca, &b);
    let tgt = g.add(tgt, &ca);
    // row by row (norm3, linear1, relu, linear2 are all per row), in blocks (FFN_ROWS)
    let x = g.unsqueeze(&tgt, &[1]);
    let mut failed = None;
    let y = in_query_blocks(g, &[&x], n, (n / 4).clamp(1, FFN_ROWS), |g, rows| {
        feed_forward(g, vb, dm, &rows[0]).unwrap_or_else(|e| {
            failed.get_or_insert(e);
            rows[0].clone()
        })
    });
    match failed {
        Some(e) => Err(e),
        None => Ok(g.squeeze(&y, &[1])),
    }
}
