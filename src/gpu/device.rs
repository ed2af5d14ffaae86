//! The CUDA side: one context, one stream, the NVRTC-compiled kernels, buffer helpers.
//! The pipelines are in [`super::prepost`] (re-exported here) and [`super::bank`].
//!
//! **Checked on an H200 by `tamrt gpu-check` (bit-exact); not yet run under TensorRT.**

pub use super::prepost::{Postprocessor, Preprocessor};

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig};

use super::kernels;
use super::plan;
use crate::error::{Error, ErrorKind, Result};

/// A CUDA failure as the crate's error, naming what failed.
pub fn cuda_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::new(ErrorKind::Backend, format!("CUDA {what}: {e}"))
}

/// Why no GPU can be used here, before any CUDA call (which would panic inside cudarc
/// when a library is missing): the driver (libcuda) and NVRTC (libnvrtc) must load.
pub fn probe_libraries() -> Result<()> {
    // SAFETY: only tries to dlopen the library; no CUDA call is made.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(Error::new(
            ErrorKind::Backend,
            "no CUDA driver: libcuda.so could not be loaded (no NVIDIA driver on this machine?)",
        ));
    }
    probe_nvrtc()
}

/// Whether NVRTC loads (no GPU needed for compiling).
pub fn probe_nvrtc() -> Result<()> {
    // SAFETY: only tries to dlopen the library; no NVRTC call is made.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        let names = cudarc::get_lib_name_candidates("nvrtc").join(", ");
        let found = nvrtc_files();
        let seen = if found.is_empty() {
            String::new()
        } else {
            format!(" (found here: {}; a name above must resolve to one, e.g. through a symlink)", found.join(", "))
        };
        return Err(Error::new(
            ErrorKind::Backend,
            format!(
                "NVRTC not found: none of [{names}] loads{seen}; put CUDA's lib64 (e.g. /usr/local/cuda/lib64, which \
                 has libnvrtc.so) on LD_LIBRARY_PATH"
            ),
        ));
    }
    Ok(())
}

/// The kernels compiled to PTX by NVRTC (`--fmad=false`); needs NVRTC, not a GPU.
pub fn compile_ptx() -> Result<cudarc::nvrtc::Ptx> {
    probe_nvrtc()?;
    std::panic::catch_unwind(|| {
        let opts = cudarc::nvrtc::CompileOptions {
            fmad: Some(false),
            name: Some("tamrt_kernels.cu".into()),
            ..Default::default()
        };
        cudarc::nvrtc::compile_ptx_with_opts(kernels::SOURCE, opts).map_err(|e| match e {
            cudarc::nvrtc::CompileError::CompileError { log, .. } => Error::new(
                ErrorKind::Backend,
                format!("NVRTC could not compile the kernels:\n{}", log.to_string_lossy()),
            ),
            other => cuda_err("NVRTC", other),
        })
    })
    .map_err(|p| panic_err("compiling the kernels", p))?
}

