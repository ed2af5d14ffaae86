//! `memory_encoder.onnx`: `SAM2Base._encode_new_memory` from the high-res mask logits on
//! (`sam2/modeling/sam2_base.py`, `sam2/modeling/memory_encoder.py`).
//!
//! `_encode_new_memory` calls `self.memory_encoder(pix_feat, mask_for_mem,
//! skip_mask_sigmoid=True)`, so `MemoryEncoder`'s own sigmoid never runs: the only
//! sigmoid is the one before the scale and bias.

use crate::config::ModelConfig;
use crate::dims;
use crate::error::{graph_err, Result};
use crate::models::position_encoding::sine_position_encoding;
use crate::onnx::graph::{ConvOpts, Graph};
use crate::onnx::nn::{conv2d, layer_norm, layer_norm_2d, linear};
use crate::onnx::proto::DataType;
use crate::onnx::Value;
use crate::weights::Vb;

/// `LayerNorm2d` default eps (MaskDownSampler) and `CXBlock.norm` eps.
const LN2D_EPS: f32 = 1e-6;
/// `MaskDownSampler(kernel_size=3, stride=2, padding=1)` in every official yaml.
const DS_KERNEL: usize = 3;
const DS_STRIDE: usize = 2;
const DS_PADDING: i64 = 1;

/// The graph inputs shared by SAM 2's and EdgeTAM's memory encoders, mask for memory and
/// `MemoryEncoder`: `x` (`maskmem_features` before any model-specific tail) and the
/// `object_score_logits` input.
pub(crate) struct Encoded {
    pub x: Value,
    pub score: Value,
}

/// Declare the memory-encoder inputs (`export/README.md`) and build `mask_for_mem` and
/// `MemoryEncoder` on them.
pub(crate) fn inputs_and_memory_encoder(g: &mut Graph, cfg: &ModelConfig, vb: &Vb) -> Result<Encoded> {
    let me = &cfg.memory_encoder;
    let (c, e, s) = (cfg.hidden_dim(), cfg.embed_side(), cfg.image_size);
    if me.mask_downsampler_embed_dim != c {
        return Err(graph_err(format!(
            "memory_encoder: mask_downsampler_embed_dim {} != hidden dim {c} (`x = x + masks`)",
            me.mask_downsampler_embed_dim
        )));
    }
    let (ci, ei, si) = (c as i64, e as i64, s as i64);
    // `curr_batch`: 1 (the frame's features, broadcast over the objects by `x + masks`)
    // or one per object
    let pix_feat = g.input("pix_feat", DataType::Float, dims!["curr_batch", ci, ei, ei]);
    let mask = g.input("mask_high_res", DataType::Float, dims!["objects", 1, si, si]);
    let score = g.input("object_score_logits", DataType::Float, dims!["objects", 1]);
    let binarize = g.input("binarize", DataType::Float, dims![1]);

    let mask_for_mem = g.scoped("mask_for_mem", |g| mask_for_mem(g, cfg, &mask, &binarize));
    let vbm = vb.pp("memory_encoder");
    let x = g.scoped("memory_encoder", |g| memory_encoder(g, cfg, &vbm, &pix_feat, &mask_for_mem))?;
    Ok(Encoded { x, score })
}

