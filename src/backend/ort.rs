//! ONNX Runtime on CPU through the `ort` crate, with the library loaded at run time
//! (`load-dynamic`). The library comes from the PyPI `onnxruntime` wheel, unpacked by
//! `scripts/setup.sh` into `.ort/`; nothing is downloaded at build time.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::session::builder::GraphOptimizationLevel;
use ort::session::{RunOptions, Session};
use ort::value::TensorRef;

use super::{Backend, ComponentSession};
use crate::error::{Error, ErrorKind, Result};
use crate::export::Component;
use crate::weights::TensorF32;

fn backend_err(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::Backend, msg)
}

/// Where libonnxruntime is looked for, in order: `ORT_DYLIB_PATH` (file), `TAMRT_ORT_DIR`
/// (folder), `.ort/` beside the crate's manifest (what `scripts/setup.sh` fills).
pub fn library_candidates() -> Vec<PathBuf> {
    let mut v = Vec::new();
    if let Ok(p) = std::env::var("ORT_DYLIB_PATH") {
        v.push(PathBuf::from(p));
    }
    let mut dirs = Vec::new();
    if let Ok(d) = std::env::var("TAMRT_ORT_DIR") {
        dirs.push(PathBuf::from(d));
    }
    dirs.push(Path::new(env!("CARGO_MANIFEST_DIR")).join(".ort"));
    if let Ok(exe) = std::env::current_exe() {
        if let Some(d) = exe.parent() {
            dirs.push(d.join(".ort"));
        }
    }
    for d in dirs {
        if let Ok(rd) = std::fs::read_dir(&d) {
            let mut libs: Vec<PathBuf> = rd
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.file_name().and_then(|f| f.to_str()).is_some_and(|f| f.starts_with("libonnxruntime.so")))
                .collect();
            libs.sort();
            v.extend(libs);
        }
    }
    v
}

static INIT: OnceLock<std::result::Result<(PathBuf, ort::environment::Environment), String>> = OnceLock::new();

/// Load libonnxruntime once per process. Errors say where it was looked for.
pub fn init() -> Result<PathBuf> {
    environment().map(|(p, _)| p.clone())
}

fn environment() -> Result<&'static (PathBuf, ort::environment::Environment)> {
    INIT.get_or_init(|| {
        let cands = library_candidates();
        let mut errs = Vec::new();
        if arena_mode() == ArenaMode::Off {
            tune_heap();
        }
        for c in &cands {
            if !c.exists() {
                errs.push(format!("{}: not found", c.display()));
                continue;
            }
            match ort::init_from(c) {
                Ok(b) => match b.with_name("tamrt").build() {
                    Ok(env) => {
                        if arena_mode() == ArenaMode::Shared {
                            if let Err(e) = register_shared_arena(&env) {
                                // the sessions then fall back to an arena each (as with
                                // `keep`): same speed, more resident memory
                                tracing::warn!(
                                    "{}: no shared CPU arena ({e}); each session keeps its own",
                                    c.display()
                                );
                            }
                        }
                        return Ok((c.clone(), env));
                    }
                    Err(e) => errs.push(format!("{}: {e}", c.display())),
                },
                Err(e) => errs.push(format!("{}: {e}", c.display())),
            }
        }
        Err(format!(
            "ONNX Runtime library not found (run scripts/setup.sh, or set ORT_DYLIB_PATH); tried: {}",
            if errs.is_empty() { "nothing (no candidates)".to_string() } else { errs.join("; ") }
        ))
    })
    .as_ref()
    .map_err(|e| backend_err(e.clone()))
}

/// How ONNX Runtime's CPU sessions hold activation memory (`TAMRT_ORT_ARENA`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArenaMode {
    /// Default (`shared`): one arena registered on the environment and used by every
    /// session (`session.use_env_allocators`). The tracker runs its components one after
    /// another, so the arena holds the largest single working set, kept between runs (no
    /// page faults after the first frames), instead of one peak per session.
    Shared,
    /// `shrink`: each session's arena reuses blocks within a run and gives its free
    /// regions back at the end of the run (`memory.enable_memory_arena_shrinkage`), so
    /// resident memory is the weights plus the current run's working set; every run
    /// faults its activations in again.
    Shrink,
    /// `keep` (or `1`): arenas keep their peak size between runs (no page faults on the
    /// next run; every session keeps its own peak resident).
    Keep,
    /// `off` (or `0`): no arena; glibc with a 1 MiB mmap threshold and a heap trim after
    /// each run. Lowest memory, but each run faults its activations in page by page.
    Off,
}

/// The arena mode from `TAMRT_ORT_ARENA` (`shared` when unset or unknown).
pub fn arena_mode() -> ArenaMode {
    match std::env::var("TAMRT_ORT_ARENA").as_deref() {
        Ok("shrink") => ArenaMode::Shrink,
        Ok("keep") | Ok("1") => ArenaMode::Keep,
        Ok("off") | Ok("0") => ArenaMode::Off,
        _ => ArenaMode::Shared,
    }
}

