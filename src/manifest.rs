//! `model.json`: what the runtime needs besides the graphs — the model's config, the
//! small tensors used outside the graphs (temporal encodings, no-memory embeddings,
//! pointer projections), each graph's I/O, and where the weights came from.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::config::ModelConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::onnx::proto::{DataType, Dim, ValueInfo};
use crate::weights::{TensorF32, Vb};

pub const MANIFEST_FILE: &str = "model.json";

/// One graph input or output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IoSpec {
    pub name: String,
    pub dtype: String,
    /// Fixed sizes as numbers, dynamic axes as their names.
    pub shape: Vec<serde_json::Value>,
}

impl IoSpec {
    pub fn from_value_info(v: &ValueInfo) -> IoSpec {
        IoSpec {
            name: v.name.clone(),
            dtype: v.dtype.name().to_string(),
            shape: v
                .dims
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => serde_json::Value::from(*n),
                    Dim::Sym(s) => serde_json::Value::from(s.clone()),
                })
                .collect(),
        }
    }

    /// The fixed size of axis `i`, if it is fixed.
    pub fn fixed_dim(&self, i: usize) -> Option<i64> {
        self.shape.get(i).and_then(|v| v.as_i64())
    }
}

/// A graph file and its I/O.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphSpec {
    pub file: String,
    pub inputs: Vec<IoSpec>,
    pub outputs: Vec<IoSpec>,
    pub nodes: usize,
    pub op_types: Vec<String>,
    /// TensorRT optimization profiles for the dynamic inputs (default ranges), used by
    /// `tamrt build-engines` and build.rs.
    #[serde(default)]
    pub trt_profiles: Vec<crate::trt::profiles::InputProfile>,
    #[serde(default)]
    pub trt_profile_desc: String,
}

/// A small tensor stored inline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InlineTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl From<TensorF32> for InlineTensor {
    fn from(t: TensorF32) -> Self {
        InlineTensor { shape: t.shape, data: t.data }
    }
}

impl From<&InlineTensor> for TensorF32 {
    fn from(t: &InlineTensor) -> Self {
        TensorF32::new(t.shape.clone(), t.data.clone())
    }
}

/// Where the weights came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightOrigin {
    Checkpoint {
        file: String,
        bytes: u64,
        sha256: String,
    },
    /// Seeded random weights: graphs are valid for timing and demos only.
    RandomWeights {
        seed: u64,
        note: String,
    },
}

/// The content of `model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    pub format_version: u32,
    pub tamrt_version: String,
    pub model: String,
    pub weights: WeightOrigin,
    pub opset: i64,
    pub config: ModelConfig,
    pub graphs: BTreeMap<String, GraphSpec>,
    /// Small tensors the runtime applies outside the graphs, by checkpoint key.
    pub tensors: BTreeMap<String, InlineTensor>,
}

/// Tensors (checkpoint key, shape) the tracker needs outside the graphs.
pub fn runtime_tensor_specs(cfg: &ModelConfig) -> Vec<(String, Vec<usize>)> {
    let (c, m) = (cfg.hidden_dim(), cfg.mem_dim());
    let mut v = vec![
        ("maskmem_tpos_enc".to_string(), vec![cfg.num_maskmem, 1, 1, m]),
        ("no_mem_embed".to_string(), vec![1, 1, c]),
        ("no_mem_pos_enc".to_string(), vec![1, 1, c]),
    ];
    if cfg.sam.pred_obj_scores && cfg.use_obj_ptrs_in_encoder {
        // `self.no_obj_ptr = torch.nn.Parameter(torch.zeros(1, self.hidden_dim))` (used
        // outside the graphs when an empty mask prompt skips the decoder)
        v.push(("no_obj_ptr".into(), vec![1, c]));
    }
    if cfg.use_obj_ptrs_in_encoder {
        // `self.mask_downsample = torch.nn.Conv2d(1, 1, kernel_size=4, stride=4)`
        v.push(("mask_downsample.weight".into(), vec![1, 1, 4, 4]));
        v.push(("mask_downsample.bias".into(), vec![1]));
    }
    if cfg.proj_tpos_enc_in_obj_ptrs {
        // `self.obj_ptr_tpos_proj = torch.nn.Linear(self.hidden_dim, self.mem_dim)`
        v.push(("obj_ptr_tpos_proj.weight".into(), vec![m, c]));
        v.push(("obj_ptr_tpos_proj.bias".into(), vec![m]));
    }
    v
}

/// Load the runtime tensors from the weights.
pub fn load_runtime_tensors(cfg: &ModelConfig, vb: &Vb) -> Result<BTreeMap<String, InlineTensor>> {
    let mut out = BTreeMap::new();
    for (name, shape) in runtime_tensor_specs(cfg) {
        out.insert(name.clone(), vb.tensor(&name, &shape)?.into());
    }
    Ok(out)
}

/// Size and SHA-256 (hex) of a file.
pub fn sha256_file(path: &Path) -> Result<(u64, String)> {
    crate::trt::engine_cache::file_sha256(path).map_err(|e| Error::io(path, "cannot read", e))
}

impl Manifest {
    /// Read and validate `DIR/model.json` (format version must match this build).
    pub fn read(dir: &Path) -> Result<Manifest> {
        let path = dir.join(MANIFEST_FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, "cannot read model manifest", e))?;
        let probe: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| Error::new(ErrorKind::InvalidInput, format!("'{}' is not valid JSON: {e}", path.display())))?;
        let fv = probe.get("format_version").and_then(|v| v.as_u64());
        if fv != Some(crate::FORMAT_VERSION as u64) {
            let by = probe.get("tamrt_version").and_then(|v| v.as_str()).unwrap_or("unknown");
            return Err(Error::new(
                ErrorKind::InvalidInput,
                format!(
                    "'{}' has format version {} (written by tamrt {by}); this tamrt {} reads version {}: re-export the model",
                    path.display(),
                    fv.map(|v| v.to_string()).unwrap_or_else(|| "none".into()),
                    env!("CARGO_PKG_VERSION"),
                    crate::FORMAT_VERSION
                ),
            ));
        }
        serde_json::from_value(probe).map_err(|e| {
            Error::new(ErrorKind::InvalidInput, format!("'{}' is not a tamrt model manifest: {e}", path.display()))
        })
    }

    pub fn tensor(&self, name: &str) -> Result<TensorF32> {
        self.tensors.get(name).map(TensorF32::from).ok_or_else(|| {
            Error::new(ErrorKind::InvalidInput, format!("model.json of '{}' has no tensor '{name}'", self.model))
        })
    }
}

/// Data type name helper for specs written by hand (tests).
pub fn float_spec(name: &str, shape: &[i64]) -> IoSpec {
    IoSpec::from_value_info(&ValueInfo {
        name: name.into(),
        dtype: DataType::Float,
        dims: shape.iter().map(|d| Dim::Fixed(*d)).collect(),
    })
}
