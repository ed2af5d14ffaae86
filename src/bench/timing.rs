//! Timing and memory probes: a [`ComponentSession`] decorator that adds each call's
//! wall time to a shared per-stage clock (no tracker change needed), percentiles, peak
//! host RSS, `/proc/meminfo` (Jetson's shared memory) and device memory (feature `cuda`),
//! sampled by a background thread while a video runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::backend::{BankStore, ComponentSession, FrameOps, Value};
use crate::error::Result;
use crate::export::Component;
use crate::tracker::mem_inputs::MemLayout;
use crate::weights::TensorF32;

/// Stages in report order.
pub const STAGES: [&str; 5] = ["image_encoder", "memory_attention", "prompt_decoder", "memory_encoder", "pre_post"];

/// Index of a graph stage in [`STAGES`].
pub fn stage_index(c: Component) -> usize {
    match c {
        Component::ImageEncoder => 0,
        Component::MemoryAttention => 1,
        Component::PromptDecoder => 2,
        Component::MemoryEncoder => 3,
    }
}

/// Time and calls per graph stage (the first four of [`STAGES`]).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StageAcc {
    pub time: [Duration; 4],
    pub calls: [usize; 4],
}

impl StageAcc {
    pub fn total(&self) -> Duration {
        self.time.iter().sum()
    }

    /// `self - earlier`.
    pub fn since(&self, earlier: &StageAcc) -> StageAcc {
        let mut d = StageAcc::default();
        for i in 0..4 {
            d.time[i] = self.time[i].saturating_sub(earlier.time[i]);
            d.calls[i] = self.calls[i] - earlier.calls[i];
        }
        d
    }
}

/// Shared per-stage clock.
#[derive(Debug, Clone, Default)]
pub struct StageClock(Arc<Mutex<StageAcc>>);

impl StageClock {
    pub fn snapshot(&self) -> StageAcc {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn reset(&self) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = StageAcc::default();
    }

    fn add(&self, stage: usize, d: Duration) {
        let mut g = self.0.lock().unwrap_or_else(|p| p.into_inner());
        g.time[stage] += d;
        g.calls[stage] += 1;
    }
}

/// A session that times every call into a [`StageClock`].
pub struct TimedSession {
    inner: Box<dyn ComponentSession>,
    stage: usize,
    clock: StageClock,
}

impl TimedSession {
    pub fn wrap(
        inner: Box<dyn ComponentSession>,
        component: Component,
        clock: &StageClock,
    ) -> Box<dyn ComponentSession> {
        Box::new(TimedSession { inner, stage: stage_index(component), clock: clock.clone() })
    }
}

impl ComponentSession for TimedSession {
    fn run(&mut self, inputs: &[(&str, &TensorF32)]) -> Result<Vec<(String, TensorF32)>> {
        let t0 = Instant::now();
        let r = self.inner.run(inputs);
        self.clock.add(self.stage, t0.elapsed());
        r
    }
    fn run_values(&mut self, inputs: &[(&str, &Value)], keep: &[&str]) -> Result<Vec<(String, Value)>> {
        let t0 = Instant::now();
        let r = self.inner.run_values(inputs, keep);
        self.clock.add(self.stage, t0.elapsed());
        r
    }
    fn backend_name(&self) -> &str {
        self.inner.backend_name()
    }
    fn input_names(&self) -> Vec<String> {
        self.inner.input_names()
    }
    // the backend's device-side bank and frame ops pass through the timing wrapper
    fn bank_store(
        &self,
        layout: &MemLayout,
        maskmem_pos: &[f32],
        tpos_enc: &[f32],
    ) -> Option<Result<Box<dyn BankStore>>> {
        self.inner.bank_store(layout, maskmem_pos, tpos_enc)
    }
    fn frame_ops(&self, image_size: usize, mean: [f32; 3], std: [f32; 3]) -> Option<Result<Box<dyn FrameOps>>> {
        self.inner.frame_ops(image_size, mean, std)
    }
}

