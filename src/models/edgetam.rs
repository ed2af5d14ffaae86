//! (in progress) EdgeTAM graphs: RepViT image encoder, memory encoder + spatial
//! perceiver, memory attention with `RoPEAttentionv2`. The prompt decoder is SAM 2's.
use crate::config::ModelConfig;
use crate::error::{graph_err, Result};
use crate::onnx::Graph;
use crate::weights::Vb;

/// `image_encoder.onnx` for EdgeTAM.
pub fn build_edgetam_image_encoder(cfg: &ModelConfig, vb: &Vb) -> Result<Graph> {
    let _ = (cfg, vb);
    Err(graph_err("edgetam image encoder: not built yet"))
}

/// `memory_encoder.onnx` for EdgeTAM.
pub fn build_edgetam_memory_encoder(cfg: &ModelConfig, vb: &Vb) -> Result<Graph> {
    let _ = (cfg, vb);
    Err(graph_err("edgetam memory encoder: not built yet"))
}

/// `memory_attention.onnx` for EdgeTAM.
pub fn build_edgetam_memory_attention(cfg: &ModelConfig, vb: &Vb) -> Result<Graph> {
    let _ = (cfg, vb);
    Err(graph_err("edgetam memory attention: not built yet"))
}
