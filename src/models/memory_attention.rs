//! `memory_attention.onnx`: `MemoryAttention.forward` (`sam2/modeling/memory_attention.py`)
//! as `SAM2Base._prepare_memory_conditioned_features` calls it, batch-first.
//!
//! The memory is given as two inputs, the `T` spatial tokens and the `P` object-pointer
//! tokens (P may be 0); upstream concatenates them (`torch.cat(to_cat_memory, dim=0)`)
//! before the transformer. Here keys and values of the two parts are projected
//! separately and concatenated after RoPE, which rotates only the spatial part
//! (`num_k_exclude_rope = P`). With P = 0 that concat has an empty input: ONNX Runtime
//! runs it, and TensorRT treats zero-length dims as ordinary (empty tensors, profile
//! min `ptr_tokens` = 0; the only Reshapes on the pointer part copy dims with `0`, never
//! infer with `-1`).

use crate::config::ModelConfig;
use crate::dims;
use crate::error::{graph_err, Result};
use crate::models::rope::{apply_rotary, AxialRope, RopeConsts};
use crate::onnx::graph::Graph;
use crate::onnx::nn::{layer_norm, linear, sdpa_in_blocks};
use crate::onnx::proto::DataType;
use crate::onnx::Value;
use crate::weights::Vb;

/// Query rows per attention block (`nn::sdpa_in_blocks`) in the memory attention, self- and
/// cross-attention, SAM 2 and EdgeTAM. One cross-attention block holds
/// `256 × (frames·4096 + pointer tokens)` scores per object (29 MB fp32 at 7 frames), and as
/// many weights: at TensorRT's largest profile (8 objects, 7 frames) 118 MB in fp16, under
/// the feed-forward's hidden layer (134 MB), so the blocks do not raise the graph's largest
/// tensor. 512-row blocks ran the real-size `sam2.1_hiera_t` tracker clip ~4% faster on
/// ONNX Runtime (2-core machine, alternating runs: 7.65 and 7.45 against 8.04 and 7.78
/// s/frame, same peak RSS), but make the scores the largest tensor (235 MB fp16 at that
/// profile, and the weights as much again), memory an 8 GB Orin would pay if TensorRT does
/// not fuse the attention (not measured: no TensorRT here).
pub(crate) const MEM_ATTN_QUERY_BLOCK: usize = 256;

/// `nn.LayerNorm` default eps (norm1..3 and the final norm).
pub(crate) const LN_EPS: f32 = 1e-5;

/// Sizes shared by all layers (also EdgeTAM's memory attention).
pub(crate) struct Dims {
    /// `d_model` (= hidden dim C).
    pub d: usize,
    /// `kv_in_dim` of the cross-attention (= memory dim M).
    pub kv: usize,
    pub heads: usize,
    pub ff: usize,
}

impl Dims {
    pub fn hd(&self) -> usize {
        self.d / self.heads
    }
}

