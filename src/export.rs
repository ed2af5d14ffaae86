//! `tamrt export`: checkpoint → the four ONNX graphs + `model.json`.
//!
//! Graphs are built one at a time and written atomically (temp file + rename), so a
//! failed export never leaves a partial graph, and the peak memory is that of the
//! largest graph's weights.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::config::ModelConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::models;
use crate::onnx::proto::{ExternalRef, ModelProto};
use crate::onnx::Graph;
use crate::weights::Vb;

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
        let g = match self {
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
pub fn write_model_atomic(mut model: ModelProto, path: &Path) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let file_name = path.file_name().and_then(|f| f.to_str()).unwrap_or("graph.onnx").to_string();
    let mut data_tmp: Option<(PathBuf, PathBuf)> = None;
    if model.initializer_bytes() > EXTERNAL_DATA_THRESHOLD {
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
            s.push_str(&format!("  {f}: {n} nodes, {:.1} MB of weights\n", *b as f64 / 1e6));
        }
        s
    }
}

/// Export `components` of `cfg` into `out_dir`. Everything is written into a staging
/// directory first and moved into place only when the whole export succeeded.
pub fn export_model(
    cfg: &ModelConfig,
    from: WeightsFrom,
    out_dir: &Path,
    components: &[Component],
) -> Result<ExportReport> {
    let t0 = std::time::Instant::now();
    let source: Box<dyn crate::weights::WeightSource> = match &from {
        WeightsFrom::Checkpoint(p) => Box::new(crate::checkpoint::Checkpoint::open(p)?),
        WeightsFrom::Random(seed) => Box::new(crate::weights::RandomWeights { seed: *seed }),
    };
    std::fs::create_dir_all(out_dir).map_err(|e| Error::io(out_dir, "cannot create output directory", e))?;
    let stage = out_dir.join(format!(".tamrt-export-{}", std::process::id()));
    std::fs::create_dir_all(&stage).map_err(|e| Error::io(&stage, "cannot write into output directory", e))?;
    let result = export_into(cfg, source, &stage, components);
    let result = result.and_then(|graphs| {
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
    source: Box<dyn crate::weights::WeightSource>,
    dir: &Path,
    components: &[Component],
) -> Result<Vec<(String, usize, usize)>> {
    let weights = crate::weights::Weights::new(source);
    let vb = weights.root();
    let mut out = Vec::new();
    for c in components {
        let g = c.build(cfg, &vb)?;
        let nodes = g.num_nodes();
        let model = g.into_model(env!("CARGO_PKG_VERSION"), vec![("tamrt.model".into(), cfg.name.clone())]);
        let bytes = model.initializer_bytes();
        write_model_atomic(model, &dir.join(c.file_name()))?;
        tracing::info!(graph = c.name(), nodes, mb = bytes as f64 / 1e6, "wrote graph");
        out.push((c.file_name(), nodes, bytes));
    }
    Ok(out)
}
