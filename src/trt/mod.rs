//! TensorRT backend: engines built from the exported graphs through the C++ shim
//! (src/trt/shim.cpp, loaded at run time), cached by graph / precision / TensorRT / GPU.
//!
//! Status: compiled and unit-tested here (naming, staleness, profiles, fallback), and
//! [`build_engines`] plus the FFI error paths are driven in `tests/trt_fake_shim.rs`
//! through a stand-in shim with shim.h's ABI (no TensorRT); the real shim and the device
//! paths have not run on TensorRT hardware yet.
//!
//! Known TensorRT pitfalls handled:
//! - Memory attention can crash the Myelin builder at the default optimization level on
//!   TensorRT 10.3 (JetPack 6.1): a failed build of that graph is retried with another
//!   optimization level before the component falls back to ONNX Runtime.
//! - Mask decoder results are wrong on some TensorRT versions before 10.9: every engine
//!   is checked against ONNX Runtime on one synthetic input right after building
//!   ([`self_check`], [`parity_self_check`]); a failed engine is never loaded, that
//!   component runs on ONNX Runtime and the report says so.
//! - fp16 LayerNorm overflow: the shim pins LayerNorm (decomposed), Softmax and reductions
//!   to fp32 in reduced-precision engines (`keep_norms_fp32`).

pub mod engine_cache;
pub mod ffi;
pub mod profiles;
pub mod self_check;
#[cfg(feature = "cuda")]
pub mod session;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};
use crate::export::Component;
use crate::manifest::Manifest;
use engine_cache::{engine_file_name, staleness, write_stamp, EngineStamp, Precision, Target};
use ffi::Shim;
use profiles::{graph_profiles, ProfileRanges};

/// `tamrt build-engines` options.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    pub precision: Precision,
    pub workspace_mb: u64,
    pub opt_level: Option<i32>,
    pub ranges: ProfileRanges,
}

/// What happened to one component's engine.
#[derive(Debug, Clone, PartialEq)]
pub enum EngineOutcome {
    UpToDate(PathBuf),
    Built {
        path: PathBuf,
        reason: String,
        note: Option<String>,
    },
    /// The component will run on ONNX Runtime; the reason says why.
    Failed {
        reason: String,
    },
}

/// Build (or reuse) one engine per graph of `model_dir`.
pub fn build_engines(
    shim: &Arc<Shim>,
    target: &Target,
    model_dir: &Path,
    req: &BuildRequest,
) -> Result<Vec<(Component, EngineOutcome)>> {
    let manifest = Manifest::read(model_dir)?;
    let (precision, note) = req.precision.effective(target.trt_version.0);
    let cache = model_dir.join(format!("timing_cache.trt{}.{}.bin", target.trt_version.0, target.trt_version.1));
    let mut out = Vec::new();
    for c in Component::ALL {
        let Some(spec) = manifest.graphs.get(c.name()) else {
            out.push((c, EngineOutcome::Failed { reason: format!("{} not exported", c.file_name()) }));
            continue;
        };
        let onnx = model_dir.join(&spec.file);
        let profiles = graph_profiles(spec, &manifest.config, &req.ranges)?;
        let (_, sha) = crate::manifest::sha256_file(&onnx)?;
        let stamp = EngineStamp {
            graph_sha256: sha,
            target: target.clone(),
            precision,
            workspace_mb: req.workspace_mb,
            opt_level: req.opt_level,
            profile: profiles::describe(&profiles),
            engine_file: None,
        };
        let engine = model_dir.join(engine_file_name(c.name(), precision, target));
        let Some(reason) = staleness(&engine, &stamp) else {
            out.push((c, EngineOutcome::UpToDate(engine)));
            continue;
        };
        let ws = (req.workspace_mb as i64) << 20;
        let prec = match precision {
            Precision::Fp32 => 0,
            Precision::Fp16 => 1,
            Precision::Bf16 => 2,
        };
        let mut result = shim.build_engine(&onnx, &engine, &profiles, prec, ws, req.opt_level, Some(&cache));
        if result.is_err() && c == Component::MemoryAttention {
            // TensorRT 10.3's Myelin builder can crash on this graph at the default level.
            for level in [2, 5] {
                if Some(level) == req.opt_level {
                    continue;
                }
                tracing::warn!(level, "memory attention build failed; retrying with another optimization level");
                result = shim.build_engine(&onnx, &engine, &profiles, prec, ws, Some(level), Some(&cache));
                if result.is_ok() {
                    break;
                }
            }
        }
        match result {
            Ok(()) => {
                write_stamp(&engine, &stamp)?;
                match check_engine(shim, spec, &onnx, &engine, precision) {
                    Ok(None) => out.push((c, EngineOutcome::Built { path: engine, reason, note: note.clone() })),
                    Ok(Some(blocked)) => out.push((c, EngineOutcome::Failed { reason: blocked })),
                    Err(e) => {
                        let check = format!("parity self-check could not run: {e}");
                        let note = Some(match &note {
                            Some(n) => format!("{n}; {check}"),
                            None => check,
                        });
                        out.push((c, EngineOutcome::Built { path: engine, reason, note }))
                    }
                }
            }
            Err(e) => out.push((c, EngineOutcome::Failed { reason: e.to_string() })),
        }
    }
    Ok(out)
}

