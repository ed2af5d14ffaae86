//! (in progress)
use crate::config::ModelConfig;
use crate::error::{graph_err, Result};
use crate::onnx::Graph;
use crate::weights::Vb;

/// Build `memory_encoder.onnx` (see `export/README.md`).
pub fn build_memory_encoder(cfg: &ModelConfig, vb: &Vb) -> Result<Graph> {
    let _ = (cfg, vb);
    Err(graph_err("memory_encoder: not built yet"))
}