/// Build `memory_attention.onnx` (see `export/README.md`).
pub fn build_memory_attention(cfg: &ModelConfig, vb: &Vb) -> Result<Graph> {
    let ma = &cfg.memory_attention;
    let (c, m, e) = (cfg.hidden_dim(), cfg.mem_dim(), cfg.embed_side());
    if ma.d_model != c {
        return Err(graph_err(format!("memory_attention.d_model {} != hidden dim {c}", ma.d_model)));
    }
    if ma.kv_in_dim != m {
        return Err(graph_err(format!("memory_attention.kv_in_dim {} != memory dim {m}", ma.kv_in_dim)));
    }
    if ma.num_heads == 0 || !c.is_multiple_of(ma.num_heads) || !(c / ma.num_heads).is_multiple_of(4) {
        return Err(graph_err(format!(
            "memory_attention: head dim of {c} / {} heads must be a multiple of 4",
            ma.num_heads
        )));
    }
    let dm = Dims { d: c, kv: m, heads: ma.num_heads, ff: ma.dim_feedforward };
    let vb = vb.pp("memory_attention");
    let mut g = Graph::new("memory_attention");
    g.set_doc("SAM 2 MemoryAttention.forward (batch-first), RoPE self/cross attention");

    let (ci, ei) = (c as i64, e as i64);
    let inputs = Inputs::declare(&mut g, c, m, e);

    // `RoPEAttention.forward`: `w = h = math.sqrt(q.shape[-2])`, and the table is
    // recomputed with `compute_cis(end_x=w, end_y=h)` when `feat_sizes` disagree: the
    // queries are always the E×E grid, so one E×E table serves every layer (self- and
    // cross-attention have the same head dim).
    let rope = AxialRope::new(c / ma.num_heads, e, e, ma.rope_theta).constants(&mut g, "memory_attention");

    // `if self.pos_enc_at_input and curr_pos is not None: output = output + 0.1 * curr_pos`
    // (elementwise, so done before the layout change; queries get no other pos:
    // pos_enc_at_attn and pos_enc_at_cross_attn_queries are false in every config)
    let mut output = inputs.curr.clone();
    if ma.pos_enc_at_input {
        let p = g.mul_scalar(&inputs.curr_pos, 0.1);
        output = g.add(&output, &p);
    }
    // (HW)BC in upstream, batch-first in its layers; here [B, C, E, E] -> [B, E·E, C]
    let output = g.reshape(&output, &[0, 0, -1]);
    let mut output = g.transpose(&output, &[0, 2, 1]);

    let mem = inputs.memory_tokens(&mut g);

    for i in 0..ma.num_layers {
        let lvb = vb.pp("layers").pp(i);
        output = g.scoped(&format!("memory_attention.layers.{i}"), |g| layer(g, &lvb, &dm, &output, &mem, &rope))?;
    }
    // `normed_output = self.norm(output)`
    let out = layer_norm(&mut g, &vb.pp("norm"), &output, c, LN_EPS)?;
    // `pix_feat_with_mem.permute(1, 2, 0).view(B, C, H, W)` (from batch-first here)
    let out = g.transpose(&out, &[0, 2, 1]);
    let out = g.reshape(&out, &[0, ci, ei, ei]);
    g.output(&out, "pix_feat_with_mem", DataType::Float, dims!["objects", ci, ei, ei]);
    Ok(g)
}

/// The inputs of both memory-attention graphs (SAM 2's and EdgeTAM's), as
/// `export/README.md` specifies them.
pub(crate) struct Inputs {
    pub curr: Value,
    pub curr_pos: Value,
    memory: Value,
    memory_pos: Value,
    obj_ptrs: Value,
    obj_ptrs_pos: Value,
}

impl Inputs {
    /// Declares the six inputs, in this order, for hidden dim `c`, memory dim `m` and the
    /// `e`×`e` grid.
    pub fn declare(g: &mut Graph, c: usize, m: usize, e: usize) -> Inputs {
        let (ci, mi, ei) = (c as i64, m as i64, e as i64);
        // `curr_batch` is 1 (one frame for all objects: the first layer's self-attention
        // then runs once, and the cross-attention broadcasts it over the objects) or
        // `objects`
        Inputs {
            curr: g.input("curr", DataType::Float, dims!["curr_batch", ci, ei, ei]),
            curr_pos: g.input("curr_pos", DataType::Float, dims!["curr_batch", ci, ei, ei]),
            memory: g.input("memory", DataType::Float, dims!["objects", "mem_tokens", mi]),
            memory_pos: g.input("memory_pos", DataType::Float, dims!["objects", "mem_tokens", mi]),
            obj_ptrs: g.input("obj_ptrs", DataType::Float, dims!["objects", "ptr_tokens", mi]),
            obj_ptrs_pos: g.input("obj_ptrs_pos", DataType::Float, dims!["objects", "ptr_tokens", mi]),
        }
    }

    /// `k=memory + pos if self.pos_enc_at_cross_attn_keys else memory` (true in every
    /// config), `v=memory`, for the spatial and the pointer tokens.
    pub fn memory_tokens(&self, g: &mut Graph) -> MemoryTokens {
        MemoryTokens {
            mem_k: g.add(&self.memory, &self.memory_pos),
            ptr_k: g.add(&self.obj_ptrs, &self.obj_ptrs_pos),
            mem_v: self.memory.clone(),
            ptr_v: self.obj_ptrs.clone(),
        }
    }
}

/// Cross-attention inputs, fixed across layers.
pub(crate) struct MemoryTokens {
    /// `memory + pos` of the T spatial tokens / of the P pointer tokens.
    pub mem_k: Value,
    pub ptr_k: Value,
    /// `v=memory`
    pub mem_v: Value,
    pub ptr_v: Value,
}

/// `MemoryAttentionLayer.forward` (dropout is off at inference).
fn layer(g: &mut Graph, vb: &Vb, dm: &Dims, tgt: &Value, mem: &MemoryTokens, rope: &RopeConsts) -> Result<Value> {
    layer_with(g, vb, dm, tgt, rope, |g, cvb, x| cross_attention(g, cvb, dm, x, mem, rope))
}

