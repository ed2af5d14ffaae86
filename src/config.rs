//! Model configurations: the official configs' values (`sam2/configs/sam2*/…yaml`,
//! EdgeTAM's `configs/edgetam.yaml`, plus the constructor defaults they rely on), and a
//! serde form so reduced test configs can be written to JSON by the fixture generator.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};

/// Names accepted by `tamrt export --model`.
pub const MODEL_NAMES: &[&str] = &[
    "sam2_hiera_t",
    "sam2_hiera_s",
    "sam2_hiera_b+",
    "sam2_hiera_l",
    "sam2.1_hiera_t",
    "sam2.1_hiera_s",
    "sam2.1_hiera_b+",
    "sam2.1_hiera_l",
];

/// EdgeTAM's name for `tamrt export --model`.
pub const EDGETAM: &str = "edgetam";

/// `sam2.modeling.backbones.hieradet.Hiera` arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HieraConfig {
    pub embed_dim: usize,
    pub num_heads: usize,
    /// Blocks per stage.
    pub stages: Vec<usize>,
    pub global_att_blocks: Vec<usize>,
    pub window_pos_embed_bkg_spatial_size: [usize; 2],
    pub window_spec: Vec<usize>,
    /// Number of q-pool stages (default 3).
    pub q_pool: usize,
    pub dim_mul: f64,
    pub head_mul: f64,
}

/// `FpnNeck` arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NeckConfig {
    pub d_model: usize,
    /// Highest channel count first, as in the yaml.
    pub backbone_channel_list: Vec<usize>,
    pub fpn_top_down_levels: Vec<usize>,
    /// `ImageEncoder.scalp`: lowest-resolution levels dropped.
    pub scalp: usize,
}

/// `MemoryAttention` / `MemoryAttentionLayer` arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryAttentionConfig {
    pub d_model: usize,
    pub num_layers: usize,
    pub dim_feedforward: usize,
    pub num_heads: usize,
    pub kv_in_dim: usize,
    pub rope_theta: f64,
    pub pos_enc_at_input: bool,
    /// EdgeTAM's cross-attention `RoPEAttentionv2`: the key grid (`k_sizes`, 16×16) of each
    /// memory frame's 2D latents. `None` = SAM 2's `RoPEAttention` with `rope_k_repeat`.
    #[serde(default)]
    pub rope_v2_k_sizes: Option<[usize; 2]>,
}

/// EdgeTAM's `PerceiverResampler` (spatial perceiver) arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PerceiverConfig {
    pub depth: usize,
    pub dim: usize,
    pub dim_head: usize,
    pub heads: usize,
    pub ff_mult: usize,
    pub num_latents: usize,
    pub num_latents_2d: usize,
    pub pos_enc_at_key_value: bool,
    pub concat_kv_latents: bool,
    pub use_self_attn: bool,
}

/// `MemoryEncoder` arguments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemoryEncoderConfig {
    /// Memory feature dim (`out_dim`, 64 in every release).
    pub out_dim: usize,
    /// `MaskDownSampler.embed_dim` (= hidden dim).
    pub mask_downsampler_embed_dim: usize,
    /// `MaskDownSampler.total_stride` (16).
    pub mask_downsampler_total_stride: usize,
    pub fuser_num_layers: usize,
    pub fuser_kernel_size: usize,
}

/// SAM heads (`PromptEncoder`, `MaskDecoder`, `TwoWayTransformer`) and `SAM2Base` flags.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamHeadsConfig {
    pub transformer_depth: usize,
    pub transformer_mlp_dim: usize,
    pub transformer_num_heads: usize,
    pub iou_head_depth: usize,
    pub iou_head_hidden_dim: usize,
    pub mask_in_chans: usize,
    pub num_multimask_outputs: usize,
    pub pred_obj_scores: bool,
    pub pred_obj_scores_mlp: bool,
    pub use_high_res_features_in_sam: bool,
    pub iou_prediction_use_sigmoid: bool,
    pub use_mlp_for_obj_ptr_proj: bool,
    pub use_multimask_token_for_obj_ptr: bool,
    pub fixed_no_obj_ptr: bool,
    pub soft_no_obj_ptr: bool,
    /// Video-predictor post-processing values (`build_sam2_video_predictor`).
    pub dynamic_multimask_via_stability: bool,
    pub dynamic_multimask_stability_delta: f32,
    pub dynamic_multimask_stability_thresh: f32,
}

/// Which image backbone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backbone {
    Hiera(HieraConfig),
    /// timm `repvit_m1.dist_in1k` (EdgeTAM).
    Repvit {
        channels: Vec<usize>,
    },
}

