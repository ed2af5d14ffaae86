//! tamrt's TensorRT orchestration against a stand-in shim (`tests/fake_trt/fake_shim.c`,
//! the ABI of `src/trt/shim.h` without TensorRT or a GPU, compiled here with the system C
//! compiler): `tamrt build-engines` builds, reuses and rebuilds engines, retries the memory
//! attention at another optimization level, reports the parser's messages and
//! out-of-memory, and every failed component is reported as running on ONNX Runtime; the
//! FFI layer turns status codes and last-error strings into errors naming the file.
//!
//! What this cannot show: anything TensorRT itself does (no engine here is real).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use tamrt::trt::engine_cache::Precision;
use tamrt::trt::ffi::{Engine, Shim};
use tamrt::trt::{build_engines, BuildRequest, EngineOutcome};

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("tamrt-fake-trt-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    std::fs::create_dir_all(&p).unwrap();
    p
}

/// The fake shim, compiled once per test process.
fn fake_shim() -> &'static Path {
    static LIB: OnceLock<PathBuf> = OnceLock::new();
    LIB.get_or_init(|| {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let out = tmp("lib").join("libfake_trt.so");
        let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
        let st = Command::new(&cc)
            .args(["-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror", "-I"])
            .arg(root.join("src/trt"))
            .arg(root.join("tests/fake_trt/fake_shim.c"))
            .arg("-o")
            .arg(&out)
            .status()
            .unwrap_or_else(|e| panic!("cannot run the C compiler '{cc}': {e}"));
        assert!(st.success(), "compiling tests/fake_trt/fake_shim.c failed");
        out
    })
}

/// The reduced SAM 2.1 model exported with seeded random weights.
fn model_dir(name: &str) -> PathBuf {
    let dir = tmp(name);
    let cfg = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sam2.1_tiny/config.json");
    let out = Command::new(env!("CARGO_BIN_EXE_tamrt"))
        .args(["export", "--random-weights", "7", "--config"])
        .arg(&cfg)
        .arg("--out")
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "export failed: {}", String::from_utf8_lossy(&out.stderr));
    dir
}

fn build_log(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("fake_trt.log")).unwrap_or_default().lines().map(String::from).collect()
}

fn req() -> BuildRequest {
    BuildRequest { precision: Precision::Fp16, workspace_mb: 256, opt_level: None, ranges: Default::default() }
}

#[test]
fn builds_reuses_retries_and_reports_failures() {
    let dir = model_dir("build");
    let shim = Shim::open(fake_shim()).unwrap();
    let target = shim.target().unwrap();
    assert_eq!((target.trt_version, target.compute_capability), ((8, 6, 1), (8, 7)));
    assert_eq!(target.gpu_name, "Fake GPU");

    let first = build_engines(&shim, &target, &dir, &req()).unwrap();
    let get = |out: &[(tamrt::export::Component, EngineOutcome)], name: &str| {
        out.iter().find(|(c, _)| c.name() == name).map(|(_, o)| o.clone()).unwrap()
    };
    let engine = |name: &str| dir.join(format!("{name}.fp16.trt8.6.1.sm87.fake-gpu.engine"));
    match get(&first, "image_encoder") {
        EngineOutcome::Built { path, reason, note } => {
            assert_eq!(path, engine("image_encoder"));
            assert_eq!(reason, "no engine yet");
            // no CUDA in this build: the parity self-check against ONNX Runtime cannot run
            assert!(note.unwrap().contains("self-check could not run"));
        }
        o => panic!("image_encoder: {o:?}"),
    }
    match get(&first, "prompt_decoder") {
        EngineOutcome::Failed { reason } => {
            assert!(reason.contains("status 2") && reason.contains("UNSUPPORTED_NODE"), "{reason}");
            assert!(reason.contains("prompt_decoder.onnx"), "names the graph: {reason}");
        }
        o => panic!("prompt_decoder: {o:?}"),
    }
    match get(&first, "memory_encoder") {
        EngineOutcome::Failed { reason } => assert!(reason.contains("out of device memory"), "{reason}"),
        o => panic!("memory_encoder: {o:?}"),
    }
    assert!(matches!(get(&first, "memory_attention"), EngineOutcome::Built { .. }));
    // the memory attention failed at the default level (-1) and was retried at level 2
    let log = build_log(&dir);
    let attn: Vec<&String> = log.iter().filter(|l| l.contains("memory_attention")).collect();
    assert_eq!(attn, ["build memory_attention.onnx opt=-1 status=3", "build memory_attention.onnx opt=2 status=0"]);
    assert!(!engine("prompt_decoder").exists() && !engine("memory_encoder").exists());

    // second run: the two engines are current and not rebuilt
    let second = build_engines(&shim, &target, &dir, &req()).unwrap();
    assert_eq!(get(&second, "image_encoder"), EngineOutcome::UpToDate(engine("image_encoder")));
    assert_eq!(get(&second, "memory_attention"), EngineOutcome::UpToDate(engine("memory_attention")));
    assert_eq!(build_log(&dir).iter().filter(|l| l.contains("image_encoder")).count(), 1);

    // a truncated engine is rebuilt, never loaded
    let e = engine("image_encoder");
    let bytes = std::fs::read(&e).unwrap();
    std::fs::write(&e, &bytes[..bytes.len() / 2]).unwrap();
    match get(&build_engines(&shim, &target, &dir, &req()).unwrap(), "image_encoder") {
        EngineOutcome::Built { reason, .. } => assert!(reason.contains("truncated"), "{reason}"),
        o => panic!("image_encoder after truncation: {o:?}"),
    }
}