/// `MemoryAttentionLayer.forward` with the cross-attention given (SAM 2's `RoPEAttention`
/// or EdgeTAM's `RoPEAttentionv2`; it gets the `cross_attn_image` weights and `norm2(tgt)`).
pub(crate) fn layer_with(
    g: &mut Graph,
    vb: &Vb,
    dm: &Dims,
    tgt: &Value,
    rope: &RopeConsts,
    cross: impl FnOnce(&mut Graph, &Vb, &Value) -> Result<Value>,
) -> Result<Value> {
    let (tgt, tgt2) = before_cross(g, vb, dm, tgt, rope)?;
    let ca = g.scoped("cross_attn_image", |g| cross(g, &vb.pp("cross_attn_image"), &tgt2))?;
    let tgt = g.add(&tgt, &ca);
    feed_forward(g, vb, dm, &tgt)
}

/// The start of `MemoryAttentionLayer.forward`: `_forward_sa`, then `norm2` for the
/// cross-attention's queries. Returns (`tgt` after the self-attention residual,
/// `norm2(tgt)`).
fn before_cross(g: &mut Graph, vb: &Vb, dm: &Dims, tgt: &Value, rope: &RopeConsts) -> Result<(Value, Value)> {
    let d = dm.d;
    // _forward_sa: `tgt2 = self.norm1(tgt)`; `q = k = tgt2` (pos_enc_at_attn false)
    let tgt2 = layer_norm(g, &vb.pp("norm1"), tgt, d, LN_EPS)?;
    let sa = g.scoped("self_attn", |g| self_attention(g, &vb.pp("self_attn"), dm, &tgt2, rope))?;
    let tgt = g.add(tgt, &sa);
    // _forward_ca: `tgt2 = self.norm2(tgt)`; queries without pos
    let tgt2 = layer_norm(g, &vb.pp("norm2"), &tgt, d, LN_EPS)?;
    Ok((tgt, tgt2))
}

/// The end of `MemoryAttentionLayer.forward`, after the cross-attention residual:
/// `tgt + linear2(relu(linear1(norm3(tgt))))` (dropout off).
pub(crate) fn feed_forward(g: &mut Graph, vb: &Vb, dm: &Dims, tgt: &Value) -> Result<Value> {
    let d = dm.d;
    let tgt2 = layer_norm(g, &vb.pp("norm3"), tgt, d, LN_EPS)?;
    let h = linear(g, &vb.pp("linear1"), &tgt2, d, dm.ff, true)?;
    let h = g.relu(&h);
    let h = linear(g, &vb.pp("linear2"), &h, dm.ff, d, true)?;
    Ok(g.add(tgt, &h))
}

/// A Linear projection to `d_model` split into heads: `[B, n, in] -> [B, heads, n, d/heads]`.
pub(crate) fn proj(g: &mut Graph, vb: &Vb, dm: &Dims, x: &Value, in_dim: usize) -> Result<Value> {
    let y = linear(g, vb, x, in_dim, dm.d, true)?;
    Ok(separate_heads(g, &y, dm.heads, dm.hd()))
}

/// `Attention._separate_heads`: [B, N, C] -> [B, heads, N, C/heads].
fn separate_heads(g: &mut Graph, x: &Value, heads: usize, head_dim: usize) -> Value {
    let x = g.reshape(x, &[0, 0, heads as i64, head_dim as i64]);
    g.transpose(&x, &[0, 2, 1, 3])
}

/// `Attention._recombine_heads`: [B, heads, N, c] -> [B, N, heads·c].
fn recombine_heads(g: &mut Graph, x: &Value, dim: usize) -> Value {
    let x = g.transpose(x, &[0, 2, 1, 3]);
    g.reshape(&x, &[0, 0, dim as i64])
}

/// `F.scaled_dot_product_attention(q, k, v)` on [B, heads, N, c] tensors (queries the
/// E×E grid), then `_recombine_heads` and `out_proj`.
pub(crate) fn attend(g: &mut Graph, vb: &Vb, dm: &Dims, nq: usize, q: &Value, k: &Value, v: &Value) -> Result<Value> {
    let kt = g.transpose(k, &[0, 1, 3, 2]);
    let o = sdpa_in_blocks(g, q, &kt, v, dm.hd(), nq, MEM_ATTN_QUERY_BLOCK);
    let o = recombine_heads(g, &o, dm.d);
    linear(g, &vb.pp("out_proj"), &o, dm.d, dm.d, true)
}

