//! Build script: detects TensorRT headers (for the optional `tensorrt` feature's C++
//! shim). Without them the crate builds as usual and the TensorRT backend reports itself
//! unavailable at run time.

use std::path::PathBuf;

fn tensorrt_include_dirs() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(root) = std::env::var("TENSORRT_ROOT") {
        v.push(PathBuf::from(&root).join("include"));
    }
    for d in ["/usr/include/aarch64-linux-gnu", "/usr/include/x86_64-linux-gnu", "/usr/local/TensorRT/include", "/usr/include"] {
        v.push(PathBuf::from(d));
    }
    v
}

fn main() {
    println!("cargo:rerun-if-env-changed=TENSORRT_ROOT");
    println!("cargo:rustc-check-cfg=cfg(tamrt_trt_headers)");
    let found = tensorrt_include_dirs().into_iter().find(|d| d.join("NvInfer.h").exists());
    if let Some(dir) = found {
        println!("cargo:rustc-cfg=tamrt_trt_headers");
        println!("cargo:rustc-env=TAMRT_TRT_INCLUDE={}", dir.display());
    }
}
