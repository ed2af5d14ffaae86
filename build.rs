//! Build script.
//!
//! With `--features tensorrt` and TensorRT headers present (`TENSORRT_ROOT`, JetPack's
//! `/usr/include/aarch64-linux-gnu`, desktop `/usr/include/x86_64-linux-gnu`, or a
//! tarball's `include/`), compiles `src/trt/shim.cpp` into `libtamrt_trt.so` in OUT_DIR
//! (tamrt loads it at run time, so the tamrt binary itself never links TensorRT). Without
//! headers nothing is compiled and the TensorRT backend reports itself unavailable.
//!
//! With `TAMRT_BUILD_ENGINES=1` it also builds engines for every model under `models/`
//! (`models/<name>/model.json`), using the profiles `tamrt export` recorded, so a
//! `cargo build` on a Jetson leaves ready engines. Same naming and staleness rule as
//! `tamrt build-engines` (src/trt/engine_cache.rs is compiled into this script).

#[allow(dead_code)]
#[path = "src/error.rs"]
mod error;

#[allow(dead_code)]
#[path = "src/trt/engine_cache.rs"]
mod engine_cache;

use std::path::{Path, PathBuf};
use std::process::Command;

fn env_path(k: &str) -> Option<PathBuf> {
    std::env::var_os(k).map(PathBuf::from)
}

fn tensorrt_include_dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(root) = env_path("TENSORRT_ROOT") {
        v.push(root.join("include"));
    }
    for d in [
        "/usr/include/aarch64-linux-gnu",
        "/usr/include/x86_64-linux-gnu",
        "/usr/local/TensorRT/include",
        "/usr/include",
    ] {
        v.push(PathBuf::from(d));
    }
    v
}

fn tensorrt_lib_dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Some(root) = env_path("TENSORRT_ROOT") {
        v.push(root.join("lib"));
        v.push(root.join("targets/x86_64-linux-gnu/lib"));
        v.push(root.join("targets/aarch64-linux-gnu/lib"));
    }
    for d in ["/usr/lib/aarch64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/local/TensorRT/lib"] {
        v.push(PathBuf::from(d));
    }
    v.into_iter().filter(|d| d.exists()).collect()
}

fn cuda_include_dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for k in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(p) = env_path(k) {
            v.push(p.join("include"));
        }
    }
    v.push(PathBuf::from("/usr/local/cuda/include"));
    v.into_iter().filter(|d| d.join("cuda_runtime_api.h").exists()).collect()
}

fn cuda_lib_dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for k in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(p) = env_path(k) {
            v.push(p.join("lib64"));
        }
    }
    for d in ["/usr/local/cuda/lib64", "/usr/local/cuda/targets/aarch64-linux/lib"] {
        v.push(PathBuf::from(d));
    }
    v.into_iter().filter(|d| d.exists()).collect()
}

fn compile_shim(trt_include: &Path, out_dir: &Path) -> Result<PathBuf, String> {
    let out = out_dir.join("libtamrt_trt.so");
    let cxx = std::env::var("CXX").unwrap_or_else(|_| "c++".into());
    let mut cmd = Command::new(&cxx);
    cmd.args(["-std=c++17", "-O2", "-fPIC", "-shared", "-Wall", "src/trt/shim.cpp", "-o"]).arg(&out);
    cmd.arg(format!("-I{}", trt_include.display()));
    for d in cuda_include_dirs() {
        cmd.arg(format!("-I{}", d.display()));
    }
    for d in tensorrt_lib_dirs() {
        cmd.arg(format!("-L{}", d.display()));
        cmd.arg(format!("-Wl,-rpath,{}", d.display()));
    }
    for d in cuda_lib_dirs() {
        cmd.arg(format!("-L{}", d.display()));
    }
    cmd.args(["-lnvinfer", "-lnvonnxparser", "-lcudart"]);
    let o = cmd.output().map_err(|e| format!("cannot run {cxx}: {e}"))?;
    if !o.status.success() {
        return Err(format!("{cxx} failed:\n{}", String::from_utf8_lossy(&o.stderr)));
    }
    Ok(out)
}