/// The whole model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub name: String,
    /// "sam2", "sam2.1" or "edgetam".
    pub family: String,
    pub image_size: usize,
    pub backbone_stride: usize,
    pub backbone: Backbone,
    pub neck: NeckConfig,
    pub memory_attention: MemoryAttentionConfig,
    pub memory_encoder: MemoryEncoderConfig,
    /// EdgeTAM's spatial perceiver after the memory encoder (`None` for SAM 2 / 2.1).
    #[serde(default)]
    pub perceiver: Option<PerceiverConfig>,
    pub sam: SamHeadsConfig,
    pub num_maskmem: usize,
    pub max_obj_ptrs_in_encoder: usize,
    pub sigmoid_scale_for_mem_enc: f32,
    pub sigmoid_bias_for_mem_enc: f32,
    pub binarize_mask_from_pts_for_mem_enc: bool,
    pub use_mask_input_as_output_without_sam: bool,
    pub directly_add_no_mem_embed: bool,
    pub no_obj_embed_spatial: bool,
    pub use_obj_ptrs_in_encoder: bool,
    pub add_tpos_enc_to_obj_ptrs: bool,
    pub proj_tpos_enc_in_obj_ptrs: bool,
    pub use_signed_tpos_enc_to_obj_ptrs: bool,
    pub only_obj_ptrs_in_the_past_for_eval: bool,
    pub multimask_output_in_sam: bool,
    pub multimask_output_for_tracking: bool,
    pub multimask_min_pt_num: usize,
    pub multimask_max_pt_num: usize,
    pub memory_temporal_stride_for_eval: usize,
    pub pixel_mean: [f32; 3],
    pub pixel_std: [f32; 3],
}

impl ModelConfig {
    /// The official config called `name`.
    pub fn builtin(name: &str) -> Result<ModelConfig> {
        if name == EDGETAM {
            return Ok(Self::edgetam());
        }
        let (family, size) = if let Some(s) = name.strip_prefix("sam2.1_hiera_") {
            ("sam2.1", s)
        } else if let Some(s) = name.strip_prefix("sam2_hiera_") {
            ("sam2", s)
        } else {
            return Err(unknown_model(name));
        };
        // (embed_dim, num_heads, stages, global_att_blocks, bkg size, window_spec)
        let (embed_dim, num_heads, stages, global, bkg, window): (
            usize,
            usize,
            Vec<usize>,
            Vec<usize>,
            usize,
            Vec<usize>,
        ) = match size {
            "t" => (96, 1, vec![1, 2, 7, 2], vec![5, 7, 9], 7, vec![8, 4, 14, 7]),
            "s" => (96, 1, vec![1, 2, 11, 2], vec![7, 10, 13], 7, vec![8, 4, 14, 7]),
            // b+ uses the Hiera defaults for stages / global blocks / bkg size.
            "b+" => (112, 2, vec![2, 3, 16, 3], vec![12, 16, 20], 14, vec![8, 4, 14, 7]),
            "l" => (144, 2, vec![2, 6, 36, 4], vec![23, 33, 43], 7, vec![8, 4, 16, 8]),
            _ => return Err(unknown_model(name)),
        };
        let channels: Vec<usize> = (0..4).rev().map(|i| embed_dim << i).collect();
        let v21 = family == "sam2.1";
        Ok(ModelConfig {
            name: name.to_string(),
            family: family.to_string(),
            image_size: 1024,
            backbone_stride: 16,
            backbone: Backbone::Hiera(HieraConfig {
                embed_dim,
                num_heads,
                stages,
                global_att_blocks: global,
                window_pos_embed_bkg_spatial_size: [bkg, bkg],
                window_spec: window,
                q_pool: 3,
                dim_mul: 2.0,
                head_mul: 2.0,
            }),
            neck: NeckConfig {
                d_model: 256,
                backbone_channel_list: channels,
                fpn_top_down_levels: vec![2, 3],
                scalp: 1,
            },
            memory_attention: MemoryAttentionConfig {
                d_model: 256,
                num_layers: 4,
                dim_feedforward: 2048,
                num_heads: 1,
                kv_in_dim: 64,
                rope_theta: 10000.0,
                pos_enc_at_input: true,
                rope_v2_k_sizes: None,
            },
            memory_encoder: MemoryEncoderConfig {
                out_dim: 64,
                mask_downsampler_embed_dim: 256,
                mask_downsampler_total_stride: 16,
                fuser_num_layers: 2,
                fuser_kernel_size: 7,
            },
            perceiver: None,
            sam: SamHeadsConfig::official(),
            num_maskmem: 7,
            max_obj_ptrs_in_encoder: 16,
            sigmoid_scale_for_mem_enc: 20.0,
            sigmoid_bias_for_mem_enc: -10.0,
            binarize_mask_from_pts_for_mem_enc: true,
            use_mask_input_as_output_without_sam: true,
            directly_add_no_mem_embed: true,
            no_obj_embed_spatial: v21,
            use_obj_ptrs_in_encoder: true,
            add_tpos_enc_to_obj_ptrs: v21,
            proj_tpos_enc_in_obj_ptrs: v21,
            use_signed_tpos_enc_to_obj_ptrs: v21,
            only_obj_ptrs_in_the_past_for_eval: true,
            multimask_output_in_sam: true,
            multimask_output_for_tracking: true,
            multimask_min_pt_num: 0,
            multimask_max_pt_num: 1,
            memory_temporal_stride_for_eval: 1,
            pixel_mean: [0.485, 0.456, 0.406],
            pixel_std: [0.229, 0.224, 0.225],
        })
    }

