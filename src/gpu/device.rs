//! The CUDA side: one context, one stream, the NVRTC-compiled kernels, and the device
//! resident frame preprocessing and logits postprocessing (buffers kept across frames,
//! grown only; tables uploaded once per size). **Not yet run on a GPU.**

use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaSlice, CudaStream, DeviceRepr, LaunchConfig, PushKernelArg};

use super::kernels;
use super::plan::{self, BilinearPlan, PilResizePlan};
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

fn launch_err(k: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| cuda_err(&format!("launch of {k}"), e)
}

/// Device tables of one resize size.
struct ResizeTables {
    plan: PilResizePlan,
    xb: CudaSlice<i32>,
    xw: CudaSlice<i32>,
    yb: CudaSlice<i32>,
    yw: CudaSlice<i32>,
}

/// Frame preprocessing on the device: RGB8 `[h][w][3]` → Pillow bicubic to S×S →
/// `(x / 255 - mean) / std` planar `[3, S, S]` fp32, identical to `frames::preprocess`.
pub struct Preprocessor {
    size: usize,
    lut: CudaSlice<f32>,
    tables: Option<ResizeTables>,
    frame: Option<CudaSlice<u8>>,
    tmp: Option<CudaSlice<u8>>,
    rgb: Option<CudaSlice<u8>>,
    out: CudaSlice<f32>,
}

impl Preprocessor {
    pub fn new(gpu: &Gpu, size: usize, mean: [f32; 3], std: [f32; 3]) -> Result<Preprocessor> {
        let lut = gpu.upload(&plan::normalize_lut(mean, std), "normalize table")?;
        let out = gpu.alloc::<f32>(3 * size * size, "preprocessed frame")?;
        Ok(Preprocessor { size, lut, tables: None, frame: None, tmp: None, rgb: None, out })
    }

    /// Upload one frame and run both passes on the stream (asynchronous; the result is
    /// [`Preprocessor::output`]). With `keep_rgb` the resized RGB8 image is kept too.
    pub fn run(&mut self, gpu: &Gpu, rgb8: &[u8], w: usize, h: usize, keep_rgb: bool) -> Result<()> {
        if rgb8.len() != w * h * 3 {
            return Err(Error::new(ErrorKind::InvalidInput, format!("frame of {w}x{h} needs {} bytes", w * h * 3)));
        }
        ensure(gpu, &mut self.frame, rgb8.len(), "frame")?;
        gpu.copy_in(rgb8, self.frame.as_mut().expect("ensured"), "frame")?;
        self.run_uploaded(gpu, w, h, keep_rgb)
    }

