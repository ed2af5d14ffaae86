//! `tamrt gpu-check`: every kernel on seeded random inputs of realistic sizes against the
//! CPU reference functions, a memory-bank round trip, and timings (GPU: CUDA events,
//! median of N; CPU: the same functions, median of N). Fails when a comparison exceeds
//! its tolerance. Without the `cuda` feature it fails saying so.
//!
//! Tolerances, and why:
//! - Pillow resize (u8): bit-exact. Integer fixed-point arithmetic on the same tables.
//! - Normalisation (fp32): bit-exact. The kernel reads a 256-entry table per channel that
//!   `normalize_resized` itself computed.
//! - Bilinear logits (fp32): expected bit-exact (`--fmad=false` and `__fmul_rn` /
//!   `__fadd_rn`, the CPU's operation order), accepted up to `1e-6 · max(1, |ref|)` so
//!   that a compiler contracting differently shows as a reported non-exactness, not as
//!   a wrong result; masks may differ only where the reference logit is within that of 0.
//! - Memory bank (bf16 store, gather, fp32 add of the position encodings): bit-exact.

use serde::Serialize;

use crate::error::{Error, ErrorKind, Result};

/// `tamrt gpu-check` options.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Model input side S.
    pub size: usize,
    /// Timed runs per measurement (median reported).
    pub runs: usize,
    pub device: usize,
    pub seed: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions { size: 1024, runs: 20, device: 0, seed: 0x7A3D }
    }
}

/// One comparison.
#[derive(Debug, Clone, Serialize)]
pub struct CheckItem {
    pub name: String,
    /// Values compared.
    pub count: usize,
    /// Largest |gpu - cpu| (fp32 outputs; u8 levels for the resize).
    pub max_abs_err: f64,
    /// Values whose bits differ (u8 pixels for the resize and masks).
    pub mismatches: usize,
    pub tolerance: String,
    pub passed: bool,
    /// GPU time of the kernels alone (CUDA events), median ms.
    pub gpu_kernel_ms: f64,
    /// GPU wall time with the uploads / downloads the step needs, median ms.
    pub gpu_wall_ms: f64,
    /// The CPU reference function, median ms.
    pub cpu_ms: f64,
    pub note: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckReport {
    pub device: String,
    pub size: usize,
    pub runs: usize,
    pub seed: u64,
    pub items: Vec<CheckItem>,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        !self.items.is_empty() && self.items.iter().all(|i| i.passed)
    }

    pub fn text(&self) -> String {
        let mut s = format!(
            "gpu-check on {} (S={}, median of {} runs, seed {})\n",
            self.device, self.size, self.runs, self.seed
        );
        s += &format!(
            "{:<44} {:>10} {:>11} {:>10} {:>9} {:>9} {:>9}  {}\n",
            "check", "values", "max_abs", "mismatch", "gpu_k_ms", "gpu_w_ms", "cpu_ms", "result"
        );
        for i in &self.items {
            s += &format!(
                "{:<44} {:>10} {:>11.3e} {:>10} {:>9.3} {:>9.3} {:>9.3}  {} ({})\n",
                i.name,
                i.count,
                i.max_abs_err,
                i.mismatches,
                i.gpu_kernel_ms,
                i.gpu_wall_ms,
                i.cpu_ms,
                if i.passed { "ok" } else { "FAILED" },
                i.tolerance
            );
            if !i.note.is_empty() {
                s += &format!("    {}\n", i.note);
            }
        }
        s += if self.passed() { "all checks passed\n" } else { "SOME CHECKS FAILED\n" };
        s
    }
}

