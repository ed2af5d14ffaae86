//! One file per paper block; each builds ONNX nodes from checkpoint weights.
//! The `build_*` functions produce the four exported graphs (see `export/README.md`).

pub mod edgetam;
pub mod fpn_neck;
pub mod hiera;
pub mod image_encoder;
pub mod mask_decoder;
pub mod memory_attention;
pub mod memory_attention_split;
pub mod memory_attention_v2;
pub mod memory_encoder;
pub mod perceiver;
pub mod position_encoding;
pub mod prompt_decoder;
pub mod prompt_encoder;
pub mod repvit;
pub mod rope;
pub mod two_way_transformer;
