//! SAM 2's memory attention on the CPU with the attention cores in fused kernels (the
//! cross-attention in [`super::rope_cross_attention`], the self-attention in
//! [`super::self_attention`]) and everything else in ONNX Runtime: the
//! exported `memory_attention.onnx` is rebuilt at load, from its own weights, as the
//! pieces of [`crate::models::memory_attention_split`] (one ONNX Runtime session each),
//! and the tables of the kernel come from its `k_proj` weights.
//!
//! Used by [`super::ort::OrtBackend`] for SAM 2 / 2.1 models on x86-64 CPUs with
//! AVX-512F (EdgeTAM's memory attention and other CPUs run the exported graph as is);
//! `TAMRT_CPU_CROSS_ATTENTION=onnx` runs the exported graph everywhere. The first piece
//! (layer 0 up to its cross-attention queries) depends only on the frame: when the
//! tracker calls again with the same `curr` / `curr_pos` (the next objects of the same
//! frame), its outputs are reused.
//!
//! Per layer l: `post_self[l]` needs the self-attention core of what `first` (l = 0) or
//! `mids[l-1]` gave; the cross-attention core of its queries feeds `mids[l]` or `last`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::ort::OrtSession;
use super::rope_cross_attention::{attend, Call, Dims, LayerTables};
use super::self_attention;
use super::{take_output, ComponentSession};
use crate::config::ModelConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::Manifest;
use crate::models::memory_attention_split::{build_split, ROPE_INPUTS};
use crate::models::rope::AxialRope;
use crate::onnx::proto::read_f32_initializers;
use crate::weights::{missing_error, shape_error, TensorF32, WeightSource, Weights};

/// The exported graph's inputs, in its order.
const INPUTS: [&str; 6] = ["curr", "curr_pos", "memory", "memory_pos", "obj_ptrs", "obj_ptrs_pos"];

/// Why the split path does not apply to `cfg` here, if it does not.
pub fn unsupported(cfg: &ModelConfig) -> Option<String> {
    if std::env::var("TAMRT_CPU_CROSS_ATTENTION").as_deref() == Ok("onnx") {
        return Some("TAMRT_CPU_CROSS_ATTENTION=onnx".into());
    }
    let ma = &cfg.memory_attention;
    if cfg.perceiver.is_some() || ma.rope_v2_k_sizes.is_some() {
        return Some("EdgeTAM's memory attention keeps its graph".into());
    }
    if ma.num_heads != 1 {
        return Some(format!("{} attention heads (the kernel does one)", ma.num_heads));
    }
    let (d, e) = (cfg.hidden_dim(), cfg.embed_side());
    Dims { d, kv: cfg.mem_dim(), e }.unsupported().or_else(|| self_attention::unsupported(e * e, e * e, d, d))
}

/// The split session for the memory attention of the model in `model_dir` (graph at
/// `path`), or None where it does not apply (reason logged) or cannot be built (warned;
/// the exported graph then runs as is).
pub fn try_load(model_dir: &Path, path: &Path, threads: usize) -> Option<SplitAttentionSession> {
    let manifest = Manifest::read(model_dir).ok()?;
    if let Some(why) = unsupported(&manifest.config) {
        tracing::debug!("memory attention: the exported graph on ONNX Runtime ({why})");
        return None;
    }
    match SplitAttentionSession::load(path, &manifest.config, threads) {
        Ok(s) => {
            tracing::info!("memory attention: ONNX Runtime with fused AVX-512 attention cores");
            Some(s)
        }
        Err(e) => {
            tracing::warn!("memory attention: the exported graph on ONNX Runtime (the split path failed: {e})");
            None
        }
    }
}

/// A graph's float32 initializers as a [`WeightSource`]: a Linear weight asked for in
/// torch layout `[out, in]` is served from the exported `<name>^T` `[in, out]`.
struct GraphWeights {
    file: String,
    tensors: HashMap<String, (Vec<usize>, Vec<f32>)>,
}

