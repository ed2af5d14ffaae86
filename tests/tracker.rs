//! The tracker equals the official `SAM2VideoPredictor` (sam2==1.1.0): the clip, prompts
//! and reference logits in `tests/fixtures/tracker/` come from
//! `tests/fixtures/gen/gen_tracker.py` (see `tests/fixtures/gen/README.md`). The model
//! is `tests/fixtures/sam2.1_tiny/checkpoint.pt` with the few tensors of
//! `weight_overrides.safetensors` replaced, exported by tamrt and run on ONNX Runtime.
//!
//! Bounds, per object per frame: mask IoU ≥ 0.99 and max |logit − ref| ≤ 1e-3 · max|ref|
//! wherever |ref| > 1. Also: the host-side resampling ports against PIL / torch, the
//! CLI's output layout, and every bad-input error.
//!
//! `TAMRT_TRACKER_FIXTURE=DIR cargo test --release --test tracker -- --ignored` runs the
//! same comparison on a real-size fixture written by `gen_tracker.py --model
//! sam2.1_hiera_t --out DIR`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use tamrt::backend::ort::OrtBackend;
use tamrt::backend::{BankKey, BankStore, ComponentSession, FrameOps, GatherObject, Resident, Value};
use tamrt::tracker::mem_inputs::{assemble, MemLayout, ObjectSelection};
use tamrt::tracker::memory_bank::MaskMem;
use tamrt::tracker::ops::fill_holes;
use tamrt::tracker::resize::{bilinear, bilinear_aa, pil_resize_rgb8};
use tamrt::tracker::{run_track_job, FrameDir, FrameSource, TrackJob, TrackerModels, TrackerOptions};
use tamrt::weights::TensorF32;

mod common;
use common::{check_fixture_scenario, export_fixture_model, f32_tensors, sha256_hex, IOU_MIN, LOGIT_REL};
/// Largest per-channel difference allowed between tamrt's and PIL's JPEG decoding.
const JPEG_MAX_DIFF: u32 = 4;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tracker")
}

fn tmp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("tamrt-tracker-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&p);
    p
}

fn meta(fx: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fx.join("meta.json")).unwrap()).unwrap()
}

/// The fixture's model, exported once per test process: base checkpoint + overrides
/// (reduced model) or the fixture's own checkpoint (real size).
fn exported(fx: &Path) -> PathBuf {
    static DIRS: OnceLock<Mutex<BTreeMap<PathBuf, PathBuf>>> = OnceLock::new();
    let mut dirs = DIRS.get_or_init(Default::default).lock().unwrap();
    if let Some(d) = dirs.get(fx) {
        return d.clone();
    }
    let out = tmp(&format!("model{}", dirs.len()));
    export_fixture_model(fx, &meta(fx), &out, "tests/fixtures/gen/gen_tracker.py --out tests/fixtures/tracker");
    dirs.insert(fx.to_path_buf(), out.clone());
    out
}

fn load_models(fx: &Path) -> TrackerModels {
    TrackerModels::load(&OrtBackend { threads: 2 }, &exported(fx)).unwrap()
}

/// Track a scenario with the library and compare with the reference logits.
fn check_scenario(fx: &Path, name: &str, opts: TrackerOptions) -> (f64, f32) {
    check_scenario_with(fx, name, opts, load_models(fx))
}

fn check_scenario_with(fx: &Path, name: &str, opts: TrackerOptions, models: TrackerModels) -> (f64, f32) {
    let video = FrameDir::open(&fx.join("frames")).unwrap();
    let c = check_fixture_scenario(fx, &meta(fx), &video, name, models, opts);
    (c.worst_iou, c.worst_rel)
}

#[test]
fn tracks_like_official_forward() {
    check_scenario(&fixture(), "forward", TrackerOptions::default());
}

#[test]
fn tracks_like_official_reverse() {
    check_scenario(&fixture(), "reverse", TrackerOptions::default());
}

#[test]
fn without_pinned_prompt_features_the_result_is_the_same() {
    // budget 0: upstream's one-frame cache; prompted frames are encoded again and the
    // memory encoding before tracking reads their kept `vision_feat`
    let opts = TrackerOptions { prompt_feature_bytes: 0, ..Default::default() };
    check_scenario(&fixture(), "forward", opts.clone());
    check_scenario(&fixture(), "reverse", opts);
}

#[test]
fn synchronous_frame_loading_gives_the_same_result() {
    let opts = TrackerOptions { max_frames_in_mem: 1, ..Default::default() };
    check_scenario(&fixture(), "forward", opts);
}