/// Register one CPU arena on the environment (`CreateAndRegisterAllocator`), for the
/// sessions created with `session.use_env_allocators`.
fn register_shared_arena(env: &ort::environment::Environment) -> std::result::Result<(), String> {
    use ort::memory::{AllocationDevice, AllocatorType, MemoryInfo, MemoryType};
    use ort::AsPointer;
    let info = MemoryInfo::new(AllocationDevice::CPU, 0, AllocatorType::Arena, MemoryType::Default)
        .map_err(|e| format!("cannot describe the shared CPU arena: {e}"))?;
    let api = ort::api();
    let status_err = |what: &str, st: ort::sys::OrtStatusPtr| -> std::result::Result<(), String> {
        if st.0.is_null() {
            return Ok(());
        }
        // SAFETY: a non-null status from the API; its message is a C string owned by it,
        // copied before the status is released.
        let msg = unsafe {
            let m = std::ffi::CStr::from_ptr((api.GetErrorMessage)(st.0)).to_string_lossy().into_owned();
            (api.ReleaseStatus)(st.0);
            m
        };
        Err(format!("{what}: {msg}"))
    };
    let mut cfg: *mut ort::sys::OrtArenaCfg = std::ptr::null_mut();
    // SAFETY: CreateArenaCfg writes a new config to `cfg` (released below). No size
    // limit; kNextPowerOfTwo growth (0: on the real-size benchmarks it kept less resident
    // than kSameAsRequested, whose many exact-size regions fragmented); -1 keeps ORT's
    // default initial chunk and dead-bytes limit.
    status_err("CreateArenaCfg", unsafe { (api.CreateArenaCfg)(0, 0, -1, -1, &mut cfg) })?;
    // SAFETY: env, info and cfg are live; ORT copies what it needs from info and cfg.
    let r = status_err("CreateAndRegisterAllocator", unsafe {
        (api.CreateAndRegisterAllocator)(env.ptr().cast_mut(), info.ptr(), cfg)
    });
    // SAFETY: cfg came from CreateArenaCfg and is not used after this.
    unsafe { (api.ReleaseArenaCfg)(cfg) };
    r
}

/// ONNX Runtime CPU backend.
#[derive(Debug, Clone, Default)]
pub struct OrtBackend {
    /// Intra-op threads (0 = ORT's default).
    pub threads: usize,
}

impl Backend for OrtBackend {
    fn name(&self) -> &str {
        "ort-cpu"
    }
    fn load(&self, model_dir: &Path, component: Component) -> Result<Box<dyn ComponentSession>> {
        let path = model_dir.join(component.file_name());
        if component == Component::MemoryAttention {
            if let Some(s) = super::split_attention::try_load(model_dir, &path, self.threads) {
                return Ok(Box::new(s));
            }
        }
        Ok(Box::new(OrtSession::load(&path, self.threads)?))
    }
}

/// One ONNX Runtime session.
pub struct OrtSession {
    session: Session,
    path: PathBuf,
    run_options: RunOptions,
    mode: ArenaMode,
}

impl OrtSession {
    pub fn load(path: &Path, threads: usize) -> Result<OrtSession> {
        if !path.exists() {
            return Err(Error::new(ErrorKind::InvalidInput, format!("graph '{}' does not exist", path.display())));
        }
        Self::load_from(path, None, threads)
    }

    /// A session of a graph given as bytes (built in memory); `name` stands for its file
    /// in messages.
    pub fn load_bytes(name: &Path, bytes: &[u8], threads: usize) -> Result<OrtSession> {
        Self::load_from(name, Some(bytes), threads)
    }