impl WeightSource for GraphWeights {
    fn load(&self, name: &str, expected: &[usize]) -> Result<TensorF32> {
        if let Some((dims, data)) = self.tensors.get(name) {
            if dims != expected {
                return Err(shape_error(&self.file, name, expected, dims));
            }
            return Ok(TensorF32::new(dims.clone(), data.clone()));
        }
        if let (Some((dims, data)), [o, i]) = (self.tensors.get(&format!("{name}^T")), expected) {
            if dims != &[*i, *o] {
                return Err(shape_error(&self.file, &format!("{name}^T"), &[*i, *o], dims));
            }
            return Ok(TensorF32::new(dims.clone(), data.clone()).t());
        }
        Err(missing_error(&self.file, name))
    }
    fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name) || self.tensors.contains_key(&format!("{name}^T"))
    }
    fn names(&self) -> Vec<String> {
        self.tensors.keys().cloned().collect()
    }
    fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
        self.tensors.get(name).map(|(d, _)| d.clone())
    }
    fn describe(&self) -> String {
        self.file.clone()
    }
}

/// Layer 0's queries of the last frame seen (see the module doc), keyed by the frame's
/// fingerprint.
struct FirstCache {
    key: (Vec<usize>, u64),
    tgt: TensorF32,
    q: TensorF32,
}

