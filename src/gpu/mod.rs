//! GPU pre/post-processing and a device-resident memory bank through cudarc (feature
//! `cuda`): NVRTC-compiled CUDA C kernels (compiled once per context, launched on one
//! stream) for
//!
//! - frame preprocessing: RGB8 frame → Pillow-exact bicubic resize to S×S (the fixed-point
//!   tables of `resize::pil_resize_rgb8`, computed on the host once per frame size) →
//!   ImageNet normalisation, planar `[3, S, S]` fp32, identical to `frames::preprocess`;
//! - logits postprocessing: torch-exact bilinear (align_corners=False) from `[4E, 4E]` to
//!   the video size and the `> 0` threshold; only the u8 masks (and, for `--save-logits`,
//!   the logits) come back to the host;
//! - the memory bank: mask memories (bf16, as the CPU bank) and object pointers in device
//!   slots reused across frames, and a gather that builds the memory-attention inputs in
//!   device buffers exactly as `tracker::mem_inputs::assemble` does on the host.
//!
//! The TensorRT backend wires them into tracking through the backend interfaces:
//! `resident` (engine outputs kept in pooled device buffers on the one stream),
//! `device_store` (the memory bank as a [`crate::backend::BankStore`]) and
//! `frame_ops` (pre/post-processing as [`crate::backend::FrameOps`]).
//!
//! **Status:** `tamrt gpu-check` runs every kernel, the pooled tensors, the bank store and
//! the frame ops against the CPU functions on a GPU machine and reports errors and timings;
//! on an H200 (2026-11-28, CUDA 13.0) all nine checks passed bit-exact (README, TensorRT),
//! and `tests/gpu_tracker.rs` tracked the fixture clip like the official predictor with
//! the device bank store and frame ops, ONNX Runtime running the graphs. Not yet run with
//! TensorRT engines (no TensorRT there). In CI, without a GPU:
//! the tables and the kernels' arithmetic (Rust twins in [`plan`]), and the CUDA C source
//! itself, compiled as C++ with an emulation of the CUDA built-ins
//! (`tests/gpu_kernels_emulated.rs`), bit-exact against the CPU functions; the tracker's
//! side of the interfaces with a host stand-in (`tests/tracker.rs`).
//!
//! [`plan`], [`gather`] and [`kernels`] are plain Rust (always compiled, tested without
//! CUDA); the others need the `cuda` feature.

#[cfg(feature = "cuda")]
pub mod bank;
pub mod check;
#[cfg(feature = "cuda")]
mod check_gpu;
#[cfg(feature = "cuda")]
pub mod device;
#[cfg(feature = "cuda")]
pub mod device_store;
#[cfg(feature = "cuda")]
pub mod frame_ops;
pub mod gather;
pub mod kernels;
pub mod plan;
#[cfg(feature = "cuda")]
pub mod prepost;
#[cfg(feature = "cuda")]
pub mod resident;