#[test]
fn corrupt_engines_and_missing_contexts_are_errors_naming_the_file() {
    let dir = tmp("load");
    let shim = Shim::open(fake_shim()).unwrap();
    let bad = dir.join("memory_encoder.fp16.engine");
    std::fs::write(&bad, b"not a plan").unwrap();
    let err = Engine::load(&shim, &bad).err().expect("corrupt engine must not load").to_string();
    assert!(err.contains("magicTagRead") && err.contains(&bad.display().to_string()), "{err}");
    let err = Engine::load(&shim, &dir.join("absent.engine")).err().unwrap().to_string();
    assert!(err.contains("status 5") && err.contains("absent.engine"), "{err}");

    let good = dir.join("image_encoder.fp16.engine");
    std::fs::write(&good, b"FAKEPLAN\nplan").unwrap();
    let engine = Engine::load(&shim, &good).unwrap();
    assert!(engine.io().is_empty());
    let err = engine.context().err().expect("the fake cannot execute").to_string();
    assert!(err.contains("execution context") && err.contains("nothing can execute"), "{err}");
}

#[test]
fn cli_build_engines_reports_each_component_and_the_fallbacks() {
    let dir = model_dir("cli");
    let out = Command::new(env!("CARGO_BIN_EXE_tamrt"))
        .env("TAMRT_TRT_SHIM", fake_shim())
        .args(["build-engines", "--precision", "bf16", "--model-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    // TensorRT 8.6 has no bf16: fp16 engines, with the reason
    assert!(text.contains("image_encoder      built (no engine yet)"), "{text}");
    assert!(text.contains(".fp16.trt8.6.1.sm87.fake-gpu.engine"), "{text}");
    assert!(text.contains("bf16 needs TensorRT >= 9"), "{text}");
    assert!(text.contains("prompt_decoder     FAILED, will run on ONNX Runtime") && text.contains("UNSUPPORTED_NODE"));
    assert!(text.contains("memory_encoder     FAILED, will run on ONNX Runtime"), "{text}");
    assert!(text.contains("2 component(s) fall back to ONNX Runtime"), "{text}");

    let info = Command::new(env!("CARGO_BIN_EXE_tamrt"))
        .env("TAMRT_TRT_SHIM", fake_shim())
        .args(["info", "--model-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&info.stdout);
    assert!(text.contains("TensorRT:      8.6.1 loaded"), "{text}");
    assert!(text.contains("image_encoder.fp16.trt8.6.1.sm87.fake-gpu.engine (fp16): current"), "{text}");
    assert!(text.contains("memory_attention.fp16.trt8.6.1.sm87.fake-gpu.engine (fp16): current"), "{text}");
}