/// Real-size check (not in CI): `gen_tracker.py --model sam2.1_hiera_t --out DIR`.
#[test]
#[ignore]
fn tracks_like_official_real_size() {
    let dir = PathBuf::from(std::env::var("TAMRT_TRACKER_FIXTURE").expect("set TAMRT_TRACKER_FIXTURE=DIR"));
    let (i1, e1) = check_scenario(&dir, "forward", TrackerOptions::default());
    let (i2, e2) = check_scenario(&dir, "reverse", TrackerOptions::default());
    println!("real size: worst IoU {:.5}, worst logit error {:.2e}", i1.min(i2), e1.max(e2));
}

#[test]
fn pil_resize_and_torch_interpolate_ports_are_exact() {
    let t = f32_tensors(&fixture().join("ops.safetensors"));
    let mut k = 0;
    while let Some((si, vi)) = t.get(&format!("pil{k}_in")) {
        let (so, vo) = &t[&format!("pil{k}_out")];
        let src: Vec<u8> = vi.iter().map(|&v| v as u8).collect();
        let got = pil_resize_rgb8(&src, si[1], si[0], so[1], so[0]);
        let want: Vec<u8> = vo.iter().map(|&v| v as u8).collect();
        let diff = got.iter().zip(&want).filter(|(a, b)| a != b).count();
        assert_eq!(diff, 0, "PIL case {k} ({}x{} -> {}x{}): {diff} bytes differ", si[1], si[0], so[1], so[0]);
        k += 1;
    }
    assert!(k >= 4);
    let mut k = 0;
    while let Some((si, x)) = t.get(&format!("interp{k}_in")) {
        let (so, want) = &t[&format!("interp{k}_out")];
        let aa = t[&format!("interp{k}_aa")].1[0] > 0.5;
        let got = if aa { bilinear_aa(x, si[0], si[1], so[0], so[1]) } else { bilinear(x, si[0], si[1], so[0], so[1]) };
        let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
        let err = got.iter().zip(want).fold(0f32, |a, (g, w)| a.max((g - w).abs()));
        assert!(err <= 2e-6 * scale.max(1.0), "interp case {k} (aa {aa}): max error {err:e}");
        k += 1;
    }
    assert!(k >= 5);
    let (s, holes_in) = &t["holes_in"];
    let mut m = holes_in.clone();
    let n = fill_holes(&mut m, s[0], s[1], 8, &mut Vec::new());
    assert!(n > 0, "the hole case should fill something");
    assert_eq!(&m, &t["holes_out"].1, "hole filling differs from the CUDA-equivalent reference");
}

/// JPEG decoding is the `image` crate's (zune-jpeg), not libjpeg-turbo as in PIL: the
/// decoded pixels may differ by a few levels (IDCT / chroma upsampling rounding).
#[test]
fn jpeg_decoding_close_to_pil() {
    let fx = fixture();
    let t = f32_tensors(&fx.join("ops.safetensors"));
    let (shape, want) = &t["jpeg_decoded"];
    let got = tamrt::tracker::frames::decode_rgb8(&fx.join("jpeg_q90.jpg")).unwrap();
    assert_eq!((got.height, got.width), (shape[0], shape[1]));
    let diffs: Vec<u32> = got.data.iter().zip(want).map(|(a, b)| (*a as f32 - b).abs() as u32).collect();
    let max = diffs.iter().copied().max().unwrap();
    let differ = diffs.iter().filter(|d| **d > 0).count();
    println!("JPEG vs PIL: max |diff| {max}, {differ} of {} values differ", diffs.len());
    assert!(max <= JPEG_MAX_DIFF, "JPEG decoding differs from PIL by {max} levels");
}

#[test]
fn frames_resize_bit_exact_like_pil() {
    let fx = fixture();
    let m = meta(&fx);
    let s = m["image_size"].as_u64().unwrap() as usize;
    let video = FrameDir::open(&fx.join("frames")).unwrap();
    let want = m["frame_resize_sha256"].as_object().unwrap();
    assert_eq!(want.len(), video.len());
    for i in 0..video.len() {
        let f = video.load(i).unwrap();
        let r = pil_resize_rgb8(&f.data, f.width, f.height, s, s);
        let file = video.path(i).file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(sha256_hex(&r), want[&file].as_str().unwrap(), "frame {file} resized to {s}x{s} differs from PIL");
    }
}

fn job(fx: &Path, frames: &Path, prompts: &Path, out: &Path) -> TrackJob {
    TrackJob {
        model_dir: exported(fx),
        frames: frames.to_path_buf(),
        prompts: prompts.to_path_buf(),
        out: out.to_path_buf(),
        reverse: false,
        start_frame: None,
        save_logits: false,
        options: TrackerOptions::default(),
    }
}