    /// EdgeTAM (`sam2/configs/edgetam.yaml` of the edgetam package): RepViT-M1 trunk,
    /// 2-layer memory attention with `RoPEAttentionv2` cross-attention, spatial perceiver,
    /// no temporal encoding on object pointers, no `no_obj_embed_spatial`.
    pub fn edgetam() -> ModelConfig {
        let mut c = Self::builtin("sam2_hiera_t").expect("builtin");
        c.name = "edgetam".into();
        c.family = "edgetam".into();
        c.backbone = Backbone::Repvit { channels: vec![48, 96, 192, 384] };
        c.neck.backbone_channel_list = vec![384, 192, 96, 48];
        c.memory_attention.num_layers = 2;
        c.memory_attention.rope_v2_k_sizes = Some([16, 16]);
        c.perceiver = Some(PerceiverConfig {
            depth: 2,
            dim: 64,
            dim_head: 64,
            heads: 1,
            ff_mult: 4,
            num_latents: 256,
            num_latents_2d: 256,
            pos_enc_at_key_value: true,
            concat_kv_latents: false,
            use_self_attn: true,
        });
        c.no_obj_embed_spatial = false;
        c.add_tpos_enc_to_obj_ptrs = false;
        c.proj_tpos_enc_in_obj_ptrs = false;
        c.use_signed_tpos_enc_to_obj_ptrs = false;
        c
    }

    /// Read a config written as JSON (reduced test configs).
    pub fn from_json_file(path: &std::path::Path) -> Result<ModelConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "cannot read config", e))?;
        serde_json::from_str(&text).map_err(|e| {
            Error::new(ErrorKind::Config, format!("config '{}' is not a valid tamrt model config: {e}", path.display()))
        })
    }

    /// Hidden dim of the SAM heads and memory attention (= neck d_model).
    pub fn hidden_dim(&self) -> usize {
        self.neck.d_model
    }

    /// Memory feature dim.
    pub fn mem_dim(&self) -> usize {
        self.memory_encoder.out_dim
    }

    /// Side of the image-embedding grid (64 for 1024 / 16).
    pub fn embed_side(&self) -> usize {
        self.image_size / self.backbone_stride
    }

    pub fn hiera(&self) -> Option<&HieraConfig> {
        match &self.backbone {
            Backbone::Hiera(h) => Some(h),
            _ => None,
        }
    }
}

impl SamHeadsConfig {
    /// Values hard-coded in `SAM2Base._build_sam_heads` plus the video predictor's
    /// post-processing overrides.
    pub fn official() -> Self {
        SamHeadsConfig {
            transformer_depth: 2,
            transformer_mlp_dim: 2048,
            transformer_num_heads: 8,
            iou_head_depth: 3,
            iou_head_hidden_dim: 256,
            mask_in_chans: 16,
            num_multimask_outputs: 3,
            pred_obj_scores: true,
            pred_obj_scores_mlp: true,
            use_high_res_features_in_sam: true,
            iou_prediction_use_sigmoid: true,
            use_mlp_for_obj_ptr_proj: true,
            use_multimask_token_for_obj_ptr: true,
            fixed_no_obj_ptr: true,
            soft_no_obj_ptr: false,
            dynamic_multimask_via_stability: true,
            dynamic_multimask_stability_delta: 0.05,
            dynamic_multimask_stability_thresh: 0.98,
        }
    }
}

fn unknown_model(name: &str) -> Error {
    Error::new(
        ErrorKind::Config,
        format!("unknown model '{name}'; known models: {}, {EDGETAM}", MODEL_NAMES.join(", ")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_names_resolve() {
        for n in MODEL_NAMES {
            let c = ModelConfig::builtin(n).unwrap();
            assert_eq!(&c.name, n);
            match &c.backbone {
                Backbone::Hiera(h) => assert_eq!(c.neck.backbone_channel_list[3], h.embed_dim),
                Backbone::Repvit { channels } => assert_eq!(c.neck.backbone_channel_list[3], channels[0]),
            }
        }
        assert_eq!(ModelConfig::builtin(EDGETAM).unwrap().family, "edgetam");
        let e = ModelConfig::builtin("sam3").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Config);
        assert!(e.to_string().contains("sam3"));
    }

    #[test]
    fn json_roundtrip() {
        let c = ModelConfig::builtin("sam2.1_hiera_l").unwrap();
        let s = serde_json::to_string(&c).unwrap();
        let d: ModelConfig = serde_json::from_str(&s).unwrap();
        assert_eq!(c, d);
    }
}