/// Percentile `p` (0..=100) of sorted values, linear interpolation (numpy's default).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = (p / 100.0).clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

const MB: f64 = 1024.0 * 1024.0;

/// A `kB` field of a `/proc` file, in MiB.
fn proc_kb(text: &str, key: &str) -> Option<f64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kb: f64 = line[key.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb / 1024.0)
}

/// Reset the process's peak RSS (`/proc/self/clear_refs` = 5, Linux >= 4.0). Returns
/// whether it worked; if not, [`peak_rss_mb`] is the peak since the process started.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Peak resident set size (`VmHWM`), MiB.
pub fn peak_rss_mb() -> Option<f64> {
    proc_kb(&std::fs::read_to_string("/proc/self/status").ok()?, "VmHWM:")
}

/// Memory in use system-wide (`MemTotal - MemAvailable`), MiB. On Jetson the GPU shares
/// this memory, so this is the figure to hold against the board's budget.
pub fn system_used_mb() -> Option<f64> {
    let t = std::fs::read_to_string("/proc/meminfo").ok()?;
    Some(proc_kb(&t, "MemTotal:")? - proc_kb(&t, "MemAvailable:")?)
}

/// Whether this is an NVIDIA Jetson (L4T).
pub fn is_jetson() -> bool {
    std::path::Path::new("/etc/nv_tegra_release").exists()
}

/// Device memory of GPU 0 (feature `cuda`; a no-op otherwise). Holds the primary context
/// while it lives, so that polling does not create and destroy it.
pub struct DeviceProbe {
    #[cfg(feature = "cuda")]
    ctx: Option<Arc<cudarc::driver::CudaContext>>,
}

impl DeviceProbe {
    /// Open GPU 0 when a driver and a device exist.
    pub fn open() -> DeviceProbe {
        #[cfg(feature = "cuda")]
        {
            let ctx = if crate::info::cuda_driver_present() { cudarc::driver::CudaContext::new(0).ok() } else { None };
            DeviceProbe { ctx }
        }
        #[cfg(not(feature = "cuda"))]
        {
            DeviceProbe {}
        }
    }

    /// In use on the device (`total - free`, all processes), MiB.
    pub fn used_mb(&self) -> Option<f64> {
        #[cfg(feature = "cuda")]
        {
            let (free, total) = self.ctx.as_ref()?.mem_get_info().ok()?;
            Some((total - free) as f64 / MB)
        }
        #[cfg(not(feature = "cuda"))]
        {
            None
        }
    }
}

