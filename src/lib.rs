//! tamrt: SAM 2 / SAM 2.1 / EdgeTAM video object segmentation.
//!
//! Data flows one way: checkpoint ([`checkpoint`]) → graphs ([`models`], [`export`]) →
//! engines / sessions ([`backend`]) → tracker → metrics.

pub mod bench;
pub mod checkpoint;
pub mod config;
pub mod error;
pub mod eval;
pub mod export;
pub mod gpu;
pub mod info;
pub mod manifest;
pub mod models;
pub mod onnx;
pub mod parity;
pub mod tracker;
pub mod trt;
pub mod weights;

pub mod backend;

pub use error::{Error, ErrorKind, Result};

/// Version written into `model.json`; the runtime refuses model dirs of another one.
pub const FORMAT_VERSION: u32 = 2;