    /// The passes on the frame already in the device frame buffer (for timing kernels alone).
    pub fn run_uploaded(&mut self, gpu: &Gpu, w: usize, h: usize, keep_rgb: bool) -> Result<()> {
        let s = self.size;
        if self.tables.as_ref().is_none_or(|t| (t.plan.in_w, t.plan.in_h) != (w, h)) {
            let p = PilResizePlan::new(w, h, s, s)?;
            self.tables = Some(ResizeTables {
                xb: gpu.upload(&p.x_bounds, "resize tables")?,
                xw: gpu.upload(&p.x_weights, "resize tables")?,
                yb: gpu.upload(&p.y_bounds, "resize tables")?,
                yw: gpu.upload(&p.y_weights, "resize tables")?,
                plan: p,
            });
        }
        let t = self.tables.as_ref().expect("set");
        ensure(gpu, &mut self.tmp, t.plan.rows * s * 3, "resize intermediate")?;
        if keep_rgb {
            ensure(gpu, &mut self.rgb, s * s * 3, "resized frame")?;
        }
        let frame = self.frame.as_ref().ok_or_else(|| Error::new(ErrorKind::InvalidInput, "no frame uploaded"))?;
        let tmp = self.tmp.as_mut().expect("ensured");
        let (in_w, row0, rows, kx, out_w) =
            (w as i32, t.plan.row0 as i32, t.plan.rows as i32, t.plan.kx as i32, s as i32);
        let launch = plan::launch_pil_horizontal(s, t.plan.rows)?;
        // SAFETY: arguments match `pil_horizontal`'s signature; the tables have 2·S and
        // S·kx entries, `frame` holds w·h·3 bytes, `tmp` rows·S·3.
        unsafe {
            gpu.stream()
                .launch_builder(gpu.func(K::PilH))
                .arg(frame)
                .arg(&in_w)
                .arg(&row0)
                .arg(&rows)
                .arg(&t.xb)
                .arg(&t.xw)
                .arg(&kx)
                .arg(&out_w)
                .arg(&mut *tmp)
                .launch(cfg(launch))
                .map_err(launch_err("pil_horizontal"))?;
        }
        let (out_h, ky, write_rgb) = (s as i32, t.plan.ky as i32, i32::from(keep_rgb));
        let launch = plan::launch_plane(s, s, 1)?;
        let rgb = match self.rgb.as_mut() {
            Some(r) => r,
            None => self.rgb.insert(gpu.alloc::<u8>(1, "resized frame")?),
        };
        // SAFETY: arguments match `pil_vertical_normalize`; `out` holds 3·S·S floats,
        // `rgb` S·S·3 bytes when write_rgb is set (never written otherwise).
        unsafe {
            gpu.stream()
                .launch_builder(gpu.func(K::PilV))
                .arg(&*tmp)
                .arg(&out_w)
                .arg(&out_h)
                .arg(&t.yb)
                .arg(&t.yw)
                .arg(&ky)
                .arg(&self.lut)
                .arg(&mut self.out)
                .arg(&mut *rgb)
                .arg(&write_rgb)
                .launch(cfg(launch))
                .map_err(launch_err("pil_vertical_normalize"))?;
        }
        Ok(())
    }

    /// The `[3, S, S]` result on the device (the image encoder's input).
    pub fn output(&self) -> &CudaSlice<f32> {
        &self.out
    }

    pub fn download(&self, gpu: &Gpu) -> Result<Vec<f32>> {
        let mut v = vec![0f32; 3 * self.size * self.size];
        gpu.copy_out(&self.out, &mut v, "preprocessed frame")?;
        Ok(v)
    }

    /// The resized RGB8 image of the last `run` with `keep_rgb`.
    pub fn download_rgb(&self, gpu: &Gpu) -> Result<Vec<u8>> {
        let rgb = self
            .rgb
            .as_ref()
            .filter(|r| r.len() >= 3 * self.size * self.size)
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "no resized RGB8 image kept (run with keep_rgb)"))?;
        let mut v = vec![0u8; 3 * self.size * self.size];
        gpu.copy_out(rgb, &mut v, "resized frame")?;
        Ok(v)
    }
}

struct BilinearTables {
    plan: BilinearPlan,
    yi: CudaSlice<i32>,
    yw: CudaSlice<f32>,
    xi: CudaSlice<i32>,
    xw: CudaSlice<f32>,
}

/// Logits postprocessing on the device: `[B, m4, m4]` low-res logits → torch bilinear to
/// the video size `[B, H, W]` → `> 0` u8 masks; only the masks (and, when asked, the
/// logits) come back to the host.
#[derive(Default)]
pub struct Postprocessor {
    tables: Option<BilinearTables>,
    low: Option<CudaSlice<f32>>,
    logits: Option<CudaSlice<f32>>,
    masks: Option<CudaSlice<u8>>,
    last: (usize, usize, usize),
}

impl Postprocessor {
    pub fn new() -> Postprocessor {
        Postprocessor::default()
    }

    /// Device buffer for `n` low-res logits (e.g. the decoder's output is copied here;
    /// with engines writing device buffers this is where they would write).
    pub fn input(&mut self, gpu: &Gpu, n: usize) -> Result<&mut CudaSlice<f32>> {
        ensure(gpu, &mut self.low, n, "low-res logits")?;
        Ok(self.low.as_mut().expect("ensured"))
    }

