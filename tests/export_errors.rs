//! Bad input to `tamrt export`: each case gets a clear error naming what is wrong, no
//! panic, and no partial output file.

use std::path::{Path, PathBuf};
use std::process::Command;

use tamrt::config::ModelConfig;
use tamrt::export::{export_model, Component, WeightsFrom};
use tamrt::manifest::{Manifest, WeightOrigin};
use tamrt::ErrorKind;

fn fixtures(model: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(model)
}

fn tempdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tamrt-export-errors-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Files in `dir` (names), sorted.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|r| r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn unknown_model_name_is_named_and_nothing_is_written() {
    let out = tempdir("unknown").join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_tamrt"))
        .args(["export", "--model", "sam9_hiera_q", "--random-weights", "0", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("unknown model 'sam9_hiera_q'") && err.contains("sam2.1_hiera_l"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(!out.exists(), "output dir created for an unknown model");
}

#[test]
fn checkpoint_of_a_bigger_model_reports_tensor_and_shapes() {
    // The tiny fixture checkpoint exported as the real sam2.1_hiera_t: the first tensor
    // looked up has another shape.
    let out = tempdir("shape");
    std::fs::write(out.join("keep.txt"), b"user file").unwrap();
    let cfg = ModelConfig::builtin("sam2.1_hiera_t").unwrap();
    let e = export_model(
        &cfg,
        WeightsFrom::Checkpoint(fixtures("sam2.1_tiny").join("checkpoint.pt")),
        &out,
        &Component::ALL,
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::TensorShape, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("checkpoint.pt") && msg.contains("has shape [") && msg.contains("expects ["), "{msg}");
    assert!(msg.contains("image_encoder."), "names the tensor: {msg}");
    assert_eq!(listing(&out), vec!["keep.txt".to_string()], "partial output left behind");
}

#[test]
fn sam2_checkpoint_as_sam21_names_the_missing_tensor() {
    let out = tempdir("missing");
    let cfg = ModelConfig::from_json_file(&fixtures("sam2.1_tiny").join("config.json")).unwrap();
    let e =
        export_model(&cfg, WeightsFrom::Checkpoint(fixtures("sam2_tiny").join("checkpoint.pt")), &out, &Component::ALL)
            .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::MissingTensor, "{e}");
    assert!(e.to_string().contains("no_obj_embed_spatial"), "{e}");
    assert!(listing(&out).is_empty());
}

#[test]
fn sam21_checkpoint_as_sam2_names_the_unexpected_tensor() {
    let out = tempdir("unexpected");
    let cfg = ModelConfig::from_json_file(&fixtures("sam2_tiny").join("config.json")).unwrap();
    let e = export_model(
        &cfg,
        WeightsFrom::Checkpoint(fixtures("sam2.1_tiny").join("checkpoint.pt")),
        &out,
        &Component::ALL,
    )
    .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::UnexpectedTensor, "{e}");
    let msg = e.to_string();
    assert!(msg.contains("does not use") && msg.contains("first: '"), "{msg}");
    assert!(listing(&out).is_empty(), "{:?}", listing(&out));
}

#[test]
fn real_size_mismatch_says_which_model_the_checkpoint_looks_like() {
    // A config/checkpoint pair of two official sizes: random-weight checkpoints cannot be
    // made here without Python, so check the guess on a tensor listing instead.
    struct Names(Vec<(String, Vec<usize>)>);
    impl tamrt::weights::WeightSource for Names {
        fn load(&self, n: &str, _e: &[usize]) -> tamrt::Result<tamrt::weights::TensorF32> {
            Err(tamrt::Error::new(ErrorKind::MissingTensor, n))
        }
        fn contains(&self, n: &str) -> bool {
            self.0.iter().any(|(k, _)| k == n)
        }
        fn names(&self) -> Vec<String> {
            self.0.iter().map(|(k, _)| k.clone()).collect()
        }
        fn shape_of(&self, n: &str) -> Option<Vec<usize>> {
            self.0.iter().find(|(k, _)| k == n).map(|(_, s)| s.clone())
        }
        fn describe(&self) -> String {
            "listing".into()
        }
    }
    let mut v = vec![("image_encoder.trunk.patch_embed.proj.weight".to_string(), vec![144, 3, 7, 7])];
    for b in 0..48 {
        v.push((format!("image_encoder.trunk.blocks.{b}.norm1.weight"), vec![144]));
    }
    v.push(("no_obj_embed_spatial".into(), vec![1, 64]));
    assert_eq!(tamrt::export::identify_weights(&Names(v.clone())).as_deref(), Some("sam2.1_hiera_l"));
    v.pop();
    assert_eq!(tamrt::export::identify_weights(&Names(v)).as_deref(), Some("sam2_hiera_l"));
    let e = vec![("image_encoder.trunk.body.stem.0.weight".to_string(), vec![24, 3, 3, 3])];
    assert_eq!(tamrt::export::identify_weights(&Names(e)).as_deref(), Some("edgetam"));
}

#[test]
fn truncated_and_foreign_checkpoints_name_the_file() {
    let dir = tempdir("trunc");
    let full = std::fs::read(fixtures("sam2.1_tiny").join("checkpoint.pt")).unwrap();
    let cut = dir.join("cut.pt");
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    let text = dir.join("notes.pt");
    std::fs::write(&text, b"this is not a checkpoint at all\n").unwrap();
    let cfg = ModelConfig::from_json_file(&fixtures("sam2.1_tiny").join("config.json")).unwrap();
    for bad in [&cut, &text] {
        let out = dir.join("out");
        let e = export_model(&cfg, WeightsFrom::Checkpoint(bad.clone()), &out, &Component::ALL).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Checkpoint, "{e}");
        assert!(e.to_string().contains(&*bad.file_name().unwrap().to_string_lossy()), "{e}");
        assert!(listing(&out).is_empty());
    }
}

#[test]
fn unwritable_output_directory() {
    let dir = tempdir("unwritable");
    let file = dir.join("a_file");
    std::fs::write(&file, b"x").unwrap();
    let cfg = ModelConfig::from_json_file(&fixtures("sam2.1_tiny").join("config.json")).unwrap();
    let e = export_model(&cfg, WeightsFrom::Random(0), &file.join("out"), &Component::ALL).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Io, "{e}");
    assert!(e.to_string().contains("a_file"), "{e}");
}

#[test]
fn random_weights_are_marked_in_model_json() {
    let out = tempdir("random");
    let cfg = ModelConfig::from_json_file(&fixtures("sam2.1_tiny").join("config.json")).unwrap();
    export_model(&cfg, WeightsFrom::Random(7), &out, &Component::ALL).unwrap();
    let m = Manifest::read(&out).unwrap();
    match m.weights {
        WeightOrigin::RandomWeights { seed, ref note } => {
            assert_eq!(seed, 7);
            assert!(note.contains("random"));
        }
        ref other => panic!("expected random weights, got {other:?}"),
    }
    assert_eq!(listing(&out).len(), 5, "{:?}", listing(&out));
    for c in Component::ALL {
        assert!(m.graphs.contains_key(c.name()));
    }
    assert_eq!(m.tensors["maskmem_tpos_enc"].shape, vec![7, 1, 1, 16]);
}