/// Build `memory_encoder.onnx` (see `export/README.md`).
pub fn build_memory_encoder(cfg: &ModelConfig, vb: &Vb) -> Result<Graph> {
    let (m, e) = (cfg.mem_dim(), cfg.embed_side());
    let (mi, ei) = (m as i64, e as i64);
    let mut g = Graph::new("memory_encoder");
    g.set_doc("SAM 2 SAM2Base._encode_new_memory: mask for memory, MemoryEncoder, no_obj_embed_spatial");
    let Encoded { x, score } = inputs_and_memory_encoder(&mut g, cfg, vb)?;

    // `maskmem_features += (1 - is_obj_appearing[..., None, None]) * self.no_obj_embed_spatial[..., None, None]`
    let features = if cfg.no_obj_embed_spatial {
        g.scoped("no_obj_embed_spatial", |g| -> Result<Value> {
            let t = vb.tensor("no_obj_embed_spatial", &[1, m])?;
            let emb = g.initializer(&vb.path("no_obj_embed_spatial"), &[1, m, 1, 1], t.data.into());
            // `is_obj_appearing = (object_score_logits > 0).float()`
            let (zero, one) = (g.scalar(0.0), g.scalar(1.0));
            let appearing = g.greater(&score, &zero);
            let appearing = g.where_(&appearing, &one, &zero);
            // `1 - is_obj_appearing`
            let absent = g.sub(&one, &appearing);
            let absent = g.unsqueeze(&absent, &[2, 3]);
            let add = g.mul(&absent, &emb);
            Ok(g.add(&x, &add))
        })?
    } else {
        x
    };

    // `pos = self.position_encoding(x)`: PositionEmbeddingSine(out_dim) on the E×E grid,
    // input-independent, repeated over the objects.
    let pe = sine_position_encoding(m, e, e);
    let pe = g.initializer("memory_encoder.position_encoding", &[1, m, e, e], pe.data.into());
    let shape = g.shape(&features);
    let pos = g.expand(&pe, &shape);

    g.output(&features, "maskmem_features", DataType::Float, dims!["objects", mi, ei, ei]);
    g.output(&pos, "maskmem_pos_enc", DataType::Float, dims!["objects", mi, ei, ei]);
    Ok(g)
}

/// The mask `_encode_new_memory` feeds the memory encoder, from high-res logits.
pub(crate) fn mask_for_mem(g: &mut Graph, cfg: &ModelConfig, mask: &Value, binarize: &Value) -> Value {
    // `binarize = self.binarize_mask_from_pts_for_mem_enc and is_mask_from_pts`
    // `mask_for_mem = torch.sigmoid(pred_masks_high_res)`
    let sig = g.sigmoid(mask);
    let mut x = if cfg.binarize_mask_from_pts_for_mem_enc {
        // `mask_for_mem = (pred_masks_high_res > 0).float()`
        // (`Where(mask > 0, 1, 0)` rather than a bool→float Cast, for TensorRT 8.5)
        let (zero, one) = (g.scalar(0.0), g.scalar(1.0));
        let pos = g.greater(mask, &zero);
        let bin = g.where_(&pos, &one, &zero);
        let half = g.scalar(0.5);
        let on = g.greater(binarize, &half);
        g.where_(&on, &bin, &sig)
    } else {
        sig
    };
    // `if self.sigmoid_scale_for_mem_enc != 1.0: mask_for_mem = mask_for_mem * scale`
    if cfg.sigmoid_scale_for_mem_enc != 1.0 {
        x = g.mul_scalar(&x, cfg.sigmoid_scale_for_mem_enc);
    }
    // `if self.sigmoid_bias_for_mem_enc != 0.0: mask_for_mem = mask_for_mem + bias`
    if cfg.sigmoid_bias_for_mem_enc != 0.0 {
        x = g.add_scalar(&x, cfg.sigmoid_bias_for_mem_enc);
    }
    x
}

/// `MemoryEncoder.forward(pix_feat, masks, skip_mask_sigmoid=True)["vision_features"]`.
pub(crate) fn memory_encoder(
    g: &mut Graph,
    cfg: &ModelConfig,
    vb: &Vb,
    pix_feat: &Value,
    masks: &Value,
) -> Result<Value> {
    let me = &cfg.memory_encoder;
    let (c, m) = (cfg.hidden_dim(), cfg.mem_dim());
    // `masks = self.mask_downsampler(masks)`
    let masks = g.scoped("mask_downsampler", |g| {
        mask_downsampler(g, &vb.pp("mask_downsampler"), masks, me.mask_downsampler_total_stride, c)
    })?;
    // `x = self.pix_feat_proj(pix_feat)`; `x = x + masks`
    let x = conv2d(g, &vb.pp("pix_feat_proj"), pix_feat, c, c, 1, &ConvOpts::default(), true)?;
    let mut x = g.add(&x, &masks);
    // `x = self.fuser(x)` (`Fuser.proj` is Identity: input_projection=False)
    for i in 0..me.fuser_num_layers {
        let lvb = vb.pp("fuser").pp("layers").pp(i);
        x = g.scoped(&format!("fuser.layers.{i}"), |g| cx_block(g, &lvb, &x, c, me.fuser_kernel_size))?;
    }
    // `x = self.out_proj(x)` (Identity when out_dim == in_dim)
    if m != c {
        x = conv2d(g, &vb.pp("out_proj"), &x, c, m, 1, &ConvOpts::default(), true)?;
    }
    Ok(x)
}