/// Peaks seen by a [`MemSampler`].
#[derive(Debug, Clone, Copy, Default)]
pub struct MemPeaks {
    pub system_used_mb: Option<f64>,
    pub device_used_mb: Option<f64>,
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.max(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

/// Polls system (and, with `device`, GPU) memory every `interval` until stopped.
pub struct MemSampler {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<MemPeaks>>,
}

impl MemSampler {
    pub fn start(interval: Duration, device: bool) -> MemSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::Builder::new()
            .name("bench-mem".into())
            .spawn(move || {
                let mut peaks = MemPeaks::default();
                let probe = if device { Some(DeviceProbe::open()) } else { None };
                loop {
                    peaks.system_used_mb = max_opt(peaks.system_used_mb, system_used_mb());
                    if let Some(p) = &probe {
                        peaks.device_used_mb = max_opt(peaks.device_used_mb, p.used_mb());
                    }
                    if s.load(Ordering::Relaxed) {
                        return peaks;
                    }
                    std::thread::park_timeout(interval);
                }
            })
            .ok();
        MemSampler { stop, handle }
    }

    pub fn finish(mut self) -> MemPeaks {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take() {
            Some(h) => {
                h.thread().unpark();
                h.join().unwrap_or_default()
            }
            None => MemPeaks::default(),
        }
    }
}

impl Drop for MemSampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

/// Bytes to MiB.
pub fn mib(bytes: usize) -> f64 {
    bytes as f64 / MB
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A session with its own resident outputs, bank and frame ops (refused with a
    /// recognisable message).
    struct Own;

    #[derive(Debug)]
    struct Marker(Vec<usize>);

    impl crate::backend::Resident for Marker {
        fn shape(&self) -> &[usize] {
            &self.0
        }
        fn to_host(&self) -> Result<TensorF32> {
            Ok(TensorF32::new(self.0.clone(), vec![0.0; self.0.iter().product()]))
        }
        fn concat(&self, _: &[&dyn crate::backend::Resident]) -> Result<Arc<dyn crate::backend::Resident>> {
            unimplemented!("not used")
        }
        fn rows(&self, _: usize, _: usize) -> Result<Arc<dyn crate::backend::Resident>> {
            unimplemented!("not used")
        }
        fn as_any(&self) -> &dyn std::any::Any {
            self
        }
    }

    impl ComponentSession for Own {
        fn run(&mut self, _: &[(&str, &TensorF32)]) -> Result<Vec<(String, TensorF32)>> {
            Ok(vec![("out".into(), TensorF32::new(vec![1], vec![1.0]))])
        }
        fn backend_name(&self) -> &str {
            "own"
        }
        fn input_names(&self) -> Vec<String> {
            Vec::new()
        }
        fn run_values(&mut self, _: &[(&str, &Value)], _: &[&str]) -> Result<Vec<(String, Value)>> {
            Ok(vec![("out".into(), Value::Resident(Arc::new(Marker(vec![2, 3]))))])
        }
        fn bank_store(&self, _: &MemLayout, _: &[f32], _: &[f32]) -> Option<Result<Box<dyn BankStore>>> {
            Some(Err(crate::Error::new(crate::ErrorKind::Backend, "own bank")))
        }
        fn frame_ops(&self, _: usize, _: [f32; 3], _: [f32; 3]) -> Option<Result<Box<dyn FrameOps>>> {
            Some(Err(crate::Error::new(crate::ErrorKind::Backend, "own frame ops")))
        }
    }

    #[test]
    fn timed_sessions_pass_resident_values_bank_and_frame_ops_through() {
        let clock = StageClock::default();
        let mut s = TimedSession::wrap(Box::new(Own), Component::MemoryAttention, &clock);
        let out = s.run_values(&[], &["out"]).unwrap();
        assert!(matches!(&out[0].1, Value::Resident(r) if r.shape() == [2, 3]), "{out:?}");
        assert_eq!(clock.snapshot().calls[stage_index(Component::MemoryAttention)], 1, "timed");
        let layout = MemLayout::new(4, 8, 2, false, 7);
        let bank = s.bank_store(&layout, &[], &[]).expect("the session's bank").err().expect("its error");
        assert!(bank.to_string().contains("own bank"), "{bank}");
        let ops = s.frame_ops(16, [0.0; 3], [1.0; 3]).expect("the session's frame ops").err().expect("its error");
        assert!(ops.to_string().contains("own frame ops"), "{ops}");
    }

    #[test]
    fn percentiles_like_numpy() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 50.0), 2.5);
        assert_eq!(percentile(&v, 0.0), 1.0);
        assert_eq!(percentile(&v, 100.0), 4.0);
        assert!((percentile(&v, 90.0) - 3.7).abs() < 1e-12);
        assert!(percentile(&[], 50.0).is_nan());
    }

    #[test]
    fn proc_fields() {
        let t = "MemTotal:       16000000 kB\nMemFree:  1 kB\nMemAvailable:   8000000 kB\n";
        assert_eq!(proc_kb(t, "MemTotal:"), Some(16000000.0 / 1024.0));
        assert_eq!(proc_kb(t, "Nope:"), None);
        if cfg!(target_os = "linux") {
            assert!(peak_rss_mb().unwrap() > 0.0);
            assert!(system_used_mb().unwrap() > 0.0);
        }
        let s = MemSampler::start(Duration::from_millis(5), false);
        std::thread::sleep(Duration::from_millis(20));
        let p = s.finish();
        assert_eq!(p.system_used_mb.is_some(), cfg!(target_os = "linux"));
    }
}