/// The cross-attention's `F.scaled_dot_product_attention(q, k, v_proj(x))`,
/// `_recombine_heads` and `out_proj`, with the value projection moved behind the
/// attention: the attention weights of a query sum to 1, so per head
/// `softmax(s)·(x·Wvᵀ + bv) = (softmax(s)·x)·Wvᵀ + bv`, and `out_proj` is linear too, so
/// `out_proj(concat_h(a_h·x·Wv_hᵀ) + bv) = Σ_h (a_h·x)·(Wo_h·Wv_h)ᵀ + (Wo·bv + bo)`.
/// `x` is the raw memory (`kv_in_dim` = 64 wide, not 256): the product with the
/// attention weights costs a quarter, and one `[heads·kv, d]` matrix (`Wo_h·Wv_h`
/// folded in double at export) replaces two projections. `x: [B, N, kv]`.
pub(crate) fn attend_raw_values(
    g: &mut Graph,
    vb: &Vb,
    dm: &Dims,
    nq: usize,
    q: &Value,
    k: &Value,
    x: &Value,
) -> Result<Value> {
    let kt = g.transpose(k, &[0, 1, 3, 2]);
    // one value head shared by all heads: [B, 1, N, kv]
    let x = g.unsqueeze(x, &[1]);
    let o = sdpa_in_blocks(g, q, &kt, &x, dm.hd(), nq, MEM_ATTN_QUERY_BLOCK);
    raw_values_out(g, vb, dm, &o)
}

/// The end of [`attend_raw_values`]: `o = a_h·x` per head (`[B, heads, nq, kv]`) →
/// `Σ_h o_h·(Wo_h·Wv_h)ᵀ + (Wo·bv + bo)`.
pub(crate) fn raw_values_out(g: &mut Graph, vb: &Vb, dm: &Dims, o: &Value) -> Result<Value> {
    let (d, kv, heads, hd) = (dm.d, dm.kv, dm.heads, dm.hd());
    let wv = vb.pp("v_proj").tensor("weight", &[d, kv])?;
    let bv = vb.pp("v_proj").tensor("bias", &[d])?;
    let wo = vb.pp("out_proj").tensor("weight", &[d, d])?;
    let bo = vb.pp("out_proj").tensor("bias", &[d])?;
    // folded[(h·kv + e), o] = Σ_{r in head h} Wo[o, r]·Wv[r, e]
    let mut folded = vec![0f32; heads * kv * d];
    for h in 0..heads {
        for e in 0..kv {
            for o in 0..d {
                let acc: f64 =
                    (h * hd..(h + 1) * hd).map(|r| wo.data[o * d + r] as f64 * wv.data[r * kv + e] as f64).sum();
                folded[(h * kv + e) * d + o] = acc as f32;
            }
        }
    }
    let bias: Vec<f32> = (0..d)
        .map(|o| {
            ((0..d).map(|r| wo.data[o * d + r] as f64 * bv.data[r] as f64).sum::<f64>() + bo.data[o] as f64) as f32
        })
        .collect();
    let w = g.initializer(&format!("{}.out_proj@v_proj^T", vb.prefix()), &[heads * kv, d], folded.into());
    let b = g.initializer(&format!("{}.out_proj@v_proj.bias", vb.prefix()), &[d], bias.into());
    // [B, heads, nq, kv] -> [B, nq, heads·kv]
    let o = recombine_heads(g, o, heads * kv);
    let o = g.matmul(&o, &w);
    Ok(g.add(&o, &b))
}

/// `RoPEAttention.forward(q=tgt2, k=tgt2, v=tgt2)`: queries and keys both rotated with
/// the E×E table.
fn self_attention(g: &mut Graph, vb: &Vb, dm: &Dims, x: &Value, rope: &RopeConsts) -> Result<Value> {
    let [q, k, v] = self_attention_qkv(g, vb, dm, x, rope)?;
    attend(g, vb, dm, rope.len, &q, &k, &v)
}

