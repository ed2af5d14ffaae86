//! ONNX writing: protobuf encoding ([`proto`]), the graph builder ([`graph`]) and shared
//! layers ([`nn`]).

pub mod graph;
pub mod nn;
pub mod proto;
pub mod trt_ops;

pub use graph::{Graph, Value};