    /// Upload `b` planes `[in_h, in_w]` and run.
    #[allow(clippy::too_many_arguments)]
    pub fn run_host(
        &mut self,
        gpu: &Gpu,
        low: &[f32],
        b: usize,
        in_hw: (usize, usize),
        out_hw: (usize, usize),
        keep_logits: bool,
    ) -> Result<()> {
        if low.len() != b * in_hw.0 * in_hw.1 {
            return Err(Error::new(ErrorKind::InvalidInput, "low-res logits: size is not b·h·w"));
        }
        let buf = self.input(gpu, low.len())?;
        gpu.copy_in(low, buf, "low-res logits")?;
        self.run(gpu, b, in_hw, out_hw, keep_logits)
    }

    /// Upsample + threshold the `b` planes in the input buffer (asynchronous).
    pub fn run(
        &mut self,
        gpu: &Gpu,
        b: usize,
        (in_h, in_w): (usize, usize),
        (out_h, out_w): (usize, usize),
        keep_logits: bool,
    ) -> Result<()> {
        if self
            .tables
            .as_ref()
            .is_none_or(|t| (t.plan.in_h, t.plan.in_w, t.plan.out_h, t.plan.out_w) != (in_h, in_w, out_h, out_w))
        {
            let p = BilinearPlan::new(in_h, in_w, out_h, out_w)?;
            self.tables = Some(BilinearTables {
                yi: gpu.upload(&p.y_idx, "bilinear tables")?,
                yw: gpu.upload(&p.y_w, "bilinear tables")?,
                xi: gpu.upload(&p.x_idx, "bilinear tables")?,
                xw: gpu.upload(&p.x_w, "bilinear tables")?,
                plan: p,
            });
        }
        let n_out = b * out_h * out_w;
        let low = self
            .low
            .as_ref()
            .filter(|l| l.len() >= b * in_h * in_w)
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "low-res logits not in the input buffer"))?;
        ensure(gpu, &mut self.masks, n_out, "masks")?;
        ensure(gpu, &mut self.logits, if keep_logits { n_out } else { 1 }, "logits")?;
        let t = self.tables.as_ref().expect("set");
        let launch = plan::launch_plane(out_w, out_h, b)?;
        let (ih, iw, oh, ow) = (in_h as i32, in_w as i32, out_h as i32, out_w as i32);
        let (identity, write_logits) = (i32::from(t.plan.identity), i32::from(keep_logits));
        let masks = self.masks.as_mut().expect("ensured");
        let logits = self.logits.as_mut().expect("ensured");
        // SAFETY: arguments match `bilinear_threshold`; `low` holds b·in_h·in_w floats,
        // `masks` b·out_h·out_w bytes, `logits` as many floats when write_logits is set.
        unsafe {
            gpu.stream()
                .launch_builder(gpu.func(K::Bilinear))
                .arg(low)
                .arg(&ih)
                .arg(&iw)
                .arg(&t.yi)
                .arg(&t.yw)
                .arg(&t.xi)
                .arg(&t.xw)
                .arg(&oh)
                .arg(&ow)
                .arg(&identity)
                .arg(&mut *logits)
                .arg(&write_logits)
                .arg(&mut *masks)
                .launch(cfg(launch))
                .map_err(launch_err("bilinear_threshold"))?;
        }
        self.last = (b, out_h, out_w);
        Ok(())
    }

    /// The masks of the last run, `[B, H, W]` 0/1 (waits for the stream).
    pub fn download_masks(&self, gpu: &Gpu, out: &mut Vec<u8>) -> Result<()> {
        let (b, h, w) = self.last;
        out.resize(b * h * w, 0);
        let m = self.masks.as_ref().ok_or_else(|| Error::new(ErrorKind::InvalidInput, "no postprocessing run"))?;
        gpu.copy_out(m, out, "masks")
    }

    /// The logits of the last run with `keep_logits` (for `--save-logits`).
    pub fn download_logits(&self, gpu: &Gpu, out: &mut Vec<f32>) -> Result<()> {
        let (b, h, w) = self.last;
        let l = self
            .logits
            .as_ref()
            .filter(|l| l.len() >= b * h * w)
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "logits were not kept (run with keep_logits)"))?;
        out.resize(b * h * w, 0.0);
        gpu.copy_out(l, out, "logits")
    }
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