/// The self-attention up to its core: `q_proj`, `k_proj`, `v_proj` split into heads
/// (`[B, heads, n, d/heads]`), queries and keys rotated (also the CPU pieces of
/// `memory_attention_split`).
pub(crate) fn self_attention_qkv(
    g: &mut Graph,
    vb: &Vb,
    dm: &Dims,
    x: &Value,
    rope: &RopeConsts,
) -> Result<[Value; 3]> {
    let q = proj(g, &vb.pp("q_proj"), dm, x, dm.d)?;
    let k = proj(g, &vb.pp("k_proj"), dm, x, dm.d)?;
    let v = proj(g, &vb.pp("v_proj"), dm, x, dm.d)?;
    // `q, k[:, :, :num_k_rope] = apply_rotary_enc(q, k[:, :, :num_k_rope], ...)`
    let q = apply_rotary(g, &q, rope);
    let k = apply_rotary(g, &k, rope);
    Ok([q, k, v])
}

/// The cross-attention's queries: `q_proj` split into heads, rotated with the E×E table
/// (also the CPU pieces of `memory_attention_split`).
pub(crate) fn cross_attention_q(g: &mut Graph, vb: &Vb, dm: &Dims, x: &Value, rope: &RopeConsts) -> Result<Value> {
    let q = proj(g, &vb.pp("q_proj"), dm, x, dm.d)?;
    Ok(apply_rotary(g, &q, rope))
}

/// `RoPEAttention.forward(q=tgt2, k=memory + pos, v=memory, num_k_exclude_rope=P)`
/// with `rope_k_repeat`: the T spatial keys are rotated with the query table repeated
/// per frame; the P pointer keys are not rotated.
fn cross_attention(
    g: &mut Graph,
    vb: &Vb,
    dm: &Dims,
    x: &Value,
    mem: &MemoryTokens,
    rope: &RopeConsts,
) -> Result<Value> {
    let q = cross_attention_q(g, vb, dm, x, rope)?;

    // Same `k_proj` weights on both parts (row-wise, so projecting the parts separately
    // equals projecting their concatenation).
    let k_mem = proj(g, &vb.pp("k_proj"), dm, &mem.mem_k, dm.kv)?;
    let k_ptr = proj(g, &vb.pp("k_proj"), dm, &mem.ptr_k, dm.kv)?;
    // `repeat_freqs_k`: [B, h, T, c] is rotated as [B, h, T / (E·E), E·E, ...]
    let k_mem = apply_rotary(g, &k_mem, rope);
    // `torch.cat(to_cat_memory, dim=0)`: spatial tokens first, then pointers
    let k = g.concat(&[&k_mem, &k_ptr], 2);
    let x = g.concat(&[&mem.mem_v, &mem.ptr_v], 1);
    attend_raw_values(g, vb, dm, rope.len, &q, &k, &x)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::{RandomWeights, Weights};

    /// The reason for [`MEM_ATTN_QUERY_BLOCK`]: at TensorRT's largest profile, one block's
    /// cross-attention scores (all keys: memory frames and pointers) are no larger than
    /// the feed-forward's hidden layer, for every official model.
    #[test]
    fn query_block_scores_stay_under_the_feed_forward() {
        use crate::trt::profiles::{axis_range, ProfileRanges};
        let r = ProfileRanges::default();
        for name in crate::config::MODEL_NAMES {
            let cfg = ModelConfig::builtin(name).unwrap();
            let keys = axis_range("mem_tokens", &cfg, &r).unwrap().2 + axis_range("ptr_tokens", &cfg, &r).unwrap().2;
            let scores = MEM_ATTN_QUERY_BLOCK as i64 * keys;
            let e = cfg.embed_side() as i64;
            let hidden = e * e * cfg.memory_attention.dim_feedforward as i64;
            assert!(scores <= hidden, "{name}: {scores} scores per block > {hidden} hidden");
        }
    }

    #[test]
    fn builds_for_every_official_config() {
        for name in crate::config::MODEL_NAMES {
            let cfg = ModelConfig::builtin(name).unwrap();
            let w = Weights::new(Box::new(RandomWeights { seed: 0 }));
            let g = build_memory_attention(&cfg, &w.root()).unwrap();
            let model = g.into_model("test", vec![]);
            let cos = model.graph.initializers.iter().find(|t| t.name == "memory_attention.rope_cos").unwrap();
            assert_eq!(cos.dims, vec![4096, 128, 1], "{name}");
            let names: Vec<&str> = model.graph.initializers.iter().map(|t| t.name.as_str()).collect();
            assert!(names.contains(&"memory_attention.layers.3.cross_attn_image.k_proj.weight^T"));
            assert!(names.contains(&"memory_attention.norm.bias"));
        }
    }
}