/// `tamrt track` on the fixture's clip and forward prompts, writing to `out`.
fn track_cli(fx: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_tamrt"))
        .args(["track", "--model-dir"])
        .arg(exported(fx))
        .arg("--frames")
        .arg(fx.join("frames"))
        .arg("--prompts")
        .arg(fx.join("prompts_forward.json"))
        .arg("--out")
        .arg(out)
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn cli_writes_sav_layout_and_npy_logits() {
    let fx = fixture();
    let out = tmp("cli");
    let st = track_cli(&fx, &out, &["--save-logits", "--threads", "2"]);
    assert!(st.status.success(), "tamrt track failed: {}", String::from_utf8_lossy(&st.stderr));
    let text = String::from_utf8_lossy(&st.stdout);
    assert!(text.contains("memory bank on host, frame pre/post-processing on host"), "{text}");
    let refs = f32_tensors(&fx.join("ref_forward.safetensors"));
    for (key, (shape, r)) in &refs {
        let (obj, frame) = key.split_once('/').unwrap();
        let png = out.join(obj).join(format!("{frame}.png"));
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&png).unwrap()));
        let mut rd = dec.read_info().unwrap();
        assert_eq!(rd.info().color_type, png::ColorType::Indexed, "{}", png.display());
        let mut buf = vec![0u8; rd.output_buffer_size().unwrap()];
        let info = rd.next_frame(&mut buf).unwrap();
        assert_eq!((info.height as usize, info.width as usize), (shape[0], shape[1]));
        assert!(buf.iter().all(|&v| v <= 1), "{}: values must be 0/1", png.display());
        let agree = buf.iter().zip(r).filter(|(m, v)| (**m == 1) == (**v > 0.0)).count();
        assert!(agree as f64 >= 0.99 * r.len() as f64, "{}: mask differs from the reference", png.display());
        // the .npy: v1.0 header, float32 [H, W]
        let npy = std::fs::read(out.join("logits").join(obj).join(format!("{frame}.npy"))).unwrap();
        assert_eq!(&npy[..8], b"\x93NUMPY\x01\x00");
        let hl = u16::from_le_bytes([npy[8], npy[9]]) as usize;
        let header = std::str::from_utf8(&npy[10..10 + hl]).unwrap();
        assert!(header.contains(&format!("'shape': ({}, {})", shape[0], shape[1])), "{header}");
        assert!(header.contains("'descr': '<f4'"));
        let vals: Vec<f32> =
            npy[10 + hl..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
        assert_eq!(vals.len(), r.len());
        for (m, v) in buf.iter().zip(&vals) {
            assert_eq!(*m == 1, *v > 0.0, "PNG and logits disagree in {obj}/{frame}");
        }
    }
    let stdout = String::from_utf8_lossy(&st.stdout);
    assert!(stdout.contains("ms/frame"), "{stdout}");
}

#[test]
fn cli_backend_and_precision_flags() {
    let fx = fixture();
    let run = |extra: &[&str]| {
        let out = tmp("flags");
        let o = track_cli(&fx, &out, extra);
        assert!(!out.exists(), "no output may be written on a flag error");
        (o.status.success(), String::from_utf8_lossy(&o.stderr).into_owned())
    };
    let (ok, err) = run(&["--backend", "trt"]);
    assert!(!ok && err.contains("TensorRT backend not available in this build"), "{err}");
    let (ok, err) = run(&["--precision", "fp16"]);
    assert!(!ok && err.contains("fp16") && err.contains("TensorRT"), "{err}");
}

/// Run a job expected to fail before writing anything; returns the message.
fn fails_before_output(j: &TrackJob) -> String {
    let e = run_track_job(j, &OrtBackend { threads: 2 }).expect_err("the job should fail");
    assert!(!j.out.exists(), "output written despite the error: {e}");
    e.to_string()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            std::fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
        }
    }
}