/// `MaskDownSampler.forward`: `num_layers` × (Conv2d k3 s2 p1, LayerNorm2d, GELU) with
/// channels ×4 each time (`mask_out_chans = mask_in_chans * (stride**2)`), then a 1×1
/// Conv2d to `embed_dim`. Modules are `encoder.{3i}`, `.{3i+1}` and `encoder.{3n}`.
fn mask_downsampler(g: &mut Graph, vb: &Vb, x: &Value, total_stride: usize, embed_dim: usize) -> Result<Value> {
    // `num_layers = int(math.log2(total_stride) // math.log2(stride))`
    let mut num_layers = 0;
    while DS_STRIDE.pow(num_layers + 1) <= total_stride {
        num_layers += 1;
    }
    if DS_STRIDE.pow(num_layers) != total_stride {
        return Err(graph_err(format!("mask downsampler total_stride {total_stride} is not a power of {DS_STRIDE}")));
    }
    let enc = vb.pp("encoder");
    let opts = ConvOpts::stride(DS_STRIDE as i64).with_pad(DS_PADDING);
    let (mut cin, mut x) = (1usize, x.clone());
    for i in 0..num_layers as usize {
        let cout = cin * DS_STRIDE * DS_STRIDE;
        x = conv2d(g, &enc.pp(3 * i), &x, cin, cout, DS_KERNEL, &opts, true)?;
        x = layer_norm_2d(g, &enc.pp(3 * i + 1), &x, cout, LN2D_EPS)?;
        x = g.gelu(&x);
        cin = cout;
    }
    conv2d(g, &enc.pp(3 * num_layers as usize), &x, cin, embed_dim, 1, &ConvOpts::default(), true)
}

/// `CXBlock.forward`: dwconv → LayerNorm2d → NHWC → pwconv1 → GELU → pwconv2 → gamma →
/// NCHW → residual (drop_path is Identity at inference). The permute to NHWC comes before
/// the norm here, which makes LayerNorm2d (over channels) a LayerNorm over the last axis:
/// same values, and a pattern ONNX Runtime runs as one kernel.
fn cx_block(g: &mut Graph, vb: &Vb, input: &Value, dim: usize, kernel: usize) -> Result<Value> {
    let opts = ConvOpts::default().with_pad((kernel / 2) as i64).with_group(dim as i64);
    // `x = self.dwconv(x)`
    let x = conv2d(g, &vb.pp("dwconv"), input, dim, dim, kernel, &opts, true)?;
    // `x = x.permute(0, 2, 3, 1)` (moved up), then `x = self.norm(x)`
    let x = g.transpose(&x, &[0, 2, 3, 1]);
    let x = layer_norm(g, &vb.pp("norm"), &x, dim, LN2D_EPS)?;
    let x = linear(g, &vb.pp("pwconv1"), &x, dim, 4 * dim, true)?;
    let x = g.gelu(&x);
    let x = linear(g, &vb.pp("pwconv2"), &x, 4 * dim, dim, true)?;
    // `x = self.gamma * x`
    let gamma = vb.get(g, "gamma", &[dim])?;
    let x = g.mul(&gamma, &x);
    // `x = x.permute(0, 3, 1, 2)`; `x = input + self.drop_path(x)`
    let x = g.transpose(&x, &[0, 3, 1, 2]);
    Ok(g.add(input, &x))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::{RandomWeights, Weights};

    #[test]
    fn builds_for_every_official_config() {
        for name in crate::config::MODEL_NAMES {
            let cfg = ModelConfig::builtin(name).unwrap();
            let w = Weights::new(Box::new(RandomWeights { seed: 0 }));
            let g = build_memory_encoder(&cfg, &w.root()).unwrap();
            let model = g.into_model("test", vec![]);
            let names: Vec<&str> = model.graph.initializers.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(names.contains(&"no_obj_embed_spatial"), cfg.no_obj_embed_spatial, "{name}");
            assert!(names.contains(&"memory_encoder.mask_downsampler.encoder.12.weight"), "{name}");
            assert!(!names.contains(&"memory_encoder.mask_downsampler.encoder.15.weight"), "{name}");
        }
    }
}