/// A 64-bit fingerprint of `curr` and `curr_pos` (every value's bits through a
/// multiply-xorshift mix): tells the same frame from another without a copy of it. Two
/// different frames share one with probability about 2⁻⁶⁴.
fn fingerprint(curr: &TensorF32, curr_pos: &TensorF32) -> (Vec<usize>, u64) {
    let mut h = 0x243F_6A88_85A3_08D3u64;
    for v in curr.data.iter().chain(&curr_pos.data) {
        h = (h ^ v.to_bits() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        h ^= h >> 29;
    }
    (curr.shape.clone(), h)
}

/// The memory attention as ONNX Runtime pieces around the fused kernels.
pub struct SplitAttentionSession {
    first: OrtSession,
    post_self: Vec<OrtSession>,
    mids: Vec<OrtSession>,
    last: OrtSession,
    tables: Vec<LayerTables>,
    /// `rope_cos`, `rope_sin` of the pieces ([E·E, C/2, 1])
    rope: [TensorF32; 2],
    dims: Dims,
    threads: usize,
    path: PathBuf,
    cache: Option<FirstCache>,
}

impl SplitAttentionSession {
    /// Rebuild `path` (an exported SAM 2 `memory_attention.onnx` of `cfg`) as pieces.
    pub fn load(path: &Path, cfg: &ModelConfig, threads: usize) -> Result<SplitAttentionSession> {
        let file = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, "cannot read", e))?;
        let inits = read_f32_initializers(&bytes, |n| {
            n.starts_with("memory_attention.layers.") || n.starts_with("memory_attention.norm.")
        })
        .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("'{file}': {e}")))?;
        drop(bytes);
        let src =
            GraphWeights { file: file.clone(), tensors: inits.into_iter().map(|(n, d, v)| (n, (d, v))).collect() };
        let (d, kv, e) = (cfg.hidden_dim(), cfg.mem_dim(), cfg.embed_side());
        let dims = Dims { d, kv, e };
        let rope = AxialRope::new(d, e, e, cfg.memory_attention.rope_theta);
        let mut tables = Vec::new();
        for l in 0..cfg.memory_attention.num_layers {
            let k = format!("memory_attention.layers.{l}.cross_attn_image.k_proj");
            let wk = src.load(&format!("{k}.weight"), &[d, kv])?;
            let bk = src.load(&format!("{k}.bias"), &[d])?;
            tables.push(LayerTables::new(dims, &wk.data, &bk.data, &rope.cos, &rope.sin)?);
        }
        let weights = Weights::new(Box::new(src));
        let split = build_split(cfg, &weights.root())?;
        let session = |g: crate::onnx::graph::Graph| {
            let name = path.with_file_name(format!("{}.onnx", g.name()));
            let bytes = g.into_model(env!("CARGO_PKG_VERSION"), vec![]).to_bytes();
            OrtSession::load_bytes(&name, &bytes, threads)
        };
        Ok(SplitAttentionSession {
            first: session(split.first)?,
            post_self: split.post_self.into_iter().map(session).collect::<Result<_>>()?,
            mids: split.mids.into_iter().map(session).collect::<Result<_>>()?,
            last: session(split.last)?,
            tables,
            rope: [rope.cos, rope.sin].map(|t| TensorF32::new(vec![e * e, d / 2, 1], t)),
            dims,
            threads: if threads > 0 { threads } else { std::thread::available_parallelism().map_or(1, |n| n.get()) },
            path: path.to_path_buf(),
            cache: None,
        })
    }

    fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::new(ErrorKind::Backend, format!("{}: {msg}", self.path.display()))
    }

    /// `tgt` and `q` of layer 0 for this frame: from the cache when `curr` and
    /// `curr_pos` are the last call's, else from the first piece.
    fn first_outputs(&mut self, curr: &TensorF32, curr_pos: &TensorF32) -> Result<(TensorF32, TensorF32)> {
        let key = fingerprint(curr, curr_pos);
        if let Some(c) = self.cache.as_ref().filter(|c| c.key == key) {
            tracing::debug!("memory attention: layer 0 queries reused (same frame)");
            return Ok((c.tgt.clone(), c.q.clone()));
        }
        tracing::debug!("memory attention: layer 0 queries computed");
        let [cos, sin] = &self.rope;
        let t0 = std::time::Instant::now();
        let out =
            self.first.run(&[("curr", curr), ("curr_pos", curr_pos), (ROPE_INPUTS[0], cos), (ROPE_INPUTS[1], sin)])?;
        tracing::trace!("memory attention piece first: {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
        let (tgt, q) = self.self_attention(0, out)?;
        // only a frame shared by all objects (batch 1) comes back for the next objects
        self.cache = (curr.shape[0] == 1).then(|| FirstCache { key, tgt: tgt.clone(), q: q.clone() });
        Ok((tgt, q))
    }

    /// Layer `l` from the outputs of `first` / `mids[l-1]` (`tgt_out`, `sq`, `sk`, `sv`) to
    /// its cross-attention queries: the self-attention core, then `post_self[l]`.
    /// Returns (`tgt`, `q`).
    fn self_attention(&mut self, l: usize, mut out: Vec<(String, TensorF32)>) -> Result<(TensorF32, TensorF32)> {
        let tgt = take_output(&mut out, "tgt_out")?;
        let [q, k, v] = ["sq", "sk", "sv"].map(|name| take_output(&mut out, name));
        let (q, k, v) = (q?, k?, v?);
        let (batch, n, d) = match q.shape[..] {
            [b, n, d] if k.shape == q.shape && v.shape == q.shape => (b, n, d),
            _ => return Err(self.err(format!("self-attention inputs {:?} / {:?} / {:?}", q.shape, k.shape, v.shape))),
        };
        let t0 = std::time::Instant::now();
        let shape = self_attention::Shape { batch, n, m: n, d, dv: d };
        let sa =
            TensorF32::new(vec![batch, n, d], self_attention::attend(&q.data, &k.data, &v.data, shape, self.threads)?);
        // the core's inputs go before the next piece allocates (peak memory at two objects)
        drop((q, k, v, out));
        tracing::trace!(
            "memory attention layer {l}: fused self-attention {:.1} ms ({batch} batch)",
            t0.elapsed().as_secs_f64() * 1e3
        );
        let [cos, sin] = &self.rope;
        let t0 = std::time::Instant::now();
        let mut out =
            self.post_self[l].run(&[("tgt", &tgt), ("sa", &sa), (ROPE_INPUTS[0], cos), (ROPE_INPUTS[1], sin)])?;
        tracing::trace!("memory attention piece post_self{l}: {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
        Ok((take_output(&mut out, "tgt_out")?, take_output(&mut out, "q")?))
    }
}

/// `a + b`, same shapes.
fn sum(a: &TensorF32, b: &TensorF32) -> Vec<f32> {
    a.data.iter().zip(&b.data).map(|(x, y)| x + y).collect()
}

impl ComponentSession for SplitAttentionSession {
    fn run(&mut self, inputs: &[(&str, &TensorF32)]) -> Result<Vec<(String, TensorF32)>> {
        let get = |name: &str| {
            inputs
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, t)| *t)
                .ok_or_else(|| self.err(format!("input '{name}' not given")))
        };
        let [curr, curr_pos, memory, memory_pos, ptrs, ptrs_pos] = INPUTS.map(get);
        let (curr, curr_pos, memory, memory_pos, ptrs, ptrs_pos) =
            (curr?, curr_pos?, memory?, memory_pos?, ptrs?, ptrs_pos?);
        let Dims { d, kv, e } = self.dims;
        let n = e * e;
        let batch3 = |t: &TensorF32, what: &str| -> Result<(usize, usize)> {
            match t.shape[..] {
                [b, tokens, w] if w == kv => Ok((b, tokens)),
                _ => Err(self.err(format!("input '{what}' has shape {:?}, expected [objects, tokens, {kv}]", t.shape))),
            }
        };
        let (objects, tokens) = batch3(memory, "memory")?;
        let (po, pointers) = batch3(ptrs, "obj_ptrs")?;
        if po != objects || memory_pos.shape != memory.shape || ptrs_pos.shape != ptrs.shape {
            return Err(self.err(format!(
                "memory {:?} / memory_pos {:?} / obj_ptrs {:?} / obj_ptrs_pos {:?} disagree",
                memory.shape, memory_pos.shape, ptrs.shape, ptrs_pos.shape
            )));
        }
        if !tokens.is_multiple_of(n) {
            return Err(self.err(format!("memory has {tokens} tokens, not whole frames of {n}")));
        }
        if !matches!(curr.shape[..], [_, c, h, w] if (c, h, w) == (d, e, e)) || curr_pos.shape != curr.shape {
            return Err(self.err(format!(
                "curr {:?} / curr_pos {:?}, expected [batch, {d}, {e}, {e}]",
                curr.shape, curr_pos.shape
            )));
        }
        let (mem_k, ptr_k) = (sum(memory, memory_pos), sum(ptrs, ptrs_pos));
        let (mut tgt, mut q) = self.first_outputs(curr, curr_pos)?;
        let layers = self.tables.len();
        for l in 0..layers {
            let call = Call {
                q: &q.data,
                bq: q.shape[0],
                mem_k: &mem_k,
                mem_v: &memory.data,
                ptr_k: &ptr_k,
                ptr_v: &ptrs.data,
                objects,
                frames: tokens / n,
                pointers,
            };
            let t0 = std::time::Instant::now();
            let attn = TensorF32::new(vec![objects, n, kv], attend(&self.tables[l], &call, self.threads)?);
            tracing::trace!(
                "memory attention layer {l}: fused cross-attention {:.1} ms ({objects} objects, {} frames, {pointers} pointers)",
                t0.elapsed().as_secs_f64() * 1e3,
                tokens / n
            );
            let t0 = std::time::Instant::now();
            if l + 1 == layers {
                let mut out = self.last.run(&[("tgt", &tgt), ("attn", &attn)])?;
                tracing::trace!("memory attention piece last: {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
                return Ok(vec![("pix_feat_with_mem".to_string(), take_output(&mut out, "pix_feat_with_mem")?)]);
            }
            let [cos, sin] = &self.rope;
            let out =
                self.mids[l].run(&[("tgt", &tgt), ("attn", &attn), (ROPE_INPUTS[0], cos), (ROPE_INPUTS[1], sin)])?;
            tracing::trace!("memory attention piece mid{l}: {:.1} ms", t0.elapsed().as_secs_f64() * 1e3);
            (tgt, q) = self.self_attention(l + 1, out)?;
        }
        Err(self.err("no layers"))
    }

    fn backend_name(&self) -> &str {
        "ort-cpu"
    }

    fn input_names(&self) -> Vec<String> {
        INPUTS.iter().map(|s| s.to_string()).collect()
    }
}
