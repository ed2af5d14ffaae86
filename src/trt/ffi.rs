//! Run-time binding to `libtamrt_trt.so` (src/trt/shim.cpp) through `libloading`, with
//! `Drop` wrappers for the shim's opaque handles. Loading fails cleanly where the shim
//! or TensorRT is absent, which is how a binary built anywhere still runs everywhere.

use std::ffi::{c_char, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, ErrorKind, Result};

/// `tamrt_trt_profile_dims` of shim.h.
#[repr(C)]
pub struct ProfileDims {
    pub name: *const c_char,
    pub nb_dims: i32,
    pub min: [i64; 8],
    pub opt: [i64; 8],
    pub max: [i64; 8],
}

/// `tamrt_trt_build_options` of shim.h.
#[repr(C)]
pub struct BuildOptions {
    pub precision: i32,
    pub workspace_bytes: i64,
    pub opt_level: i32,
    pub keep_norms_fp32: i32,
    pub timing_cache: *const c_char,
}

type FnAbi = unsafe extern "C" fn() -> u32;
type FnVersion = unsafe extern "C" fn(*mut i32, *mut i32);
type FnLastError = unsafe extern "C" fn() -> *const c_char;
type FnDeviceInfo = unsafe extern "C" fn(*mut c_char, i32, *mut i32, *mut i32) -> i32;
type FnBuild = unsafe extern "C" fn(*const c_char, *const c_char, *const ProfileDims, i32, *const BuildOptions) -> i32;
type FnEngineLoad = unsafe extern "C" fn(*const c_char, *mut *mut c_void) -> i32;
type FnFree = unsafe extern "C" fn(*mut c_void);
type FnNumIo = unsafe extern "C" fn(*const c_void) -> i32;
type FnIoName = unsafe extern "C" fn(*const c_void, i32, *mut i32) -> *const c_char;
type FnDeviceMemory = unsafe extern "C" fn(*const c_void) -> i64;
type FnContextCreate = unsafe extern "C" fn(*mut c_void, *mut *mut c_void) -> i32;
type FnSetShape = unsafe extern "C" fn(*mut c_void, *const c_char, *const i64, i32) -> i32;
type FnGetShape = unsafe extern "C" fn(*mut c_void, *const c_char, *mut i64, *mut i32) -> i32;
type FnSetAddress = unsafe extern "C" fn(*mut c_void, *const c_char, *mut c_void) -> i32;
type FnEnqueue = unsafe extern "C" fn(*mut c_void, *mut c_void) -> i32;

/// The loaded shim.
pub struct Shim {
    path: PathBuf,
    last_error: FnLastError,
    version: FnVersion,
    device_info: FnDeviceInfo,
    build: FnBuild,
    engine_load: FnEngineLoad,
    engine_free: FnFree,
    num_io: FnNumIo,
    io_name: FnIoName,
    device_memory: FnDeviceMemory,
    context_create: FnContextCreate,
    context_free: FnFree,
    set_shape: FnSetShape,
    get_shape: FnGetShape,
    set_address: FnSetAddress,
    enqueue: FnEnqueue,
    _lib: libloading::Library,
}

const ABI: u32 = 1;

fn unavailable(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Backend, msg)
}

/// Where the shim is looked for: `TAMRT_TRT_SHIM`, beside the executable, then the copy
/// build.rs compiled (when it found TensorRT headers).
pub fn shim_candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(p) = std::env::var("TAMRT_TRT_SHIM") {
        v.push(PathBuf::from(p));
    }
    if let Some(d) = std::env::current_exe().ok().and_then(|e| e.parent().map(Path::to_path_buf)) {
        v.push(d.join("libtamrt_trt.so"));
    }
    if let Some(p) = option_env!("TAMRT_TRT_SHIM_BUILT") {
        v.push(PathBuf::from(p));
    }
    v
}

