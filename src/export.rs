//! `tamrt export`: checkpoint → the four ONNX graphs + `model.json`.
//!
//! Graphs are built one at a time and written atomically (temp file + rename), so a
//! failed export never leaves a partial graph, and the peak memory is that of the
//! largest graph's weights.

use std::io::Write;
use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use crate::checkpoint::Checkpoint;
use crate::config::{ModelConfig, EDGETAM, MODEL_NAMES};
use crate::error::{Error, ErrorKind, Result};
use crate::manifest::{self, GraphSpec, IoSpec, Manifest, WeightOrigin};
use crate::models;
use crate::onnx::proto::{read_summary, ExternalRef, ModelProto};
use crate::onnx::{trt_ops, Graph};
use crate::weights::{RandomWeights, Vb, WeightSource, Weights};

/// The exported graphs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Component {
    ImageEncoder,
    PromptDecoder,
    MemoryEncoder,
    MemoryAttention,
}

impl Component {
    pub const ALL: [Component; 4] =
        [Component::ImageEncoder, Component::PromptDecoder, Component::MemoryEncoder, Component::MemoryAttention];

    /// Graph name (file stem), e.g. `image_encoder`.
    pub fn name(self) -> &'static str {
        match self {
            Component::ImageEncoder => "image_encoder",
            Component::PromptDecoder => "prompt_decoder",
            Component::MemoryEncoder => "memory_encoder",
            Component::MemoryAttention => "memory_attention",
        }
    }

    pub fn file_name(self) -> String {
        format!("{}.onnx", self.name())
    }

    pub fn from_name(s: &str) -> Result<Component> {
        Component::ALL.iter().copied().find(|c| c.name() == s).ok_or_else(|| {
            Error::new(
                ErrorKind::Config,
                format!(
                    "unknown graph '{s}'; graphs are {}",
                    Component::ALL.iter().map(|c| c.name()).collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }

    /// Build this component's graph from the weights.
    pub fn build(self, cfg: &ModelConfig, vb: &Vb) -> Result<Graph> {
        let edgetam = cfg.perceiver.is_some();
        let g = match self {
            Component::ImageEncoder if edgetam => models::edgetam::build_edgetam_image_encoder(cfg, vb),
            Component::MemoryEncoder if edgetam => models::edgetam::build_edgetam_memory_encoder(cfg, vb),
            Component::MemoryAttention if edgetam => models::edgetam::build_edgetam_memory_attention(cfg, vb),
            Component::ImageEncoder => models::image_encoder::build_image_encoder(cfg, vb),
            Component::PromptDecoder => models::prompt_decoder::build_prompt_decoder(cfg, vb),
            Component::MemoryEncoder => models::memory_encoder::build_memory_encoder(cfg, vb),
            Component::MemoryAttention => models::memory_attention::build_memory_attention(cfg, vb),
        };
        g.map_err(|e| e.context(format!("building {} for model '{}'", self.file_name(), cfg.name)))
    }
}

/// Above this many initializer bytes a graph is written with ONNX external data (the
/// protobuf limit is 2 GiB).
pub const EXTERNAL_DATA_THRESHOLD: usize = 1_800_000_000;

/// Write `model` to `path` atomically. Models over [`EXTERNAL_DATA_THRESHOLD`] put their
/// initializers in `<file>.data` beside it.
pub fn write_model_atomic(model: ModelProto, path: &Path) -> Result<()> {
    write_model_atomic_with_threshold(model, path, EXTERNAL_DATA_THRESHOLD)
}

/// [`write_model_atomic`] with an explicit external-data threshold (initializers of at
/// least 1 KiB go to `<file>.data` when the model's initializers exceed `threshold`).
pub fn write_model_atomic_with_threshold(mut model: ModelProto, path: &Path, threshold: usize) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path.file_name().and_then(|f| f.to_str()).unwrap_or("graph.onnx").to_string();
    let mut data_tmp: Option<(PathBuf, PathBuf)> = None;
    if model.initializer_bytes() > threshold {
        let data_name = format!("{file_name}.data");
        let data_path = dir.join(&data_name);
        let tmp = dir.join(format!(".{data_name}.tmp"));
        let mut w =
            std::io::BufWriter::new(std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, "cannot create", e))?);
        let mut offset = 0u64;
        for t in &mut model.graph.initializers {
            let n = t.data.byte_len() as u64;
            if n < 1024 {
                continue;
            }
            t.data.write_bytes(&mut w).map_err(|e| Error::io(&tmp, "cannot write", e))?;
            t.external = Some(ExternalRef { location: data_name.clone(), offset, length: n });
            offset += n;
        }
        w.flush().map_err(|e| Error::io(&tmp, "cannot write", e))?;
        data_tmp = Some((tmp, data_path));
    }
    let tmp = dir.join(format!(".{file_name}.tmp"));
    let result = (|| {
        let f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, "cannot create", e))?;
        let mut w = std::io::BufWriter::new(f);
        model.write_to(&mut w).map_err(|e| Error::io(&tmp, "cannot write", e))?;
        w.flush().map_err(|e| Error::io(&tmp, "cannot write", e))?;
        if let Some((dt, dp)) = &data_tmp {
            std::fs::rename(dt, dp).map_err(|e| Error::io(dp, "cannot move into place", e))?;
        }
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, "cannot move into place", e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        if let Some((dt, _)) = &data_tmp {
            let _ = std::fs::remove_file(dt);
        }
    }
    result
}

