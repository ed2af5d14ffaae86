//! TensorRT optimization profiles from the graphs' declared I/O (`model.json`): each
//! dynamic axis named in `export/README.md` gets a min / opt / max range.

use crate::config::ModelConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::GraphSpec;

/// Ranges for the dynamic axes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileRanges {
    /// Objects tracked at once (1..=max_objects).
    pub max_objects: i64,
    /// Prompt points per object, padding point included.
    pub max_points: i64,
    /// Memory frames attended to (the issue asks for 1..7).
    pub max_memory_frames: i64,
    /// Object pointers attended to (0..16).
    pub max_pointers: i64,
}

impl Default for ProfileRanges {
    fn default() -> Self {
        ProfileRanges { max_objects: 8, max_points: 16, max_memory_frames: 7, max_pointers: 16 }
    }
}

/// min / opt / max of one input.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct InputProfile {
    pub name: String,
    pub min: Vec<i64>,
    pub opt: Vec<i64>,
    pub max: Vec<i64>,
}

/// Tokens one memory frame contributes (E² for SAM 2, 512 latents for EdgeTAM).
pub fn tokens_per_memory_frame(cfg: &ModelConfig) -> i64 {
    match &cfg.perceiver {
        Some(p) => (p.num_latents + p.num_latents_2d) as i64,
        None => (cfg.embed_side() * cfg.embed_side()) as i64,
    }
}

/// Tokens one object pointer contributes (C / M when the pointer is split).
pub fn tokens_per_pointer(cfg: &ModelConfig) -> i64 {
    (cfg.hidden_dim() / cfg.mem_dim()).max(1) as i64
}

/// (min, opt, max) for a named dynamic axis.
pub fn axis_range(axis: &str, cfg: &ModelConfig, r: &ProfileRanges) -> Result<(i64, i64, i64)> {
    let tf = tokens_per_memory_frame(cfg);
    let tp = tokens_per_pointer(cfg);
    Ok(match axis {
        "objects" => (1, 1.max(r.max_objects.min(3)), r.max_objects),
        // the memory attention's current frame: 1 (shared by all objects) or one per object
        "curr_batch" => (1, 1, r.max_objects),
        "points" => (1, 2, r.max_points),
        "mem_tokens" => (tf, tf * r.max_memory_frames, tf * r.max_memory_frames),
        "ptr_tokens" => (0, tp * r.max_pointers, tp * r.max_pointers),
        other => {
            return Err(Error::new(
                ErrorKind::Graph,
                format!(
                "dynamic axis '{other}' has no TensorRT profile range (known: objects, curr_batch, points, mem_tokens, ptr_tokens)"
            ),
            ))
        }
    })
}

/// Profiles for every input of a graph with at least one dynamic axis.
pub fn graph_profiles(spec: &GraphSpec, cfg: &ModelConfig, r: &ProfileRanges) -> Result<Vec<InputProfile>> {
    let mut out = Vec::new();
    for input in &spec.inputs {
        if input.shape.iter().all(|d| d.is_i64()) {
            continue;
        }
        let (mut min, mut opt, mut max) = (Vec::new(), Vec::new(), Vec::new());
        for d in &input.shape {
            if let Some(n) = d.as_i64() {
                min.push(n);
                opt.push(n);
                max.push(n);
            } else {
                let axis = d.as_str().unwrap_or("?");
                let (a, b, c) =
                    axis_range(axis, cfg, r).map_err(|e| e.context(format!("{} input '{}'", spec.file, input.name)))?;
                min.push(a);
                opt.push(b);
                max.push(c);
            }
        }
        out.push(InputProfile { name: input.name.clone(), min, opt, max });
    }
    Ok(out)
}

/// A one-line description (stored in the engine's build record).
pub fn describe(profiles: &[InputProfile]) -> String {
    profiles.iter().map(|p| format!("{}:{:?}/{:?}/{:?}", p.name, p.min, p.opt, p.max)).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::IoSpec;

    #[test]
    fn memory_attention_profile_covers_1_to_7_frames_and_0_to_16_pointers() {
        let cfg = ModelConfig::builtin("sam2.1_hiera_t").unwrap();
        let spec = GraphSpec {
            file: "memory_attention.onnx".into(),
            inputs: vec![
                IoSpec {
                    name: "curr".into(),
                    dtype: "float32".into(),
                    shape: vec!["curr_batch".into(), 256.into(), 64.into(), 64.into()],
                },
                IoSpec {
                    name: "memory".into(),
                    dtype: "float32".into(),
                    shape: vec!["objects".into(), "mem_tokens".into(), 64.into()],
                },
                IoSpec {
                    name: "obj_ptrs".into(),
                    dtype: "float32".into(),
                    shape: vec!["objects".into(), "ptr_tokens".into(), 64.into()],
                },
            ],
            outputs: vec![],
            nodes: 0,
            op_types: vec![],
            trt_profiles: vec![],
            trt_profile_desc: String::new(),
        };
        let p = graph_profiles(&spec, &cfg, &ProfileRanges::default()).unwrap();
        assert_eq!(p.len(), 3);
        // one current frame for all objects, or one per object
        assert_eq!((p[0].min[0], p[0].opt[0], p[0].max[0]), (1, 1, 8));
        assert_eq!(p[1].min, vec![1, 4096, 64]);
        assert_eq!(p[1].max, vec![8, 7 * 4096, 64]);
        assert_eq!(p[2].min, vec![1, 0, 64]);
        assert_eq!(p[2].max, vec![8, 16 * 4, 64]);
        let edgetam = ModelConfig::builtin("edgetam").unwrap();
        assert_eq!(tokens_per_memory_frame(&edgetam), 512);
        let bad = IoSpec { name: "x".into(), dtype: "float32".into(), shape: vec!["frames".into()] };
        let spec2 = GraphSpec { inputs: vec![bad], ..spec };
        let e = graph_profiles(&spec2, &cfg, &ProfileRanges::default()).unwrap_err();
        assert!(e.to_string().contains("'frames'"), "{e}");
    }
}
