//! Parity self-check of freshly built engines against ONNX Runtime (mask decoder results
//! are wrong on TensorRT before 10.9 on Orin): one synthetic input per graph, shaped at
//! the optimization profile's `opt` point; the verdict is stored beside the engine
//! (`<engine>.parity.json`) and an engine that failed it is never loaded — that
//! component runs on ONNX Runtime and the report says why.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::manifest::GraphSpec;
use crate::weights::TensorF32;

/// Reduced-precision engines differ from fp32 ONNX Runtime by rounding; a wrong engine
/// differs by O(1). fp32 engines must agree to 1e-3, fp16/bf16 ones to 5e-2.
pub fn tolerance(precision: super::engine_cache::Precision) -> f32 {
    match precision {
        super::engine_cache::Precision::Fp32 => 1e-3,
        _ => 5e-2,
    }
}

/// The verdict written beside an engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    pub rel_err: f32,
    pub tolerance: f32,
    pub passed: bool,
}

pub fn verdict_path(engine: &Path) -> PathBuf {
    let mut s = engine.as_os_str().to_owned();
    s.push(".parity.json");
    PathBuf::from(s)
}

pub fn write_verdict(engine: &Path, v: &Verdict) -> Result<()> {
    let p = verdict_path(engine);
    let text = serde_json::to_string_pretty(v).expect("verdict serialises");
    std::fs::write(&p, text).map_err(|e| Error::io(&p, "cannot write", e))
}

/// Why an engine must not be used, from its verdict (None = usable or not checked).
pub fn blocked_reason(engine: &Path) -> Option<String> {
    let text = std::fs::read_to_string(verdict_path(engine)).ok()?;
    match serde_json::from_str::<Verdict>(&text) {
        Ok(v) if !v.passed => Some(format!(
            "engine failed the parity self-check against ONNX Runtime (relative error {:.3e} > {:.1e})",
            v.rel_err, v.tolerance
        )),
        Ok(_) => None,
        Err(e) => Some(format!("unreadable parity verdict: {e}")),
    }
}

/// One deterministic input set for a graph, at the profile's `opt` shapes (fixed shapes
/// as declared). Flags get valid values: labels 1, `has_mask_input` 0, `multimask_output`
/// 1, `binarize` 0; everything else is uniform in [-1, 1).
pub fn synthetic_inputs(spec: &GraphSpec) -> Result<Vec<(String, TensorF32)>> {
    let mut out = Vec::new();
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    for input in &spec.inputs {
        let shape: Vec<usize> = match spec.trt_profiles.iter().find(|p| p.name == input.name) {
            Some(p) => p.opt.iter().map(|d| (*d).max(0) as usize).collect(),
            None => (0..input.shape.len())
                .map(|i| {
                    input.fixed_dim(i).map(|d| d as usize).ok_or_else(|| {
                        Error::new(
                            ErrorKind::Graph,
                            format!("{}: input '{}' has a dynamic axis but no profile", spec.file, input.name),
                        )
                    })
                })
                .collect::<Result<_>>()?,
        };
        let n: usize = shape.iter().product();
        let constant = match input.name.as_str() {
            "point_labels" | "multimask_output" => Some(1.0),
            "has_mask_input" | "binarize" => Some(0.0),
            _ => None,
        };
        let data = (0..n)
            .map(|_| {
                constant.unwrap_or_else(|| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
                })
            })
            .collect();
        out.push((input.name.clone(), TensorF32::new(shape, data)));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_verdict_blocks_the_engine() {
        let dir = std::env::temp_dir().join(format!("tamrt-self-check-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = dir.join("prompt_decoder.fp16.engine");
        let _ = std::fs::remove_file(verdict_path(&e));
        assert_eq!(blocked_reason(&e), None, "not checked yet: usable");
        write_verdict(&e, &Verdict { rel_err: 0.8, tolerance: 5e-2, passed: false }).unwrap();
        assert!(blocked_reason(&e).unwrap().contains("parity self-check"));
        write_verdict(&e, &Verdict { rel_err: 1e-3, tolerance: 5e-2, passed: true }).unwrap();
        assert_eq!(blocked_reason(&e), None);
    }
}