    fn load_from(path: &Path, bytes: Option<&[u8]>, threads: usize) -> Result<OrtSession> {
        let (_, env) = environment()?;
        let ctx = |e: ort::Error| backend_err(format!("ONNX Runtime cannot load '{}': {e}", path.display()));
        let mut b = Session::builder(env).map_err(ctx)?;
        b = b.with_optimization_level(GraphOptimizationLevel::Level3).map_err(|e| ctx(e.into()))?;
        // Activations are re-planned per call (memory attention grows with the bank), and
        // pre-packed MatMul weights would be a second copy of each weight: the products
        // that dominate (thousands of rows) pack their operand per call at no measurable
        // cost.
        b = b.with_memory_pattern(false).map_err(|e| ctx(e.into()))?;
        b = b.with_prepacking(false).map_err(|e| ctx(e.into()))?;
        let mode = arena_mode();
        if mode == ArenaMode::Shared {
            b = b.with_env_allocators().map_err(|e| ctx(e.into()))?;
        }
        if mode == ArenaMode::Off {
            b = b
                .with_execution_providers([ort::ep::CPU::default().with_arena_allocator(false).build()])
                .map_err(|e| ctx(e.into()))?;
        }
        if threads > 0 {
            b = b.with_intra_threads(threads).map_err(|e| ctx(e.into()))?;
            b = b.with_inter_threads(1).map_err(|e| ctx(e.into()))?;
        }
        if std::env::var("TAMRT_ORT_SPIN").as_deref() != Ok("1") {
            // The tracker runs sessions one after another, between its own threads (frame
            // decoding, the fused cross-attention): a session's pool threads spinning after
            // its run took the cores from what came next. Real-size sam2.1_hiera_t clip,
            // 2 threads: the fused cross-attention ~25% slower with spinning pieces; the
            // whole propagation 6.15 and 6.05 s/frame spinning against 5.75 and 5.98 not
            // (alternating runs). `TAMRT_ORT_SPIN=1` lets them spin (ONNX Runtime's default).
            b = b.with_intra_op_spinning(false).map_err(|e| ctx(e.into()))?;
        }
        let session = match bytes {
            Some(bytes) => b.commit_from_memory(bytes).map_err(ctx)?,
            None => b.commit_from_file(path).map_err(ctx)?,
        };
        let mut run_options = RunOptions::new().map_err(ctx)?;
        if mode == ArenaMode::Shrink {
            run_options.set("memory.enable_memory_arena_shrinkage", "cpu:0").map_err(ctx)?;
        }
        Ok(OrtSession { session, path: path.to_path_buf(), run_options, mode })
    }

    pub fn output_names(&self) -> Vec<String> {
        self.session.outputs().iter().map(|o| o.name().to_string()).collect()
    }
}

impl ComponentSession for OrtSession {
    fn run(&mut self, inputs: &[(&str, &TensorF32)]) -> Result<Vec<(String, TensorF32)>> {
        let file = self.path.display().to_string();
        let expected = self.input_names();
        for name in &expected {
            if !inputs.iter().any(|(n, _)| n == name) {
                return Err(backend_err(format!("{file}: input '{name}' not given")));
            }
        }
        let mut values = Vec::with_capacity(inputs.len());
        for (name, t) in inputs {
            if !expected.iter().any(|e| e == name) {
                return Err(backend_err(format!("{file}: graph has no input '{name}'; inputs are {expected:?}")));
            }
            let shape: Vec<i64> = t.shape.iter().map(|d| *d as i64).collect();
            // a view of the caller's buffer: no copy of the (often tens of MB) inputs
            let v = TensorRef::from_array_view((shape, t.data.as_slice()))
                .map_err(|e| backend_err(format!("{file}: input '{name}': {e}")))?;
            values.push((name.to_string(), v));
        }
        let outputs = self
            .session
            .run_with_options(values, &self.run_options)
            .map_err(|e| backend_err(format!("{file}: run failed: {e}")))?;
        let mut res = Vec::new();
        for (name, value) in outputs.iter() {
            let (shape, data) =
                value.try_extract_tensor::<f32>().map_err(|e| backend_err(format!("{file}: output '{name}': {e}")))?;
            res.push((name.to_string(), TensorF32::new(shape.iter().map(|d| *d as usize).collect(), data.to_vec())));
        }
        drop(outputs);
        if self.mode != ArenaMode::Keep {
            trim_heap();
        }
        Ok(res)
    }

    fn backend_name(&self) -> &str {
        "ort-cpu"
    }

    fn input_names(&self) -> Vec<String> {
        self.session.inputs().iter().map(|o| o.name().to_string()).collect()
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
extern "C" {
    /// glibc: release free memory at the top of the heap and (since 2.8) free pages
    /// inside it.
    fn malloc_trim(pad: usize) -> std::ffi::c_int;
    /// glibc: set an allocator parameter.
    fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
}

/// glibc's `M_MMAP_THRESHOLD` (`malloc.h`).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const M_MMAP_THRESHOLD: std::ffi::c_int = -3;

/// Without ONNX Runtime's arena, every activation of 1 MiB or more gets its own mapping,
/// returned to the OS when freed. With glibc's default (a threshold that rises to 32 MB
/// after the first large free) the activations land in the heap, where freed blocks
/// were not reused within a run: one memory-attention call at 7 memory frames peaked at
/// 1.7 GB resident instead of 0.4 GB. Fresh mappings cost page faults on every run: on
/// the real-size tracker benchmark this mode ran ~1.6× slower than `shrink`.
fn tune_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: sets a process-wide allocator parameter; called once, before any session.
    unsafe {
        mallopt(M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// After a run (all modes but `keep`), hand free heap pages back to the OS: glibc
/// keeps freed heap memory resident, so the tracker's own per-frame buffers and, without
/// the arena, the activations would leave the process at the sum of past peaks rather
/// than at its live memory. Costs one walk of the heap per run.
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and trims the allocator's own free lists.
    unsafe {
        malloc_trim(0);
    }
}
