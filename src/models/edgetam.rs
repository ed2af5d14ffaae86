//! EdgeTAM graphs (`configs/edgetam.yaml` of facebookresearch/EdgeTAM): RepViT-M1 image
//! encoder ([`repvit`]), memory encoder followed by the spatial perceiver
//! ([`perceiver`](super::perceiver)), memory attention with `RoPEAttentionv2`
//! ([`memory_attention_v2`]). The prompt decoder is SAM 2's.
//! Contracts: `export/README.md`, EdgeTAM section.

use std::sync::Arc;

use crate::config::{Backbone, ModelConfig};
use crate::dims;
use crate::error::{graph_err, Result};
use crate::models::memory_encoder::{inputs_and_memory_encoder, Encoded};
use crate::models::perceiver::{build_perceiver, PerceiverDims};
use crate::models::position_encoding::sine_position_encoding;
use crate::models::{memory_attention_v2, repvit};
use crate::onnx::graph::Graph;
use crate::onnx::proto::DataType;
use crate::weights::Vb;

/// `image_encoder.onnx` for EdgeTAM: `SAM2Base.forward_image` with the RepViT trunk
/// (same outputs as SAM 2's).
pub fn build_edgetam_image_encoder(cfg: &ModelConfig, vb: &Vb) -> Result<Graph> {
    let Backbone::Repvit { channels } = &cfg.backbone else {
        return Err(graph_err(format!("edgetam image_encoder: model '{}' has no RepViT backbone", cfg.name)));
    };
    if !cfg.sam.use_high_res_features_in_sam {
        return Err(graph_err("image_encoder: use_high_res_features_in_sam = false is not supported"));
    }
    let rev: Vec<usize> = channels.iter().rev().copied().collect();
    if rev != cfg.neck.backbone_channel_list {
        return Err(graph_err(format!(
            "image_encoder: trunk channels {channels:?} do not match neck backbone_channel_list {:?}",
            cfg.neck.backbone_channel_list
        )));
    }
    let s = cfg.image_size;
    let mut g = Graph::new("image_encoder");
    g.set_doc("EdgeTAM SAM2Base.forward_image: RepViT-M1 (BatchNorm folded), FPN neck, scalp, conv_s0/conv_s1");
    let image = g.input("image", DataType::Float, dims![1i64, 3, s as i64, s as i64]);
    let enc = vb.pp("image_encoder");
    let xs = repvit::build_repvit(&mut g, &enc.pp("trunk"), channels, &image, s)?;
    crate::models::image_encoder::neck_and_heads(&mut g, cfg, vb, xs)?;
    Ok(g)
}

/// `memory_encoder.onnx` for EdgeTAM: `SAM2Base._encode_new_memory` = mask for memory,
/// `MemoryEncoder`, then `spatial_perceiver(maskmem_features, maskmem_pos_enc[0])`.
/// Outputs are token-major: `maskmem_features` / `maskmem_pos_enc` `[B, N1 + N2, M]`.
pub fn build_edgetam_memory_encoder(cfg: &ModelConfig, vb: &Vb) -> Result<Graph> {
    let p = cfg.perceiver.as_ref().ok_or_else(|| graph_err("edgetam memory_encoder: no perceiver config"))?;
    let (m, e) = (cfg.mem_dim(), cfg.embed_side());
    let mi = m as i64;
    let pd = PerceiverDims::new(p, m, e)?;
    if cfg.no_obj_embed_spatial {
        return Err(graph_err("edgetam memory_encoder: no_obj_embed_spatial is not part of EdgeTAM"));
    }
    let mut g = Graph::new("memory_encoder");
    g.set_doc("EdgeTAM SAM2Base._encode_new_memory: mask for memory, MemoryEncoder, spatial perceiver");
    // `object_score_logits` is not used by EdgeTAM (no `no_obj_embed_spatial`): it stays
    // an input for the common contract
    let Encoded { x, score: _ } = inputs_and_memory_encoder(&mut g, cfg, vb)?;

    // `maskmem_pos_enc[0]`: PositionEmbeddingSine(M) of the E×E grid, token-major
    let pe = sine_position_encoding(m, e, e);
    let mut tok = vec![0f32; e * e * m];
    for t in 0..e * e {
        for ch in 0..m {
            tok[t * m + ch] = pe.data[ch * e * e + t];
        }
    }
    let pos_tokens = g.initializer("memory_encoder.position_encoding.tokens", &[1, e * e, m], Arc::from(tok));
    let svb = vb.pp("spatial_perceiver");
    let out = g.scoped("spatial_perceiver", |g| build_perceiver(g, p, &pd, &svb, &x, &pos_tokens))?;
    let n = pd.tokens() as i64;
    g.output(&out.latents, "maskmem_features", DataType::Float, dims!["objects", n, mi]);
    g.output(&out.pos, "maskmem_pos_enc", DataType::Float, dims!["objects", n, mi]);
    Ok(g)
}

/// `memory_attention.onnx` for EdgeTAM.
pub fn build_edgetam_memory_attention(cfg: &ModelConfig, vb: &Vb) -> Result<Graph> {
    memory_attention_v2::build_memory_attention_v2(cfg, vb)
}

// ------------------------------------------------------------------------------------
#[cfg(test)]
mod tests {
    use super::*;
    use crate::weights::{RandomWeights, TensorF32, WeightSource, Weights};

    /// Random weights with positive BatchNorm variances.
    struct PositiveVar(RandomWeights);

    impl WeightSource for PositiveVar {
        fn load(&self, name: &str, expected: &[usize]) -> Result<TensorF32> {
            let mut t = self.0.load(name, expected)?;
            if name.ends_with("running_var") {
                t.data.iter_mut().for_each(|v| *v = 1.0 + v.abs());
            }
            Ok(t)
        }
        fn contains(&self, name: &str) -> bool {
            self.0.contains(name)
        }
        fn names(&self) -> Vec<String> {
            self.0.names()
        }
        fn shape_of(&self, name: &str) -> Option<Vec<usize>> {
            self.0.shape_of(name)
        }
        fn describe(&self) -> String {
            self.0.describe()
        }
    }

    #[test]
    fn edgetam_graphs_build_without_batch_norm() {
        let cfg = ModelConfig::edgetam();
        let w = Weights::new(Box::new(PositiveVar(RandomWeights { seed: 0 })));
        let g = build_edgetam_image_encoder(&cfg, &w.root()).unwrap();
        let ops = g.op_types();
        assert!(!ops.iter().any(|o| o == "BatchNormalization"), "{ops:?}");
        let m = g.into_model("test", vec![]);
        let names: Vec<&str> = m.graph.initializers.iter().map(|t| t.name.as_str()).collect();
        assert!(names.contains(&"image_encoder.trunk.body.stages_2.blocks.13.token_mixer.fused.weight"));
        assert!(!names.iter().any(|n| n.contains("stages_2.blocks.14")));
        let g = build_edgetam_memory_encoder(&cfg, &w.root()).unwrap();
        let out: Vec<String> = g.outputs().iter().map(|o| format!("{}{:?}", o.name, o.dims)).collect();
        assert_eq!(g.outputs().len(), 2, "{out:?}");
    }
}
