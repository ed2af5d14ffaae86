//! The tracker with the TensorRT backend's GPU parts and no TensorRT (feature `cuda`):
//! frame pre/post-processing on the GPU (`gpu::frame_ops`: Pillow-exact resize and
//! normalisation, the memory encoder's upsampling, hole filling, the output's bilinear +
//! threshold) and the memory bank in device slots (`gpu::device_store`: bf16 memories,
//! pointers, the memory-attention inputs gathered on the GPU), while ONNX Runtime runs
//! the graphs (their inputs come to the host, their outputs go back as host values).
//!
//! Same fixture and bounds as `tests/tracker.rs` (the official predictor's logits; mask
//! IoU ≥ 0.99 and max |logit − ref| ≤ 1e-3 · max|ref| where |ref| > 1), forward and
//! reverse. Without a CUDA driver (CI) the test checks that opening the GPU fails with a
//! clear error instead; with one it must track like the official predictor, with the
//! report naming the device bank and the GPU frame ops.
#![cfg(all(feature = "cuda", feature = "ort"))]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tamrt::backend::ort::OrtBackend;
use tamrt::backend::{Backend, BankStore, ComponentSession, FrameOps};
use tamrt::export::Component;
use tamrt::gpu::device::Gpu;
use tamrt::gpu::device_store::DeviceBankStore;
use tamrt::gpu::frame_ops::DeviceFrameOps;
use tamrt::gpu::resident::DevicePool;
use tamrt::tracker::mem_inputs::MemLayout;
use tamrt::tracker::{FrameDir, TrackerModels, TrackerOptions};
use tamrt::weights::TensorF32;

mod common;
use common::{check_fixture_scenario, export_fixture_model, IOU_MIN, LOGIT_REL};

/// An ONNX Runtime session whose bank store and frame ops are the GPU ones.
struct GpuPartsSession {
    inner: Box<dyn ComponentSession>,
    gpu: Arc<Gpu>,
    pool: Arc<DevicePool>,
}

impl ComponentSession for GpuPartsSession {
    fn run(&mut self, inputs: &[(&str, &TensorF32)]) -> tamrt::Result<Vec<(String, TensorF32)>> {
        self.inner.run(inputs)
    }
    fn backend_name(&self) -> &str {
        "ort-cpu+cuda-parts"
    }
    fn input_names(&self) -> Vec<String> {
        self.inner.input_names()
    }
    fn bank_store(
        &self,
        layout: &MemLayout,
        maskmem_pos: &[f32],
        tpos_enc: &[f32],
    ) -> Option<tamrt::Result<Box<dyn BankStore>>> {
        Some(
            DeviceBankStore::new(self.gpu.clone(), &self.pool, *layout, maskmem_pos, tpos_enc)
                .map(|s| Box::new(s) as Box<dyn BankStore>),
        )
    }
    fn frame_ops(&self, image_size: usize, mean: [f32; 3], std: [f32; 3]) -> Option<tamrt::Result<Box<dyn FrameOps>>> {
        Some(
            DeviceFrameOps::new(self.gpu.clone(), &self.pool, image_size, mean, std)
                .map(|o| Box::new(o) as Box<dyn FrameOps>),
        )
    }
}

struct GpuPartsBackend {
    gpu: Arc<Gpu>,
    pool: Arc<DevicePool>,
}

impl Backend for GpuPartsBackend {
    fn name(&self) -> &str {
        "ort-cpu+cuda-parts"
    }
    fn load(&self, dir: &Path, c: Component) -> tamrt::Result<Box<dyn ComponentSession>> {
        let inner = OrtBackend { threads: 2 }.load(dir, c)?;
        Ok(Box::new(GpuPartsSession { inner, gpu: self.gpu.clone(), pool: self.pool.clone() }))
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tracker")
}

#[test]
fn gpu_bank_and_frame_ops_track_like_official_or_fail_clearly_without_a_gpu() {
    let gpu = match Gpu::new(0) {
        Ok(g) => Arc::new(g),
        Err(e) => {
            // no GPU here: the error says why, and nothing else can be checked
            assert!(!tamrt::info::cuda_driver_present(), "a CUDA driver is present but the GPU did not open: {e}");
            assert!(e.message().contains("no CUDA driver"), "{e}");
            return;
        }
    };
    println!("GPU: {}", gpu.name());
    let pool = DevicePool::new(gpu.stream().clone());
    let fx = fixture();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fx.join("meta.json")).unwrap()).unwrap();
    let out = std::env::temp_dir().join(format!("tamrt-gpu-tracker-{}", std::process::id()));
    export_fixture_model(&fx, &meta, &out, "tests/fixtures/gen/gen_tracker.py --out tests/fixtures/tracker");
    let video = FrameDir::open(&fx.join("frames")).unwrap();
    for scenario in ["forward", "reverse"] {
        let backend = GpuPartsBackend { gpu: gpu.clone(), pool: pool.clone() };
        let models = TrackerModels::load(&backend, &out).unwrap();
        let c = check_fixture_scenario(&fx, &meta, &video, scenario, models, TrackerOptions::default());
        assert!(c.worst_iou >= IOU_MIN && c.worst_rel <= LOGIT_REL);
        // the GPU parts ran: the tracker would have said "host" had it fallen back
        assert_eq!(c.report.memory_bank, "device", "{scenario}: memory bank");
        assert_eq!(c.report.frame_ops, "cuda", "{scenario}: frame ops");
        println!(
            "{scenario}: worst IoU {:.5}, worst logit error {:.2e} of max|ref|, peak bank {} bytes",
            c.worst_iou, c.worst_rel, c.report.peak_bank_bytes
        );
    }
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_file(out.with_extension("merged.safetensors"));
}