/// Where the weights come from.
#[derive(Debug, Clone)]
pub enum WeightsFrom {
    Checkpoint(PathBuf),
    Random(u64),
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub model: String,
    pub out_dir: PathBuf,
    /// (graph file, nodes, initializer bytes)
    pub graphs: Vec<(String, usize, usize)>,
    pub seconds: f64,
}

impl ExportReport {
    pub fn summary(&self) -> String {
        let mut s = format!("exported '{}' to {} in {:.1} s\n", self.model, self.out_dir.display(), self.seconds);
        for (f, n, b) in &self.graphs {
            if f.ends_with(".onnx") {
                s.push_str(&format!("  {f}: {n} nodes, {:.1} MB of weights\n", *b as f64 / 1e6));
            } else {
                s.push_str(&format!("  {f}\n"));
            }
        }
        s
    }
}

/// Export `components` of `cfg` into `out_dir`. Everything is written into a staging
/// directory first and moved into place only when the whole export succeeded, so a
/// failed export leaves no partial file behind.
pub fn export_model(
    cfg: &ModelConfig,
    from: WeightsFrom,
    out_dir: &Path,
    components: &[Component],
) -> Result<ExportReport> {
    let t0 = std::time::Instant::now();
    let (source, origin): (Box<dyn WeightSource>, WeightOrigin) = match &from {
        WeightsFrom::Checkpoint(p) => {
            let ck = Checkpoint::open(p)?;
            let (bytes, sha256) = manifest::sha256_file(p)?;
            let file = p.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
            (Box::new(ck), WeightOrigin::Checkpoint { file, bytes, sha256 })
        }
        WeightsFrom::Random(seed) => (
            Box::new(RandomWeights { seed: *seed }),
            WeightOrigin::RandomWeights {
                seed: *seed,
                note: "seeded random weights: for timing and demos only, masks are meaningless".into(),
            },
        ),
    };
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, "cannot create output directory", e))?;
    let stage = out_dir.join(format!(".tamrt-export-{}", std::process::id()));
    std::fs::create_dir_all(&stage).map_err(|e| Error::io(&stage, "cannot write into output directory", e))?;
    let result = export_into(cfg, source, origin, &stage, components).and_then(|graphs| {
        for entry in std::fs::read_dir(&stage).map_err(|e| Error::io(&stage, "cannot list", e))? {
            let entry = entry.map_err(|e| Error::io(&stage, "cannot list", e))?;
            let dest = out_dir.join(entry.file_name());
            std::fs::rename(entry.path(), &dest).map_err(|e| Error::io(&dest, "cannot move into place", e))?;
        }
        Ok(graphs)
    });
    let _ = std::fs::remove_dir_all(&stage);
    let graphs = result?;
    Ok(ExportReport {
        model: cfg.name.clone(),
        out_dir: out_dir.to_path_buf(),
        graphs,
        seconds: t0.elapsed().as_secs_f64(),
    })
}