/// Median of `v` (0 for none).
pub fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Compare fp32 outputs: (max |a - b|, values whose bits differ, values over
/// `rel · max(1, |ref|)`). Bit-identical values count as equal, and so do two NaNs of any
/// payload: IEEE 754 leaves the NaN an operation returns to the implementation (a CUDA
/// `NaN + x` gives the canonical 0x7FFFFFFF, x86 SSE keeps the operand's 0x7FC00000; seen
/// in `memory_pos` on an H200).
pub fn compare_f32(got: &[f32], want: &[f32], rel: f32) -> (f64, usize, usize) {
    assert_eq!(got.len(), want.len());
    let (mut max, mut diff, mut over) = (0f64, 0, 0);
    for (&g, &w) in got.iter().zip(want) {
        if g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()) {
            continue;
        }
        diff += 1;
        let d = (g as f64 - w as f64).abs();
        let d = if d.is_nan() { f64::INFINITY } else { d };
        max = max.max(d);
        if d > (rel * w.abs().max(1.0)) as f64 {
            over += 1;
        }
    }
    (max, diff, over)
}

/// The first value whose bits differ (NaN against NaN excepted, as in [`compare_f32`]):
/// (index, got bits, want bits), for a failed check's note.
pub fn first_diff(got: &[f32], want: &[f32]) -> Option<(usize, u32, u32)> {
    got.iter()
        .zip(want)
        .position(|(g, w)| g.to_bits() != w.to_bits() && !(g.is_nan() && w.is_nan()))
        .map(|i| (i, got[i].to_bits(), want[i].to_bits()))
}

/// Compare u8 outputs: (max |a - b|, values that differ).
pub fn compare_u8(got: &[u8], want: &[u8]) -> (f64, usize) {
    assert_eq!(got.len(), want.len());
    got.iter().zip(want).fold(
        (0f64, 0),
        |(m, n), (&g, &w)| {
            if g == w {
                (m, n)
            } else {
                (m.max((g as f64 - w as f64).abs()), n + 1)
            }
        },
    )
}

/// Run the check (needs the `cuda` feature and a GPU with NVRTC).
pub fn run(opts: &CheckOptions) -> Result<CheckReport> {
    if opts.size == 0 || !opts.size.is_multiple_of(16) || opts.runs == 0 {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            "gpu-check: --size must be a positive multiple of 16, --runs > 0",
        ));
    }
    #[cfg(feature = "cuda")]
    {
        super::check_gpu::run(opts)
    }
    #[cfg(not(feature = "cuda"))]
    {
        Err(Error::new(
            ErrorKind::Backend,
            "this build has no CUDA support: rebuild with `--features cuda` (or `--features tensorrt`) to run gpu-check",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare_counts_and_tolerance() {
        let want = [1.0f32, -2.0, 0.0, f32::NAN, 1e-8];
        let mut got = want;
        assert_eq!(compare_f32(&got, &want, 1e-6), (0.0, 0, 0));
        got[1] = f32::from_bits((-2.0f32).to_bits() + 1); // 1 ulp
        got[4] = 2e-8;
        let (max, diff, over) = compare_f32(&got, &want, 1e-6);
        assert_eq!((diff, over), (2, 0));
        assert!(max > 0.0 && max < 1e-6);
        got[0] = 1.1;
        assert_eq!(compare_f32(&got, &want, 1e-6).2, 1);
        assert_eq!(first_diff(&got, &want), Some((0, 1.1f32.to_bits(), 1.0f32.to_bits())));
        // another NaN payload is no difference; a NaN against a number is one, of inf
        let (canonical, x86) = ([f32::from_bits(0x7FFF_FFFF)], [f32::from_bits(0x7FC0_0000)]);
        assert_eq!(compare_f32(&canonical, &x86, 0.0), (0.0, 0, 0));
        assert_eq!(first_diff(&canonical, &x86), None);
        assert_eq!(compare_f32(&canonical, &[1.0], 0.0), (f64::INFINITY, 1, 1));
        assert_eq!(compare_u8(&[1, 2, 9], &[1, 5, 9]), (3.0, 1));
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn bad_options_are_rejected() {
        let e = run(&CheckOptions { size: 100, ..Default::default() }).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidInput);
        assert!(e.message().contains("--size"), "{e}");
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn without_cuda_it_says_so() {
        let e = run(&CheckOptions::default()).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Backend);
        assert!(e.message().contains("no CUDA support"), "{e}");
    }
}
