//! `tamrt info`: what this machine offers (CUDA driver, GPU, TensorRT, JetPack/L4T,
//! ONNX Runtime) and the state of a model directory's graphs and engines.

use std::fmt::Write;
use std::path::Path;

use crate::export::Component;
use crate::manifest::{GraphSpec, Manifest};
use crate::trt::engine_cache::{self, Target};

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

/// One line per engine file of `component` in `dir`: whether it is current for `target`
/// (the TensorRT and GPU found here: the loader's rule, build options aside) or why not;
/// without a target, what its build record says and whether the file is intact.
pub fn engine_status(dir: &Path, component: Component, spec: &GraphSpec, target: Option<&Target>) -> Vec<String> {
    let prefix = format!("{}.", component.name());
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let n = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            n.starts_with(&prefix) && n.ends_with(".engine")
        })
        .collect();
    files.sort();
    let graph_sha = crate::manifest::sha256_file(&dir.join(&spec.file)).map(|(_, h)| h).ok();
    files
        .iter()
        .map(|e| {
            let name = e.file_name().unwrap_or_default().to_string_lossy().into_owned();
            let record = match engine_cache::read_stamp(e) {
                Ok(r) => r,
                Err(reason) => return format!("engine {name}: stale ({reason})"),
            };
            if let Some(reason) = crate::trt::self_check::blocked_reason(e) {
                return format!("engine {name}: blocked ({reason}); that component runs on ONNX Runtime");
            }
            let state = match (target, &graph_sha) {
                (Some(_), None) => format!("stale (cannot read the graph '{}')", spec.file),
                (Some(t), Some(sha)) => match engine_cache::unusable_reason(e, sha, t) {
                    None => "current".to_string(),
                    Some(reason) => format!("stale ({reason})"),
                },
                (None, _) => {
                    let (a, b, c) = record.target.trt_version;
                    let (ma, mi) = record.target.compute_capability;
                    let file = engine_cache::check_engine_file(e, &record).unwrap_or_else(|| "file intact".into());
                    format!(
                        "built by TensorRT {a}.{b}.{c} for '{}' (sm{ma}{mi}); {file}; not checked against this machine (no TensorRT here)",
                        record.target.gpu_name
                    )
                }
            };
            format!("engine {name} ({}): {state}", record.precision.name())
        })
        .collect()
}

/// Whether the GPU kernels (frame pre/post-processing, device memory bank) can be
/// compiled: they need NVRTC; without it TensorRT runs still work, with those on the host.
pub fn kernels_summary() -> String {
    #[cfg(feature = "cuda")]
    {
        match crate::gpu::device::probe_nvrtc() {
            Ok(()) => "NVRTC found: with TensorRT, frame pre/post-processing and the memory bank run on the GPU".into(),
            Err(e) => format!("{e}; with TensorRT, frame pre/post-processing and the memory bank stay on the host"),
        }
    }
    #[cfg(not(feature = "cuda"))]
    {
        "not compiled in (build with --features cuda)".into()
    }
}

/// The whole report.
pub fn report(model_dir: Option<&Path>) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "tamrt {}", env!("CARGO_PKG_VERSION"));
    let _ = writeln!(s, "CUDA:          {}", cuda_summary());
    let _ = writeln!(s, "GPU kernels:   {}", kernels_summary());
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
                    let _ = writeln!(s, "  {:<18} graph {}", c.name(), if graph.exists() { "ok" } else { "MISSING" });
                    if let Some(spec) = m.graphs.get(c.name()) {
                        for line in engine_status(dir, c, spec, target.as_ref()) {
                            let _ = writeln!(s, "    {line}");
                        }
                    }
                }
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trt::engine_cache::{engine_file_name, write_stamp, EngineStamp, Precision};

    use crate::trt::engine_cache::test_orin as orin;

    #[test]
    fn info_says_which_engines_are_current_and_why_not() {
        let dir = std::env::temp_dir().join(format!("tamrt-info-engines-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("memory_encoder.onnx"), b"graph v1").unwrap();
        let spec = GraphSpec {
            file: "memory_encoder.onnx".into(),
            inputs: vec![],
            outputs: vec![],
            nodes: 0,
            op_types: vec![],
            trt_profiles: vec![],
            trt_profile_desc: "objects 1..8".into(),
        };
        let c = Component::MemoryEncoder;
        let status = |t: Option<&Target>| engine_status(&dir, c, &spec, t);
        assert!(status(Some(&orin())).is_empty(), "no engine files yet");

        let e = dir.join(engine_file_name(c.name(), Precision::Fp16, &orin()));
        std::fs::write(&e, b"plan").unwrap();
        let (_, sha) = crate::manifest::sha256_file(&dir.join("memory_encoder.onnx")).unwrap();
        let stamp = EngineStamp {
            graph_sha256: sha,
            target: orin(),
            precision: Precision::Fp16,
            workspace_mb: 2048, // other build options: still current for the loader
            opt_level: Some(3),
            profile: "objects 1..8".into(),
            engine_file: None,
        };
        write_stamp(&e, &stamp).unwrap();
        let name = e.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(status(Some(&orin())), vec![format!("engine {name} (fp16): current")]);

        let mut h200 = orin();
        h200.gpu_name = "NVIDIA H200".into();
        h200.compute_capability = (9, 0);
        h200.l4t_release = None;
        let other = status(Some(&h200));
        assert!(other[0].contains("stale (built for GPU 'Orin (nvgpu)', this is 'NVIDIA H200')"), "{other:?}");

        let none = status(None);
        assert!(none[0].contains("built by TensorRT 8.5.2 for 'Orin (nvgpu)' (sm87); file intact"), "{none:?}");

        std::fs::write(&e, b"pl").unwrap();
        assert!(status(Some(&orin()))[0].contains("truncated"));
        assert!(status(None)[0].contains("truncated"));

        std::fs::write(&e, b"plan").unwrap();
        std::fs::write(dir.join("memory_encoder.onnx"), b"graph v2").unwrap();
        assert!(status(Some(&orin()))[0].contains("stale (the graph changed)"));

        std::fs::remove_file(engine_cache::stamp_path(&e)).unwrap();
        assert!(status(Some(&orin()))[0].contains("stale (no build record"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
