//! `tamrt info`: what this machine offers (CUDA driver, GPU, TensorRT, JetPack/L4T,
//! ONNX Runtime) and the state of a model directory's graphs and engines.

use std::fmt::Write;
use std::path::Path;

use crate::export::Component;
use crate::manifest::Manifest;
use crate::trt::engine_cache::{self, Precision};

/// Whether the CUDA driver library can be loaded (cudarc panics when it cannot, so this
/// is checked first).
#[cfg(feature = "cuda")]
pub fn cuda_driver_present() -> bool {
    // SAFETY: only probes whether libcuda loads; no CUDA call is made.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// CUDA driver version and GPUs, through cudarc (feature `cuda`).
pub fn cuda_summary() -> String {
    #[cfg(feature = "cuda")]
    {
        if !cuda_driver_present() {
            return "unavailable (no libcuda: no NVIDIA driver on this machine)".to_string();
        }
        match cudarc::driver::result::init() {
            Err(e) => format!("unavailable ({e})"),
            Ok(()) => {
                let mut v = 0i32;
                // SAFETY: cuInit succeeded; plain out-parameter.
                let st = unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut v) };
                let ver = if st == cudarc::driver::sys::CUresult::CUDA_SUCCESS {
                    format!("{}.{}", v / 1000, (v % 1000) / 10)
                } else {
                    format!("? ({st:?})")
                };
                let gpus = match cudarc::driver::CudaContext::new(0) {
                    Ok(ctx) => {
                        let name = ctx.name().unwrap_or_default();
                        let cc = ctx.compute_capability().map(|(a, b)| format!("sm{a}{b}")).unwrap_or_default();
                        format!("{name} ({cc})")
                    }
                    Err(e) => format!("no device ({e})"),
                };
                format!("driver {ver}; GPU 0: {gpus}")
            }
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        "not compiled in (build with --features cuda)".to_string()
    }
}

/// The whole report.
pub fn report(model_dir: Option<&Path>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "tamrt {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(s, "CUDA:          {}", cuda_summary());
    let l4t =
        std::fs::read_to_string("/etc/nv_tegra_release").ok().and_then(|t| engine_cache::parse_nv_tegra_release(&t));
    match &l4t {
        Some(r) => {
            let jp = engine_cache::jetpack_for_l4t(r).unwrap_or("unknown JetPack");
            let _ = writeln!(s, "Jetson:        L4T {r} (JetPack {jp})");
        }
        None => {
            let _ = writeln!(s, "Jetson:        no (/etc/nv_tegra_release absent)");
        }
    }
    let shim = crate::trt::ffi::Shim::load();
    let target = match &shim {
        Ok(sh) => {
            let (c, l) = sh.versions();
            let _ = writeln!(
                s,
                "TensorRT:      {}.{}.{} loaded (shim compiled against {}.{}.{}; {})",
                l.0,
                l.1,
                l.2,
                c.0,
                c.1,
                c.2,
                sh.path().display()
            );
            sh.target().ok()
        }
        Err(e) => {
            let _ = writeln!(s, "TensorRT:      {e}");
            None
        }
    };
    #[cfg(feature = "ort")]
    {
        match crate::backend::ort::init() {
            Ok(p) => {
                let _ = writeln!(s, "ONNX Runtime:  {}", p.display());
                let mode = match crate::backend::ort::arena_mode() {
                    crate::backend::ort::ArenaMode::Shared => "one arena shared by all sessions, kept at its peak",
                    crate::backend::ort::ArenaMode::Shrink => "an arena per session, shrunk after each run",
                    crate::backend::ort::ArenaMode::Keep => "an arena per session, kept at its peak",
                    crate::backend::ort::ArenaMode::Off => "no arena (glibc, 1 MiB mmap threshold)",
                };
                let _ = writeln!(s, "ORT memory:    {mode} (TAMRT_ORT_ARENA=shared|shrink|keep|off)");
            }
            Err(e) => {
                let _ = writeln!(s, "ONNX Runtime:  {e}");
            }
        }
    }
    if let Some(dir) = model_dir {
        let _ = writeln!(s, "\nmodel dir {}:", dir.display());
        match Manifest::read(dir) {
            Err(e) => {
                let _ = writeln!(s, "  {e}");
            }
            Ok(m) => {
                let origin = match &m.weights {
                    crate::manifest::WeightOrigin::Checkpoint { file, sha256, .. } => {
                        format!("checkpoint {file} (sha256 {}…)", &sha256[..12.min(sha256.len())])
                    }
                    crate::manifest::WeightOrigin::RandomWeights { seed, .. } => format!("RANDOM weights, seed {seed}"),
                };
                let _ = writeln!(s, "  model {} — {origin}", m.model);
                for c in Component::ALL {
                    let graph = dir.join(c.file_name());
                    let _ = write!(s, "  {:<18} graph {}", c.name(), if graph.exists() { "ok" } else { "MISSING" });
                    if let Some(t) = &target {
                        for p in [Precision::Fp16, Precision::Bf16, Precision::Fp32] {
                            let e = dir.join(engine_cache::engine_file_name(c.name(), p, t));
                            if e.exists() {
                                let _ = write!(s, "; {} engine {}", p.name(), e.file_name().unwrap().to_string_lossy());
                            }
                        }
                    }
                    let _ = writeln!(s);
                }
            }
        }
    }
    s
}