fn export_into(
    cfg: &ModelConfig,
    source: Box<dyn WeightSource>,
    origin: WeightOrigin,
    dir: &Path,
    components: &[Component],
) -> Result<Vec<(String, usize, usize)>> {
    let weights = Weights::new(source);
    let vb = weights.root();
    let looks_like = |e: Error| match identify_weights(weights.source()) {
        // A reduced config of the same family (tests) is not a mismatch worth a hint.
        Some(guess) if guess != cfg.name && !guess.starts_with(&cfg.family) => {
            if MODEL_NAMES.contains(&guess.as_str()) || guess == EDGETAM {
                e.context(format!(
                    "{} looks like a '{guess}' checkpoint, not '{}'",
                    weights.source().describe(),
                    cfg.name
                ))
            } else {
                e.context(format!("{} holds {guess}, not '{}'", weights.source().describe(), cfg.name))
            }
        }
        _ => e,
    };
    let mut out = Vec::new();
    let mut graphs = BTreeMap::new();
    for c in components {
        let g = c.build(cfg, &vb).map_err(looks_like)?;
        let mut spec = GraphSpec {
            file: c.file_name(),
            inputs: g.inputs().iter().map(IoSpec::from_value_info).collect(),
            outputs: g.outputs().iter().map(IoSpec::from_value_info).collect(),
            nodes: g.num_nodes(),
            op_types: g.op_types(),
            trt_profiles: vec![],
            trt_profile_desc: String::new(),
        };
        spec.trt_profiles = crate::trt::profiles::graph_profiles(&spec, cfg, &Default::default())?;
        spec.trt_profile_desc = crate::trt::profiles::describe(&spec.trt_profiles);
        let model = g.into_model(env!("CARGO_PKG_VERSION"), vec![("tamrt.model".into(), cfg.name.clone())]);
        let bytes = model.initializer_bytes();
        let path = dir.join(c.file_name());
        write_model_atomic(model, &path)?;
        // Check what was written, as TensorRT would read it.
        let data = std::fs::read(&path).map_err(|e| Error::io(&path, "cannot read back", e))?;
        let summary = read_summary(&data)
            .map_err(|e| Error::new(ErrorKind::Graph, format!("{}: written graph unreadable: {e}", c.file_name())))?;
        drop(data);
        let errs = trt_ops::check_model(&c.file_name(), &summary);
        if !errs.is_empty() {
            return Err(Error::new(
                ErrorKind::Graph,
                format!("graph violates the TensorRT 8.5 rules: {}", errs.join("; ")),
            ));
        }
        tracing::info!(graph = c.name(), nodes = spec.nodes, mb = bytes as f64 / 1e6, "wrote graph");
        out.push((c.file_name(), spec.nodes, bytes));
        graphs.insert(c.name().to_string(), spec);
    }
    let tensors = manifest::load_runtime_tensors(cfg, &vb).map_err(looks_like)?;
    if components.len() == Component::ALL.len() {
        let unused = weights.unused();
        if let Some(first) = unused.first() {
            let shape = weights.source().shape_of(first).unwrap_or_default();
            let e = Error::new(
                ErrorKind::UnexpectedTensor,
                format!(
                    "{} has {} tensor(s) model '{}' does not use; first: '{first}' {shape:?}",
                    weights.source().describe(),
                    unused.len(),
                    cfg.name
                ),
            );
            return Err(looks_like(e));
        }
    }
    let m = Manifest {
        format_version: crate::FORMAT_VERSION,
        tamrt_version: env!("CARGO_PKG_VERSION").to_string(),
        model: cfg.name.clone(),
        weights: origin,
        opset: crate::onnx::graph::OPSET,
        config: cfg.clone(),
        graphs,
        tensors,
    };
    let path = dir.join(manifest::MANIFEST_FILE);
    let text = serde_json::to_string_pretty(&m)
        .map_err(|e| Error::new(ErrorKind::Graph, format!("cannot serialise model.json: {e}")))?;
    std::fs::write(&path, text).map_err(|e| Error::io(&path, "cannot write", e))?;
    out.push((manifest::MANIFEST_FILE.to_string(), 0, 0));
    Ok(out)
}

/// Guess which model a set of weights belongs to, from tensor names and shapes:
/// Hiera width and depth name the size, `no_obj_embed_spatial` tells 2.1 from 2,
/// a RepViT trunk means EdgeTAM.
pub fn identify_weights(src: &dyn WeightSource) -> Option<String> {
    let names = src.names();
    if names.is_empty() {
        return None;
    }
    if names.iter().any(|n| n.starts_with("image_encoder.trunk.body.")) {
        return Some("edgetam".into());
    }
    let embed = src.shape_of("image_encoder.trunk.patch_embed.proj.weight")?.first().copied()?;
    let blocks = names
        .iter()
        .filter_map(|n| n.strip_prefix("image_encoder.trunk.blocks.")?.split('.').next()?.parse::<usize>().ok())
        .max()
        .map(|m| m + 1)?;
    let size = match (embed, blocks) {
        (96, 12) => "t",
        (96, 16) => "s",
        (112, 24) => "b+",
        (144, 48) => "l",
        _ => return Some(format!("an unknown Hiera model (embed dim {embed}, {blocks} blocks)")),
    };
    let family = if names.iter().any(|n| n == "no_obj_embed_spatial") { "sam2.1" } else { "sam2" };
    Some(format!("{family}_hiera_{size}"))
}
