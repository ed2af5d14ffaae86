//! (in progress)
use crate::config::ModelConfig;
use crate::error::{graph_err, Result};
use crate::onnx::Graph;
use crate::weights::Vb;

/// Build `prompt_decoder.onnx` (see `export/README.md`).
pub fn build_prompt_decoder(cfg: &ModelConfig, vb: &Vb) -> Result<Graph> {
    let _ = (cfg, vb);
    Err(graph_err("prompt_decoder: not built yet"))
}
