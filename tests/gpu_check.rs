//! `tamrt gpu-check` from the command line: without CUDA (feature or driver) it fails with
//! a message that says what is missing; with a GPU it must pass.

use std::process::Command;

fn gpu_check(args: &[&str]) -> (bool, String) {
    let o = Command::new(env!("CARGO_BIN_EXE_tamrt")).arg("gpu-check").args(args).output().expect("run tamrt");
    let text = format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    (o.status.success(), text)
}

#[test]
fn bad_size_is_refused_before_any_cuda_call() {
    let (ok, text) = gpu_check(&["--size", "100", "--runs", "1"]);
    assert!(!ok, "{text}");
    assert!(text.contains("--size must be a positive multiple of 16"), "{text}");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn without_the_cuda_feature_it_fails_clearly() {
    let (ok, text) = gpu_check(&["--runs", "1"]);
    assert!(!ok, "{text}");
    assert!(text.contains("this build has no CUDA support"), "{text}");
    assert!(text.contains("--features cuda"), "{text}");
    assert!(!text.contains("panicked"), "{text}");
}

#[cfg(feature = "cuda")]
#[test]
fn with_the_cuda_feature_it_fails_clearly_without_a_driver_or_passes_with_one() {
    let json = std::env::temp_dir().join(format!("tamrt-gpu-check-{}.json", std::process::id()));
    let (ok, text) = gpu_check(&["--runs", "2", "--json", json.to_str().unwrap()]);
    assert!(!text.contains("panicked"), "{text}");
    if tamrt::info::cuda_driver_present() {
        // a GPU machine: every kernel must equal its CPU reference
        assert!(ok, "{text}");
        assert!(text.contains("all checks passed"), "{text}");
        let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
        assert_eq!(report["items"].as_array().map(|a| a.len()), Some(9), "{report}");
        let _ = std::fs::remove_file(&json);
    } else {
        assert!(!ok, "{text}");
        assert!(text.contains("no CUDA driver"), "{text}");
        assert!(!json.exists());
    }
}