/// A new stream on GPU 0 and its device buffer pool (what the engines run on).
#[cfg(feature = "cuda")]
fn gpu0_pool() -> Result<Arc<crate::gpu::resident::DevicePool>> {
    let cuda = cudarc::driver::CudaContext::new(0)
        .map_err(|e| Error::new(ErrorKind::Backend, format!("no CUDA device: {e}")))?;
    let stream = cuda.new_stream().map_err(|e| Error::new(ErrorKind::Backend, format!("CUDA stream: {e}")))?;
    Ok(crate::gpu::resident::DevicePool::new(stream))
}

/// Run the parity self-check of a freshly built engine against ONNX Runtime and record
/// the verdict; returns why the engine is blocked, if it failed.
#[allow(unused_variables)]
fn check_engine(
    shim: &Arc<Shim>,
    spec: &crate::manifest::GraphSpec,
    onnx: &Path,
    engine: &Path,
    precision: Precision,
) -> Result<Option<String>> {
    #[cfg(all(feature = "cuda", feature = "ort"))]
    {
        if !crate::info::cuda_driver_present() {
            return Err(Error::new(ErrorKind::Backend, "no CUDA driver"));
        }
        let pool = gpu0_pool()?;
        let mut trt = session::TrtSession::load(shim, &pool, &Default::default(), engine)?;
        let mut ort = crate::backend::ort::OrtSession::load(onnx, 0)?;
        let inputs = self_check::synthetic_inputs(spec)?;
        let refs: Vec<(&str, &crate::weights::TensorF32)> = inputs.iter().map(|(n, t)| (n.as_str(), t)).collect();
        let tol = self_check::tolerance(precision);
        let (rel_err, passed) = parity_self_check(&mut trt, &mut ort, &refs, tol)?;
        self_check::write_verdict(engine, &self_check::Verdict { rel_err, tolerance: tol, passed })?;
        Ok(self_check::blocked_reason(engine))
    }
    #[cfg(not(all(feature = "cuda", feature = "ort")))]
    {
        Err(Error::new(ErrorKind::Backend, "built without the cuda and ort features"))
    }
}

/// Compare an engine's outputs with ONNX Runtime's on the same inputs; returns the worst
/// relative error. A component whose error exceeds `tol` must run on ONNX Runtime.
pub fn parity_self_check(
    trt: &mut dyn crate::backend::ComponentSession,
    ort: &mut dyn crate::backend::ComponentSession,
    inputs: &[(&str, &crate::weights::TensorF32)],
    tol: f32,
) -> Result<(f32, bool)> {
    let a = trt.run(inputs)?;
    let b = ort.run(inputs)?;
    let mut worst = 0f32;
    for (name, ref_t) in &b {
        let got = a
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| Error::new(ErrorKind::Backend, format!("engine has no output '{name}'")))?;
        let (e, _) = crate::parity::relative_error(&got.1, ref_t)?;
        worst = worst.max(e);
    }
    Ok((worst, worst <= tol))
}

/// The TensorRT [`crate::backend::Backend`]: loads `<graph>.<precision>…engine` files that
/// `build_engines` wrote; a missing or stale engine is an error (the caller falls back).
#[cfg(feature = "cuda")]
pub struct TrtBackend {
    shim: Arc<Shim>,
    /// The one stream (and its buffer pool) every engine runs on.
    pool: Arc<crate::gpu::resident::DevicePool>,
    /// Pre/post-processing and memory-bank kernels on that stream, compiled on first use.
    kernels: session::GpuKernels,
    target: Target,
    precision: Precision,
}

#[cfg(feature = "cuda")]
impl TrtBackend {
    /// Load the shim and open GPU 0; errors say why TensorRT is unavailable.
    pub fn new(precision: Precision) -> Result<TrtBackend> {
        let shim = Shim::load()?;
        if !crate::info::cuda_driver_present() {
            return Err(Error::new(ErrorKind::Backend, "no CUDA driver (libcuda) on this machine"));
        }
        let pool = gpu0_pool()?;
        let target = shim.target()?;
        let (precision, note) = precision.effective(target.trt_version.0);
        if let Some(n) = note {
            tracing::warn!("{n}");
        }
        Ok(TrtBackend { shim, pool, kernels: Default::default(), target, precision })
    }
}

#[cfg(feature = "cuda")]
impl crate::backend::Backend for TrtBackend {
    fn name(&self) -> &str {
        "tensorrt"
    }

    fn load(&self, model_dir: &Path, c: Component) -> Result<Box<dyn crate::backend::ComponentSession>> {
        let engine = model_dir.join(engine_file_name(c.name(), self.precision, &self.target));
        let manifest = Manifest::read(model_dir)?;
        let spec = manifest.graphs.get(c.name()).ok_or_else(|| {
            Error::new(ErrorKind::InvalidInput, format!("{} has no {}", model_dir.display(), c.file_name()))
        })?;
        let (_, sha) = crate::manifest::sha256_file(&model_dir.join(&spec.file))?;
        if let Some(reason) = self_check::blocked_reason(&engine) {
            return Err(Error::new(ErrorKind::Backend, format!("'{}': {reason}", engine.display())));
        }
        if let Some(reason) = engine_cache::unusable_reason(&engine, &sha, &self.target) {
            return Err(Error::new(
                ErrorKind::Backend,
                format!("engine '{}' not usable ({reason}); run `tamrt build-engines`", engine.display()),
            ));
        }
        Ok(Box::new(session::TrtSession::load(&self.shim, &self.pool, &self.kernels, &engine)?))
    }
}