#[test]
fn bad_inputs_fail_before_any_output() {
    let fx = fixture();
    let frames = fx.join("frames");
    let prompts = fx.join("prompts_forward.json");
    let out = tmp("bad-out");
    let work = tmp("bad");
    std::fs::create_dir_all(&work).unwrap();

    // frames folder missing / empty
    let e = fails_before_output(&job(&fx, &work.join("nope"), &prompts, &out));
    assert!(e.contains("nope") && e.contains("cannot be read"), "{e}");
    let empty = work.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let e = fails_before_output(&job(&fx, &empty, &prompts, &out));
    assert!(e.contains("has no frames"), "{e}");

    // frames of different sizes
    let mixed = work.join("mixed");
    copy_dir(&frames, &mixed);
    image::RgbImage::new(40, 30).save(mixed.join("00003.png")).unwrap();
    let e = fails_before_output(&job(&fx, &mixed, &prompts, &out));
    assert!(e.contains("differ in size") && e.contains("00003.png") && e.contains("40x30"), "{e}");

    // unreadable image
    let broken = work.join("broken");
    copy_dir(&frames, &broken);
    std::fs::write(broken.join("00002.png"), b"not an image").unwrap();
    let e = fails_before_output(&job(&fx, &broken, &prompts, &out));
    assert!(e.contains("00002.png") && e.contains("not a readable image"), "{e}");

    // prompt problems
    let bad_prompt = |name: &str, json: &str| {
        let p = work.join(format!("{name}.json"));
        std::fs::write(&p, json).unwrap();
        std::fs::copy(fx.join("mask_f0_obj3.png"), work.join("mask_f0_obj3.png")).unwrap();
        fails_before_output(&job(&fx, &frames, &p, &out))
    };
    let e = bad_prompt("beyond", r#"{"prompts": [{"frame": 8, "obj_id": 1, "points": [[10, 10]], "labels": [1]}]}"#);
    assert!(e.contains("frame 8 is beyond the video (8 frames"), "{e}");
    let e = bad_prompt("box", r#"{"prompts": [{"frame": 0, "obj_id": 2, "box": [30, 10, 20, 40]}]}"#);
    assert!(e.contains("object 2") && e.contains("x1 < x0"), "{e}");
    let e =
        bad_prompt("labels", r#"{"prompts": [{"frame": 0, "obj_id": 1, "points": [[1, 2], [3, 4]], "labels": [1]}]}"#);
    assert!(e.contains("2 points but 1 labels"), "{e}");
    let small = work.join("small.png");
    image::GrayImage::new(8, 6).save(&small).unwrap();
    let e = bad_prompt("masksize", r#"{"prompts": [{"frame": 0, "obj_id": 3, "mask": "small.png"}]}"#);
    assert!(e.contains("small.png") && e.contains("8x6") && e.contains("80x60"), "{e}");

    // model dir missing a graph / another format version
    let model = work.join("model");
    copy_dir(&exported(&fx), &model);
    std::fs::remove_file(model.join("memory_attention.onnx")).unwrap();
    let mut j = job(&fx, &frames, &prompts, &out);
    j.model_dir = model.clone();
    let e = fails_before_output(&j);
    assert!(e.contains("memory_attention.onnx"), "{e}");
    copy_dir(&exported(&fx), &model);
    let text = std::fs::read_to_string(model.join("model.json")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["format_version"] = serde_json::json!(999);
    std::fs::write(model.join("model.json"), v.to_string()).unwrap();
    let e = fails_before_output(&j);
    assert!(e.contains("format version 999"), "{e}");
}

#[test]
fn error_on_a_late_frame_keeps_earlier_masks() {
    let fx = fixture();
    let work = tmp("late");
    let frames = work.join("frames");
    copy_dir(&fx.join("frames"), &frames);
    // keep the PNG header (size probe passes) but cut the image data
    // frame 6 is no prompt frame, so the prompts succeed and tracking stops there
    let f6 = frames.join("00006.png");
    let bytes = std::fs::read(&f6).unwrap();
    std::fs::write(&f6, &bytes[..200]).unwrap();
    let out = work.join("out");
    let e = run_track_job(&job(&fx, &frames, &fx.join("prompts_forward.json"), &out), &OrtBackend { threads: 2 })
        .expect_err("frame 6 is broken")
        .to_string();
    assert!(e.contains("stopped at frame 6") && e.contains("00006"), "{e}");
    for obj in ["001", "002", "003", "004"] {
        for f in 0..6 {
            assert!(out.join(obj).join(format!("{f:05}.png")).is_file(), "{obj}/{f:05}.png missing");
        }
        assert!(!out.join(obj).join("00006.png").exists());
    }
    let leftovers: Vec<_> = std::fs::read_dir(out.join("001"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

/// An accelerator whose engines fail to load for some components (as a TensorRT engine
/// for another GPU would) and that runs the others (here through ONNX Runtime).
struct PartlyBrokenAccel {
    broken: Vec<tamrt::export::Component>,
}

impl tamrt::backend::Backend for PartlyBrokenAccel {
    fn name(&self) -> &str {
        "fake-accel"
    }
    fn load(
        &self,
        dir: &Path,
        c: tamrt::export::Component,
    ) -> tamrt::Result<Box<dyn tamrt::backend::ComponentSession>> {
        if self.broken.contains(&c) {
            return Err(tamrt::Error::new(tamrt::ErrorKind::Backend, format!("engine for {} is corrupt", c.name())));
        }
        tamrt::backend::Backend::load(&OrtBackend { threads: 2 }, dir, c)
    }
}

#[test]
fn failed_engines_fall_back_to_ort_and_still_track_like_official() {
    use tamrt::backend::select::{BackendPref, FallbackBackend};
    use tamrt::export::Component;
    let fx = fixture();
    let backend = FallbackBackend::new(
        BackendPref::Auto,
        Some(Box::new(PartlyBrokenAccel { broken: vec![Component::PromptDecoder, Component::MemoryAttention] })),
        None,
        Box::new(OrtBackend { threads: 2 }),
    );
    let models = TrackerModels::load(&backend, &exported(&fx)).unwrap();
    let choices = backend.choices();
    let by = |c: Component| choices.iter().find(|x| x.component == c).unwrap().clone();
    assert_eq!(by(Component::ImageEncoder).backend, "fake-accel");
    assert_eq!(by(Component::PromptDecoder).backend, "ort-cpu");
    assert!(by(Component::PromptDecoder).reason.contains("corrupt"), "{:?}", by(Component::PromptDecoder));
    assert_eq!(by(Component::MemoryAttention).backend, "ort-cpu");
    let (iou, rel) = check_scenario_with(&fx, "forward", TrackerOptions::default(), models);
    assert!(iou >= IOU_MIN && rel <= LOGIT_REL);
}

/// What the tracker handed to and took from a backend that keeps outputs resident.
#[derive(Default, Debug)]
struct ResidencyLog {
    /// output name → copies back to the host
    downloads: BTreeMap<String, usize>,
    /// (component input) → (given resident, given on the host)
    inputs: BTreeMap<String, (usize, usize)>,
    /// memories the store received resident / on the host, and released
    stored: (usize, usize),
    released: usize,
    gathers: usize,
    /// frame ops calls: preprocess, upsample, postprocess (without, with logits), fill holes
    frame_ops: [usize; 5],
    /// output planes given to the frame ops resident / on the host
    output_planes: (usize, usize),
}

type Log = std::sync::Arc<Mutex<ResidencyLog>>;

/// A tensor "kept on the device" by [`KeepingSession`]: host data behind the
/// [`Resident`] interface, counting every copy to the host.
#[derive(Debug)]
struct Kept {
    t: TensorF32,
    name: String,
    log: Log,
}

impl Resident for Kept {
    fn shape(&self) -> &[usize] {
        &self.t.shape
    }
    fn to_host(&self) -> tamrt::Result<TensorF32> {
        *self.log.lock().unwrap().downloads.entry(self.name.clone()).or_default() += 1;
        Ok(self.t.clone())
    }
    fn concat(&self, rest: &[&dyn Resident]) -> tamrt::Result<std::sync::Arc<dyn Resident>> {
        let mut t = self.t.clone();
        for r in rest {
            let k = r.as_any().downcast_ref::<Kept>().expect("only Kept values here");
            t.shape[0] += k.t.shape[0];
            t.data.extend_from_slice(&k.t.data);
        }
        Ok(std::sync::Arc::new(Kept { t, name: self.name.clone(), log: self.log.clone() }))
    }
    fn rows(&self, start: usize, n: usize) -> tamrt::Result<std::sync::Arc<dyn Resident>> {
        let t = Value::Host(self.t.clone()).rows(start, n)?.to_host()?.into_owned();
        Ok(std::sync::Arc::new(Kept { t, name: self.name.clone(), log: self.log.clone() }))
    }
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }
}

fn kept(t: TensorF32, name: &str, log: &Log) -> Value {
    Value::Resident(std::sync::Arc::new(Kept { t, name: name.into(), log: log.clone() }))
}

/// The host data of a value without counting a copy (the backend's own view).
fn own(v: &Value) -> &TensorF32 {
    match v {
        Value::Resident(r) => &r.as_any().downcast_ref::<Kept>().expect("a Kept value").t,
        Value::Host(t) => t,
    }
}

/// ONNX Runtime behind a session that keeps the outputs it is asked to keep as [`Kept`]
/// values and takes its own values back without a copy, as the TensorRT session does
/// with device buffers; with `store`, the memory attention offers a [`KeptBank`] as the
/// TensorRT one offers its device bank.
struct KeepingSession {
    inner: Box<dyn ComponentSession>,
    component: &'static str,
    store: bool,
    ops: bool,
    log: Log,
}

impl ComponentSession for KeepingSession {
    fn run(&mut self, inputs: &[(&str, &TensorF32)]) -> tamrt::Result<Vec<(String, TensorF32)>> {
        self.inner.run(inputs)
    }
    fn backend_name(&self) -> &str {
        "keeping"
    }
    fn input_names(&self) -> Vec<String> {
        self.inner.input_names()
    }
    fn run_values(&mut self, inputs: &[(&str, &Value)], keep: &[&str]) -> tamrt::Result<Vec<(String, Value)>> {
        let mut refs = Vec::new();
        for (name, v) in inputs {
            let mut log = self.log.lock().unwrap();
            let e = log.inputs.entry(format!("{} {name}", self.component)).or_default();
            match v {
                Value::Resident(_) => e.0 += 1,
                Value::Host(_) => e.1 += 1,
            }
            refs.push((*name, own(v)));
        }
        let out = self.inner.run(&refs)?;
        Ok(out
            .into_iter()
            .map(|(n, t)| {
                let v = if keep.contains(&n.as_str()) { kept(t, &n, &self.log) } else { Value::Host(t) };
                (n, v)
            })
            .collect())
    }
    fn bank_store(
        &self,
        layout: &MemLayout,
        maskmem_pos: &[f32],
        tpos_enc: &[f32],
    ) -> Option<tamrt::Result<Box<dyn BankStore>>> {
        (self.store && self.component == "memory_attention").then(|| {
            Ok(Box::new(KeptBank {
                layout: *layout,
                maskmem_pos: maskmem_pos.to_vec(),
                tpos_enc: tpos_enc.to_vec(),
                mems: Default::default(),
                ptrs: Default::default(),
                log: self.log.clone(),
            }) as Box<dyn BankStore>)
        })
    }
    fn frame_ops(&self, size: usize, mean: [f32; 3], std: [f32; 3]) -> Option<tamrt::Result<Box<dyn FrameOps>>> {
        (self.ops && self.component == "image_encoder")
            .then(|| Ok(Box::new(KeptFrameOps { size, mean, std, log: self.log.clone() }) as Box<dyn FrameOps>))
    }
}

/// The frame ops "on the device" of [`KeepingSession`]: the library's host functions,
/// results as [`Kept`] values, calls counted.
struct KeptFrameOps {
    size: usize,
    mean: [f32; 3],
    std: [f32; 3],
    log: Log,
}

impl FrameOps for KeptFrameOps {
    fn name(&self) -> &str {
        "kept"
    }
    fn preprocess(&mut self, rgb8: &[u8], w: usize, h: usize) -> tamrt::Result<Value> {
        self.log.lock().unwrap().frame_ops[0] += 1;
        let frame = tamrt::tracker::RgbFrame { width: w, height: h, data: rgb8.to_vec() };
        let x = tamrt::tracker::frames::preprocess(&frame, self.size, self.mean, self.std);
        Ok(kept(TensorF32::new(vec![1, 3, self.size, self.size], x), "image", &self.log))
    }
    fn upsample(&mut self, low: &Value, oh: usize, ow: usize) -> tamrt::Result<Value> {
        self.log.lock().unwrap().frame_ops[1] += 1;
        let t = own(low);
        let (b, h, w) = (t.shape[0], t.shape[2], t.shape[3]);
        let high: Vec<f32> = t.data.chunks_exact(h * w).flat_map(|p| bilinear(p, h, w, oh, ow)).collect();
        Ok(kept(TensorF32::new(vec![b, 1, oh, ow], high), "mask_high_res", &self.log))
    }
    fn fill_holes(&mut self, low: &Value, max_area: usize) -> tamrt::Result<Value> {
        self.log.lock().unwrap().frame_ops[4] += 1;
        let mut t = own(low).clone();
        let (h, w) = (t.shape[2], t.shape[3]);
        let mut scratch = Vec::new();
        for plane in t.data.chunks_mut(h * w) {
            fill_holes(plane, h, w, max_area, &mut scratch);
        }
        Ok(kept(t, "filled", &self.log))
    }
    fn postprocess(
        &mut self,
        lows: &[Value],
        (oh, ow): (usize, usize),
        logits: bool,
    ) -> tamrt::Result<tamrt::backend::Postprocessed> {
        let mut log = self.log.lock().unwrap();
        log.frame_ops[2 + usize::from(logits)] += 1;
        log.output_planes.0 += lows.iter().filter(|v| matches!(v, Value::Resident(_))).count();
        log.output_planes.1 += lows.iter().filter(|v| matches!(v, Value::Host(_))).count();
        let (h, w) = (lows[0].shape()[2], lows[0].shape()[3]);
        let low: Vec<f32> = lows.iter().flat_map(|v| own(v).data.clone()).collect();
        let up: Vec<f32> = low.chunks_exact(h * w).flat_map(|p| bilinear(p, h, w, oh, ow)).collect();
        let masks = up.iter().map(|&v| u8::from(v > 0.0)).collect();
        Ok((masks, logits.then_some(up)))
    }
}

/// The memory bank "on the device" of [`KeepingSession`]: bf16 memories by key, the
/// inputs gathered with the library's host assembly and returned as [`Kept`] values.
struct KeptBank {
    layout: MemLayout,
    maskmem_pos: Vec<f32>,
    tpos_enc: Vec<f32>,
    mems: std::collections::HashMap<BankKey, MaskMem>,
    ptrs: std::collections::HashMap<BankKey, Vec<f32>>,
    log: Log,
}

impl BankStore for KeptBank {
    fn name(&self) -> &str {
        "kept"
    }
    fn store(&mut self, key: BankKey, maskmem: Option<(&Value, usize)>, obj_ptr: &[f32]) -> tamrt::Result<()> {
        if let Some((v, row)) = maskmem {
            let mut log = self.log.lock().unwrap();
            match v {
                Value::Resident(_) => log.stored.0 += 1,
                Value::Host(_) => log.stored.1 += 1,
            }
            let per = self.layout.per_frame();
            self.mems.insert(key, MaskMem::from_f32(&own(v).data[row * per..(row + 1) * per]));
        }
        self.ptrs.insert(key, obj_ptr.to_vec());
        Ok(())
    }
    fn retain(&mut self, keep: &mut dyn FnMut(&BankKey) -> (bool, bool)) {
        let before = self.mems.len();
        self.mems.retain(|k, _| keep(k).0);
        self.ptrs.retain(|k, _| keep(k).1);
        self.log.lock().unwrap().released += before - self.mems.len();
    }
    fn gather(&mut self, objs: &[GatherObject], pos_rows: &[f32]) -> tamrt::Result<[Value; 4]> {
        self.log.lock().unwrap().gathers += 1;
        let m = self.layout.m;
        let sels: Vec<ObjectSelection> = objs
            .iter()
            .map(|o| ObjectSelection {
                mems: o.mems.iter().map(|(k, t)| (&self.mems[k].0[..], *t)).collect(),
                ptrs: o.ptrs.iter().map(|(k, r)| (&self.ptrs[k][..], &pos_rows[r * m..(r + 1) * m])).collect(),
            })
            .collect();
        let x = assemble(&self.layout, &self.maskmem_pos, &self.tpos_enc, &sels);
        let b = objs.len();
        let t = |v: Vec<f32>, name| kept(TensorF32::new(vec![b, v.len() / b / m, m], v), name, &self.log);
        Ok([t(x.memory, "memory"), t(x.memory_pos, "memory_pos"), t(x.ptrs, "obj_ptrs"), t(x.ptrs_pos, "obj_ptrs_pos")])
    }
    fn bytes(&self) -> usize {
        self.mems.values().map(|v| v.0.len() * 2).sum::<usize>()
            + self.ptrs.values().map(|v| v.len() * 4).sum::<usize>()
    }
}

struct KeepingBackend {
    store: bool,
    ops: bool,
    log: Log,
}

impl tamrt::backend::Backend for KeepingBackend {
    fn name(&self) -> &str {
        "keeping"
    }
    fn load(&self, dir: &Path, c: tamrt::export::Component) -> tamrt::Result<Box<dyn ComponentSession>> {
        let inner = tamrt::backend::Backend::load(&OrtBackend { threads: 2 }, dir, c)?;
        let (store, ops, log) = (self.store, self.ops, self.log.clone());
        Ok(Box::new(KeepingSession { inner, component: c.name(), store, ops, log }))
    }
}

/// Track `scenario` on a [`KeepingBackend`] (the result must equal the official one) and
/// return what crossed to the host.
fn track_keeping(scenario: &str, store: bool, ops: bool) -> ResidencyLog {
    let fx = fixture();
    let log = Log::default();
    let models = TrackerModels::load(&KeepingBackend { store, ops, log: log.clone() }, &exported(&fx)).unwrap();
    let (iou, rel) = check_scenario_with(&fx, scenario, TrackerOptions::default(), models);
    assert!(iou >= IOU_MIN && rel <= LOGIT_REL);
    let log = std::mem::take(&mut *log.lock().unwrap());
    println!("{scenario}, store {store}: {log:#?}");
    log
}

/// Prompt-decoder calls whose low-res masks the host reads (each copies them once): all but
/// those for mask prompts, which only take the object pointer.
fn host_low_res_reads(log: &ResidencyLog, scenario: &str) -> usize {
    let (resident, host) = log.inputs["prompt_decoder image_embed"];
    resident + host - prompt_count(scenario, true)
}

/// Prompts of `scenario` with (`mask`) or without a mask.
fn prompt_count(scenario: &str, mask: bool) -> usize {
    let prompts: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join(format!("prompts_{scenario}.json"))).unwrap())
            .unwrap();
    prompts["prompts"].as_array().unwrap().iter().filter(|p| p.get("mask").is_some() == mask).count()
}

fn point_prompts(scenario: &str) -> usize {
    prompt_count(scenario, false)
}

/// With a backend that keeps outputs where it ran them (TensorRT: device memory), the
/// image features and the memory attention's output never come back to the host, except
/// `vision_feat` on frames with a points/box prompt (`no_mem_embed` is added on the host
/// there), and the tracking result is unchanged. Without the backend's memory bank the
/// memory encoder's features come to the host (the bank is there).
#[test]
fn resident_features_stay_with_the_backend_and_tracking_is_unchanged() {
    let n_points = point_prompts("forward");
    assert_eq!(n_points, 5, "the fixture's prompts changed");
    let log = track_keeping("forward", false, false);
    assert_eq!(log.downloads.get("vision_feat"), Some(&n_points));
    assert!(log.downloads.get("maskmem_features").is_some_and(|&n| n > 0), "{:?}", log.downloads);
    assert_eq!(log.downloads.get("maskmem_pos_enc"), Some(&1), "position encoding: first memory only");
    let reads = host_low_res_reads(&log, "forward");
    assert_eq!(log.downloads.get("low_res_masks"), Some(&reads), "the low-res output, once per call");
    assert_eq!(log.downloads.len(), 4, "nothing else crosses: {:?}", log.downloads);
    assert_eq!(log.gathers, 0);
    let given = |k: &str| *log.inputs.get(k).unwrap_or_else(|| panic!("no input {k} given: {:?}", log.inputs));
    for k in [
        "memory_attention curr",
        "memory_attention curr_pos",
        "prompt_decoder high_res_feat0",
        "prompt_decoder high_res_feat1",
        "memory_encoder pix_feat",
    ] {
        let (resident, host) = given(k);
        assert!(resident > 0 && host == 0, "{k}: {resident} resident, {host} on the host");
    }
    // the decoder's image embedding: the memory attention's output when tracking, the
    // host sum with no_mem_embed for points/box prompts
    let (resident, host) = given("prompt_decoder image_embed");
    assert_eq!(host, n_points);
    assert!(resident > 0);
    // the memory-attention inputs come from the host bank
    assert_eq!(given("memory_attention memory").0, 0);
}

/// With the memory attention's backend keeping the memory bank (as TensorRT keeps it in
/// device slots), the memories go from the memory encoder to the bank and from the bank
/// to the memory attention without a host copy, the bank releases what can no longer be
/// selected, and the result is unchanged, forward and reverse.
#[test]
fn a_backend_memory_bank_keeps_memories_off_the_host_and_tracking_is_unchanged() {
    for scenario in ["forward", "reverse"] {
        let log = track_keeping(scenario, true, false);
        let downloads: Vec<(&str, usize)> = log.downloads.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            downloads,
            vec![
                ("low_res_masks", host_low_res_reads(&log, scenario)),
                ("maskmem_pos_enc", 1),
                ("vision_feat", point_prompts(scenario))
            ],
            "{scenario}: copies to the host"
        );
        assert!(log.stored.0 > 0 && log.stored.1 == 0, "{scenario}: memories stored {:?} (resident, host)", log.stored);
        assert!(log.released > 0, "{scenario}: the 8-frame clip outlives some memories");
        let (resident, host) = log.inputs["memory_attention memory"];
        assert!(resident == log.gathers && host == 0, "{scenario}: memory inputs {resident} resident, {host} host");
        assert!(log.gathers > 0);
    }
}

/// With the image encoder's backend doing the frame pre/post-processing (as TensorRT does
/// with CUDA kernels), every encoded frame is preprocessed there, the memory encoder's
/// high-res masks are upsampled and the outputs' holes filled there from the decoder's
/// resident output, every output frame is postprocessed there, and the result is
/// unchanged; the only host copies left are the decoder's low-res masks and `vision_feat`
/// for points/box prompts, and the position encoding once.
#[test]
fn backend_frame_ops_do_the_pre_and_post_processing_and_tracking_is_unchanged() {
    for scenario in ["forward", "reverse"] {
        let log = track_keeping(scenario, true, true);
        let [pre, up, post, post_logits, holes] = log.frame_ops;
        let encoded = log.inputs["image_encoder image"];
        assert_eq!((encoded.0, encoded.1), (pre, 0), "{scenario}: every image input made by the frame ops");
        assert!(pre > 0 && up > 0, "{scenario}: {:?}", log.frame_ops);
        let enc_calls = log.inputs["memory_encoder mask_high_res"];
        assert_eq!(enc_calls, (up, 0), "{scenario}: every memory encoder input upsampled by the frame ops");
        // CollectSink wants logits; 8 frames
        assert_eq!((post, post_logits), (0, 8), "{scenario}");
        // holes filled there for the tracked objects' outputs, which stay there; prompted
        // objects' outputs come from the host
        assert!(holes > 0, "{scenario}");
        assert!(log.output_planes.0 > 0 && log.output_planes.1 > 0, "{scenario}: {:?}", log.output_planes);
        // the decoder's low-res masks cross only for points/box prompts (the prompt's
        // output and its refinement input are kept on the host)
        let downloads: Vec<(&str, usize)> = log.downloads.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        let want = vec![
            ("low_res_masks", point_prompts(scenario)),
            ("maskmem_pos_enc", 1),
            ("vision_feat", point_prompts(scenario)),
        ];
        assert_eq!(downloads, want, "{scenario}");
    }
}