/// NVRTC libraries in the usual CUDA folders (for the error message).
fn nvrtc_files() -> Vec<String> {
    let mut dirs: Vec<std::path::PathBuf> = ["CUDA_HOME", "CUDA_PATH"]
        .iter()
        .filter_map(std::env::var_os)
        .map(|p| std::path::PathBuf::from(p).join("lib64"))
        .collect();
    dirs.push("/usr/local/cuda/lib64".into());
    dirs.push("/usr/local/cuda/targets/x86_64-linux/lib".into());
    dirs.push("/usr/local/cuda/targets/aarch64-linux/lib".into());
    let mut out = Vec::new();
    for d in dirs {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("libnvrtc.so") {
                out.push(e.path().display().to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// One CUDA context and stream with the kernels compiled for it.
pub struct Gpu {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    funcs: Vec<CudaFunction>,
    name: String,
}

/// Indices into `Gpu::funcs`, in `kernels::NAMES` order.
#[derive(Clone, Copy)]
pub(crate) enum K {
    PilH = 0,
    PilV = 1,
    Bilinear = 2,
    ToBf16 = 3,
    GatherTm = 4,
    GatherCm = 5,
    GatherPtrs = 6,
    FillHoles = 7,
}

impl Gpu {
    /// Open GPU `ordinal` with a new stream and compile the kernels (NVRTC, once).
    pub fn new(ordinal: usize) -> Result<Gpu> {
        probe_libraries()?;
        // cudarc panics (instead of returning an error) when a symbol is missing from the
        // loaded library; turn that into an error too.
        let stream = std::panic::catch_unwind(|| -> Result<Arc<CudaStream>> {
            let ctx = CudaContext::new(ordinal).map_err(|e| cuda_err(&format!("context on GPU {ordinal}"), e))?;
            ctx.new_stream().map_err(|e| cuda_err("stream", e))
        })
        .map_err(|p| panic_err("opening the GPU", p))??;
        Gpu::on_stream(stream)
    }

    /// Compile the kernels for the context of `stream` and launch everything on it (the
    /// stream the engines run on, so that there is one stream in all).
    pub fn on_stream(stream: Arc<CudaStream>) -> Result<Gpu> {
        let ctx = stream.context().clone();
        let ptx = compile_ptx()?;
        let compiled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<Vec<CudaFunction>> {
            let module = ctx.load_module(ptx).map_err(|e| cuda_err("loading the compiled kernels", e))?;
            kernels::NAMES
                .iter()
                .map(|n| module.load_function(n).map_err(|e| cuda_err(&format!("kernel '{n}'"), e)))
                .collect()
        }))
        .map_err(|p| panic_err("loading the kernels", p))??;
        let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
        let cc = ctx.compute_capability().map(|(a, b)| format!(" (sm_{a}{b})")).unwrap_or_default();
        Ok(Gpu { ctx, stream, funcs: compiled, name: format!("{name}{cc}") })
    }

    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// GPU name and compute capability.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn func(&self, k: K) -> &CudaFunction {
        &self.funcs[k as usize]
    }

    pub fn synchronize(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| cuda_err("synchronize", e))
    }

    /// A zeroed device buffer of `n` elements (at least 1).
    pub fn alloc<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(&self, n: usize, what: &str) -> Result<CudaSlice<T>> {
        self.stream.alloc_zeros::<T>(n.max(1)).map_err(|e| cuda_err(&format!("alloc of {what} ({n} elements)"), e))
    }

    pub fn upload<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(&self, v: &[T], what: &str) -> Result<CudaSlice<T>> {
        let mut b = self.alloc::<T>(v.len(), what)?;
        if !v.is_empty() {
            self.stream.memcpy_htod(v, &mut b).map_err(|e| cuda_err(&format!("upload of {what}"), e))?;
        }
        Ok(b)
    }

    /// Copy `host` into the first `host.len()` elements of `dst` (which must hold them).
    pub fn copy_in<T: DeviceRepr>(&self, host: &[T], dst: &mut CudaSlice<T>, what: &str) -> Result<()> {
        if host.len() > dst.len() {
            return Err(Error::new(ErrorKind::Backend, format!("upload of {what}: buffer too small")));
        }
        if host.is_empty() {
            return Ok(());
        }
        let mut view = dst.slice_mut(0..host.len());
        self.stream.memcpy_htod(host, &mut view).map_err(|e| cuda_err(&format!("upload of {what}"), e))
    }

    /// Copy the first `host.len()` elements of `src` to `host` (synchronous).
    pub fn copy_out<T: DeviceRepr>(&self, src: &CudaSlice<T>, host: &mut [T], what: &str) -> Result<()> {
        if host.len() > src.len() {
            return Err(Error::new(ErrorKind::Backend, format!("download of {what}: buffer too small")));
        }
        if host.is_empty() {
            return Ok(());
        }
        self.stream
            .memcpy_dtoh(&src.slice(0..host.len()), host)
            .map_err(|e| cuda_err(&format!("download of {what}"), e))?;
        self.synchronize()
    }
}

fn panic_err(what: &str, p: Box<dyn std::any::Any + Send>) -> Error {
    let msg = p
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "unknown panic".into());
    Error::new(ErrorKind::Backend, format!("CUDA library failure while {what}: {msg}"))
}

/// `buf` holds at least `n` elements afterwards (reallocated, contents lost, only when
/// it must grow).
pub fn ensure<T: DeviceRepr + cudarc::driver::ValidAsZeroBits>(
    gpu: &Gpu,
    buf: &mut Option<CudaSlice<T>>,
    n: usize,
    what: &str,
) -> Result<()> {
    if buf.as_ref().is_none_or(|b| b.len() < n.max(1)) {
        *buf = Some(gpu.alloc::<T>(n, what)?);
    }
    Ok(())
}

pub(crate) fn cfg((grid, block): plan::Launch) -> LaunchConfig {
    LaunchConfig { grid_dim: grid, block_dim: block, shared_mem_bytes: 0 }
}

pub(crate) fn launch_err(k: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| cuda_err(&format!("launch of {k}"), e)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Needs NVRTC (not a GPU): where it loads, the kernels compile, every entry point is
    /// there and nothing was fused into an FMA; where it does not, the error says so.
    #[test]
    fn nvrtc_compiles_the_kernels_or_says_it_is_missing() {
        match compile_ptx() {
            Ok(ptx) => {
                let src = ptx.to_src();
                for n in kernels::NAMES {
                    assert!(src.contains(&format!(".entry {n}(")), "no entry {n} in the PTX");
                }
                assert!(!src.contains("fma.rn.f32"), "an fp32 FMA in the PTX despite --fmad=false");
            }
            Err(e) => {
                assert_eq!(e.kind(), ErrorKind::Backend);
                assert!(e.message().contains("NVRTC not found"), "{e}");
            }
        }
    }
}