fn main() {
    println!("cargo:rerun-if-env-changed=TENSORRT_ROOT");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-env-changed=TAMRT_BUILD_ENGINES");
    println!("cargo:rerun-if-changed=src/trt/shim.cpp");
    println!("cargo:rerun-if-changed=src/trt/shim.h");
    println!("cargo:rustc-check-cfg=cfg(tamrt_trt_headers)");
    let feature = std::env::var_os("CARGO_FEATURE_TENSORRT").is_some();
    let found = tensorrt_include_dirs().into_iter().find(|d| d.join("NvInfer.h").exists());
    let Some(include) = found else {
        if feature {
            println!("cargo:warning=tensorrt feature enabled but no TensorRT headers found (set TENSORRT_ROOT); the TensorRT backend will report itself unavailable");
        }
        return;
    };
    println!("cargo:rustc-cfg=tamrt_trt_headers");
    println!("cargo:rustc-env=TAMRT_TRT_INCLUDE={}", include.display());
    if !feature {
        return;
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    match compile_shim(&include, &out_dir) {
        Ok(lib) => {
            println!("cargo:rustc-env=TAMRT_TRT_SHIM_BUILT={}", lib.display());
            if std::env::var("TAMRT_BUILD_ENGINES").as_deref() == Ok("1") {
                if let Err(e) = build_model_engines(&lib) {
                    panic!("TAMRT_BUILD_ENGINES=1: {e}");
                }
            }
        }
        Err(e) => panic!("TensorRT headers found in {} but the shim does not compile: {e}", include.display()),
    }
}

type FnVersion = unsafe extern "C" fn(*mut i32, *mut i32);
type FnDevice = unsafe extern "C" fn(*mut std::ffi::c_char, i32, *mut i32, *mut i32) -> i32;
type FnLastError = unsafe extern "C" fn() -> *const std::ffi::c_char;
#[repr(C)]
struct ProfileDims {
    name: *const std::ffi::c_char,
    nb_dims: i32,
    min: [i64; 8],
    opt: [i64; 8],
    max: [i64; 8],
}
#[repr(C)]
struct BuildOptions {
    precision: i32,
    workspace_bytes: i64,
    opt_level: i32,
    keep_norms_fp32: i32,
    timing_cache: *const std::ffi::c_char,
}
type FnBuild = unsafe extern "C" fn(
    *const std::ffi::c_char,
    *const std::ffi::c_char,
    *const ProfileDims,
    i32,
    *const BuildOptions,
) -> i32;

/// Build engines for `models/*/model.json` with the profiles export recorded, the
/// precision in `TAMRT_ENGINE_PRECISION` (fp16 by default) and the CLI's defaults
/// (workspace 1024 MB, default optimization level).
fn build_model_engines(lib: &Path) -> Result<(), String> {
    use engine_cache::{engine_file_name, staleness, write_stamp, EngineStamp, Precision, Target};
    use std::ffi::{CStr, CString};
    let precision = Precision::parse(&std::env::var("TAMRT_ENGINE_PRECISION").unwrap_or_else(|_| "fp16".into()))
        .map_err(|e| e.to_string())?;
    // SAFETY: the shim was just compiled from src/trt/shim.cpp; symbols match shim.h.
    unsafe {
        let l = libloading::Library::new(lib).map_err(|e| format!("cannot load {}: {e}", lib.display()))?;
        let version: libloading::Symbol<FnVersion> = l.get(b"tamrt_trt_version\0").map_err(|e| e.to_string())?;
        let device: libloading::Symbol<FnDevice> = l.get(b"tamrt_trt_device_info\0").map_err(|e| e.to_string())?;
        let build: libloading::Symbol<FnBuild> = l.get(b"tamrt_trt_build_engine\0").map_err(|e| e.to_string())?;
        let last: libloading::Symbol<FnLastError> = l.get(b"tamrt_trt_last_error\0").map_err(|e| e.to_string())?;
        let (mut _c, mut v) = (0, 0);
        version(&mut _c, &mut v);
        let mut name = [0 as std::ffi::c_char; 256];
        let (mut ma, mut mi) = (0, 0);
        if device(name.as_mut_ptr(), 256, &mut ma, &mut mi) != 0 {
            return Err(format!("no CUDA device: {}", CStr::from_ptr(last()).to_string_lossy()));
        }
        let target = Target {
            trt_version: ((v / 10000) as u32, ((v / 100) % 100) as u32, (v % 100) as u32),
            compute_capability: (ma as u32, mi as u32),
            gpu_name: CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned(),
            l4t_release: std::fs::read_to_string("/etc/nv_tegra_release")
                .ok()
                .and_then(|t| engine_cache::parse_nv_tegra_release(&t)),
        };
        let (precision, _) = precision.effective(target.trt_version.0);
        for entry in std::fs::read_dir("models").map_err(|e| format!("models/: {e}"))? {
            let dir = entry.map_err(|e| e.to_string())?.path();
            let manifest = dir.join("model.json");
            let Ok(text) = std::fs::read_to_string(&manifest) else { continue };
            println!("cargo:rerun-if-changed={}", manifest.display());
            let m: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", manifest.display()))?;
            let graphs = m["graphs"].as_object().ok_or(format!("{}: no graphs", manifest.display()))?;
            for (gname, g) in graphs {
                let onnx = dir.join(g["file"].as_str().unwrap_or_default());
                let profiles = g["trt_profiles"].as_array().cloned().unwrap_or_default();
                let stamp = EngineStamp {
                    graph_sha256: engine_cache::file_sha256(&onnx).map_err(|e| format!("{}: {e}", onnx.display()))?.1,
                    target: target.clone(),
                    precision,
                    workspace_mb: 1024,
                    opt_level: None,
                    profile: g["trt_profile_desc"].as_str().unwrap_or_default().to_string(),
                    engine_file: None,
                };
                let engine = dir.join(engine_file_name(gname, precision, &target));
                let Some(reason) = staleness(&engine, &stamp) else { continue };
                println!("cargo:warning=building {} ({reason})", engine.display());
                let names: Vec<CString> = profiles
                    .iter()
                    .map(|p| CString::new(p["name"].as_str().unwrap_or_default()).unwrap_or_default())
                    .collect();
                let dims: Vec<ProfileDims> = profiles
                    .iter()
                    .zip(&names)
                    .map(|(p, n)| {
                        let arr = |k: &str| {
                            let mut a = [0i64; 8];
                            for (i, v) in p[k].as_array().into_iter().flatten().take(8).enumerate() {
                                a[i] = v.as_i64().unwrap_or(0);
                            }
                            a
                        };
                        let nb = p["min"].as_array().map(|a| a.len()).unwrap_or(0) as i32;
                        ProfileDims { name: n.as_ptr(), nb_dims: nb, min: arr("min"), opt: arr("opt"), max: arr("max") }
                    })
                    .collect();
                let opts = BuildOptions {
                    precision: match precision {
                        Precision::Fp32 => 0,
                        Precision::Fp16 => 1,
                        Precision::Bf16 => 2,
                    },
                    workspace_bytes: 1024 << 20,
                    opt_level: -1,
                    keep_norms_fp32: 1,
                    timing_cache: std::ptr::null(),
                };
                let o = CString::new(onnx.to_string_lossy().as_bytes()).map_err(|e| e.to_string())?;
                let e = CString::new(engine.to_string_lossy().as_bytes()).map_err(|e| e.to_string())?;
                if build(o.as_ptr(), e.as_ptr(), dims.as_ptr(), dims.len() as i32, &opts) != 0 {
                    println!(
                        "cargo:warning=engine build failed for {}: {} (that component will run on ONNX Runtime)",
                        onnx.display(),
                        CStr::from_ptr(last()).to_string_lossy()
                    );
                    continue;
                }
                write_stamp(&engine, &stamp).map_err(|e| e.to_string())?;
            }
        }
    }
    Ok(())
}