impl Shim {
    /// Load the shim (and through it libnvinfer / libnvonnxparser).
    pub fn load() -> Result<Arc<Shim>> {
        let cands = shim_candidates();
        if cands.is_empty() {
            return Err(unavailable(
                "TensorRT backend not available: this build found no TensorRT headers (set TENSORRT_ROOT and build with --features tensorrt), and TAMRT_TRT_SHIM is not set",
            ));
        }
        let mut errs = Vec::new();
        for c in cands {
            if !c.exists() {
                errs.push(format!("{}: not found", c.display()));
                continue;
            }
            match Self::load_from(&c) {
                Ok(s) => return Ok(Arc::new(s)),
                Err(e) => errs.push(e.to_string()),
            }
        }
        Err(unavailable(format!("TensorRT backend not available: {}", errs.join("; "))))
    }

    /// Load the shim at `path` (no search; `TAMRT_TRT_SHIM` is not consulted).
    pub fn open(path: &Path) -> Result<Arc<Shim>> {
        Self::load_from(path).map(Arc::new)
    }

    fn load_from(path: &Path) -> Result<Shim> {
        // SAFETY: loading a library runs its initialisers; the shim has none beyond the
        // TensorRT libraries' own. Symbols are copied out as plain fn pointers and the
        // library is kept alive in the struct for as long as they are used.
        unsafe {
            let lib = libloading::Library::new(path)
                .map_err(|e| unavailable(format!("{}: cannot load ({e})", path.display())))?;
            macro_rules! sym {
                ($name:literal, $t:ty) => {
                    *lib.get::<$t>($name)
                        .map_err(|e| unavailable(format!("{}: missing symbol: {e}", path.display())))?
                };
            }
            let abi: FnAbi = sym!(b"tamrt_trt_abi\0", FnAbi);
            if abi() != ABI {
                return Err(unavailable(format!("{}: shim ABI {} != {ABI}", path.display(), abi())));
            }
            Ok(Shim {
                path: path.to_path_buf(),
                last_error: sym!(b"tamrt_trt_last_error\0", FnLastError),
                version: sym!(b"tamrt_trt_version\0", FnVersion),
                device_info: sym!(b"tamrt_trt_device_info\0", FnDeviceInfo),
                build: sym!(b"tamrt_trt_build_engine\0", FnBuild),
                engine_load: sym!(b"tamrt_trt_engine_load\0", FnEngineLoad),
                engine_free: sym!(b"tamrt_trt_engine_free\0", FnFree),
                num_io: sym!(b"tamrt_trt_engine_num_io\0", FnNumIo),
                io_name: sym!(b"tamrt_trt_engine_io_name\0", FnIoName),
                device_memory: sym!(b"tamrt_trt_engine_device_memory\0", FnDeviceMemory),
                context_create: sym!(b"tamrt_trt_context_create\0", FnContextCreate),
                context_free: sym!(b"tamrt_trt_context_free\0", FnFree),
                set_shape: sym!(b"tamrt_trt_context_set_input_shape\0", FnSetShape),
                get_shape: sym!(b"tamrt_trt_context_get_shape\0", FnGetShape),
                set_address: sym!(b"tamrt_trt_context_set_address\0", FnSetAddress),
                enqueue: sym!(b"tamrt_trt_context_enqueue\0", FnEnqueue),
                _lib: lib,
            })
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// (compiled-against, loaded) TensorRT versions as (major, minor, patch).
    pub fn versions(&self) -> ((u32, u32, u32), (u32, u32, u32)) {
        let (mut c, mut l) = (0i32, 0i32);
        // SAFETY: plain out-parameters.
        unsafe { (self.version)(&mut c, &mut l) };
        let split = |v: i32| {
            let v = v.max(0) as u32;
            (v / 10000, (v / 100) % 100, v % 100)
        };
        (split(c), split(l))
    }

    /// The engine target of this machine: loaded TensorRT version, current GPU, and the
    /// L4T release on Jetson.
    pub fn target(&self) -> Result<super::engine_cache::Target> {
        let mut name = [0 as c_char; 256];
        let (mut ma, mut mi) = (0i32, 0i32);
        // SAFETY: 256-byte buffer as declared; out-parameters.
        let st = unsafe { (self.device_info)(name.as_mut_ptr(), 256, &mut ma, &mut mi) };
        self.check(st, "querying the GPU")?;
        // SAFETY: the shim NUL-terminates within the buffer (snprintf).
        let gpu_name = unsafe { CStr::from_ptr(name.as_ptr()) }.to_string_lossy().into_owned();
        Ok(super::engine_cache::Target {
            trt_version: self.versions().1,
            compute_capability: (ma.max(0) as u32, mi.max(0) as u32),
            gpu_name,
            l4t_release: std::fs::read_to_string("/etc/nv_tegra_release")
                .ok()
                .and_then(|t| super::engine_cache::parse_nv_tegra_release(&t)),
        })
    }

    fn check(&self, status: i32, what: &str) -> Result<()> {
        if status == 0 {
            return Ok(());
        }
        // SAFETY: the shim returns a valid NUL-terminated thread-local string.
        let msg = unsafe { CStr::from_ptr((self.last_error)()) }.to_string_lossy().into_owned();
        let kind = match status {
            1 | 2 | 3 | 4 | 6 | 7 => ErrorKind::Backend,
            5 => ErrorKind::Io,
            _ => ErrorKind::Backend,
        };
        Err(Error::new(kind, format!("TensorRT {what} failed (status {status}): {msg}")))
    }

    /// Build and serialize an engine.
    #[allow(clippy::too_many_arguments)] // one per field of the C options struct
    pub fn build_engine(
        &self,
        onnx: &Path,
        engine: &Path,
        profiles: &[super::profiles::InputProfile],
        precision: i32,
        workspace_bytes: i64,
        opt_level: Option<i32>,
        timing_cache: Option<&Path>,
    ) -> Result<()> {
        let cstr = |p: &Path| CString::new(p.to_string_lossy().as_bytes()).map_err(|_| unavailable("path has NUL"));
        let (onnx_c, engine_c) = (cstr(onnx)?, cstr(engine)?);
        let cache_c = timing_cache.map(cstr).transpose()?;
        let names: Vec<CString> = profiles
            .iter()
            .map(|p| CString::new(p.name.as_bytes()).map_err(|_| unavailable("name has NUL")))
            .collect::<Result<_>>()?;
        let mut dims = Vec::new();
        for (p, n) in profiles.iter().zip(&names) {
            if p.min.len() > 8 {
                return Err(unavailable(format!("input '{}' has rank {} > 8", p.name, p.min.len())));
            }
            let mut d =
                ProfileDims { name: n.as_ptr(), nb_dims: p.min.len() as i32, min: [0; 8], opt: [0; 8], max: [0; 8] };
            d.min[..p.min.len()].copy_from_slice(&p.min);
            d.opt[..p.opt.len()].copy_from_slice(&p.opt);
            d.max[..p.max.len()].copy_from_slice(&p.max);
            dims.push(d);
        }
        let opts = BuildOptions {
            precision,
            workspace_bytes,
            opt_level: opt_level.unwrap_or(-1),
            keep_norms_fp32: 1,
            timing_cache: cache_c.as_ref().map(|c| c.as_ptr()).unwrap_or(std::ptr::null()),
        };
        // SAFETY: all pointers are valid for the call; arrays sized by nb_dims.
        let st = unsafe { (self.build)(onnx_c.as_ptr(), engine_c.as_ptr(), dims.as_ptr(), dims.len() as i32, &opts) };
        self.check(st, &format!("engine build for '{}'", onnx.display()))
    }
}

/// A deserialized engine.
pub struct Engine {
    shim: Arc<Shim>,
    ptr: *mut c_void,
}

// SAFETY: a TensorRT engine may be used from any thread (contexts are per-thread here).
unsafe impl Send for Engine {}

impl Engine {
    pub fn load(shim: &Arc<Shim>, path: &Path) -> Result<Engine> {
        let c = CString::new(path.to_string_lossy().as_bytes()).map_err(|_| unavailable("path has NUL"))?;
        let mut ptr = std::ptr::null_mut();
        // SAFETY: out-parameter receives an owned handle on success.
        let st = unsafe { (shim.engine_load)(c.as_ptr(), &mut ptr) };
        shim.check(st, &format!("loading engine '{}'", path.display()))?;
        Ok(Engine { shim: shim.clone(), ptr })
    }

    /// (name, is_input) of every I/O tensor.
    pub fn io(&self) -> Vec<(String, bool)> {
        // SAFETY: valid handle; names live as long as the engine.
        unsafe {
            (0..(self.shim.num_io)(self.ptr))
                .filter_map(|i| {
                    let mut is_in = 0;
                    let p = (self.shim.io_name)(self.ptr, i, &mut is_in);
                    (!p.is_null()).then(|| (CStr::from_ptr(p).to_string_lossy().into_owned(), is_in == 1))
                })
                .collect()
        }
    }

    pub fn device_memory(&self) -> i64 {
        // SAFETY: valid handle.
        unsafe { (self.shim.device_memory)(self.ptr) }
    }

    pub fn context(&self) -> Result<Context> {
        let mut ptr = std::ptr::null_mut();
        // SAFETY: valid handle; out-parameter.
        let st = unsafe { (self.shim.context_create)(self.ptr, &mut ptr) };
        self.shim.check(st, "creating an execution context")?;
        Ok(Context { shim: self.shim.clone(), ptr })
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // SAFETY: handle owned by us, freed once. Contexts hold no Rust reference to it, so
        // callers drop contexts first (TrtSession's field order does).
        unsafe { (self.shim.engine_free)(self.ptr) }
    }
}

/// An execution context.
pub struct Context {
    shim: Arc<Shim>,
    ptr: *mut c_void,
}

// SAFETY: used from one thread at a time (owned by one session).
unsafe impl Send for Context {}

impl Context {
    fn name(n: &str) -> Result<CString> {
        CString::new(n).map_err(|_| unavailable("tensor name has NUL"))
    }

    pub fn set_input_shape(&mut self, name: &str, dims: &[i64]) -> Result<()> {
        let c = Self::name(name)?;
        // SAFETY: valid handle and buffers.
        let st = unsafe { (self.shim.set_shape)(self.ptr, c.as_ptr(), dims.as_ptr(), dims.len() as i32) };
        self.shim.check(st, &format!("setting the shape of '{name}' to {dims:?}"))
    }

    pub fn shape(&mut self, name: &str) -> Result<Vec<i64>> {
        let c = Self::name(name)?;
        let mut d = [0i64; 8];
        let mut n = 0i32;
        // SAFETY: 8-element buffer, as shim.h's Dims limit.
        let st = unsafe { (self.shim.get_shape)(self.ptr, c.as_ptr(), d.as_mut_ptr(), &mut n) };
        self.shim.check(st, &format!("reading the shape of '{name}'"))?;
        Ok(d[..n.clamp(0, 8) as usize].to_vec())
    }

    /// # Safety
    /// `device_ptr` must point to device memory large enough for the tensor's current
    /// shape and stay valid until the enqueued work completes.
    pub unsafe fn set_address(&mut self, name: &str, device_ptr: *mut c_void) -> Result<()> {
        let c = Self::name(name)?;
        let st = (self.shim.set_address)(self.ptr, c.as_ptr(), device_ptr);
        self.shim.check(st, &format!("binding '{name}'"))
    }

    /// # Safety
    /// `stream` must be a valid CUDA stream of the current context.
    pub unsafe fn enqueue(&mut self, stream: *mut c_void) -> Result<()> {
        let st = (self.shim.enqueue)(self.ptr, stream);
        self.shim.check(st, "enqueueV3")
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        // SAFETY: handle owned by us, freed once.
        unsafe { (self.shim.context_free)(self.ptr) }
    }
}
