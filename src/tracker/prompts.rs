//! Prompts: the `PROMPTS.json` file of `tamrt track` and its validation.
//!
//! ```json
//! {"prompts": [
//!   {"frame": 0, "obj_id": 1, "points": [[x, y], ...], "labels": [1, 0, ...]},
//!   {"frame": 0, "obj_id": 2, "box": [x0, y0, x1, y1]},
//!   {"frame": 5, "obj_id": 3, "mask": "obj3.png"}
//! ]}
//! ```
//!
//! Coordinates are frame pixels; points and a box may share one entry (the box goes
//! first, as `add_new_points_or_box` puts it); a mask path is relative to the prompts
//! file and its nonzero pixels are the object. Entries are applied in file order, as
//! calls to `add_new_points_or_box` / `add_new_mask` would be: a later entry for the same
//! object and frame replaces the earlier one and, for points/box, refines it (the earlier
//! low-res logits become the mask prompt).

use std::path::Path;

use serde::Deserialize;

use crate::error::{Error, ErrorKind, Result};

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, msg)
}

/// What one prompt says about its object.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptKind {
    /// Clicks and/or a box, frame-pixel coordinates. Box corners come first with labels
    /// 2 and 3; clicks have label 1 (positive) or 0 (negative).
    Points { coords: Vec<[f32; 2]>, labels: Vec<i32> },
    /// A binary mask at frame resolution, row-major.
    Mask { width: usize, height: usize, mask: Vec<bool> },
}

/// One prompt on one frame for one object.
#[derive(Debug, Clone, PartialEq)]
pub struct Prompt {
    pub frame: usize,
    pub obj_id: u32,
    pub kind: PromptKind,
}

impl Prompt {
    /// Points and/or a box (validated: same number of points and labels, labels 0/1,
    /// x1 ≥ x0 and y1 ≥ y0, at least one of them).
    pub fn points_or_box(
        frame: usize,
        obj_id: u32,
        points: &[[f32; 2]],
        labels: &[i32],
        bbox: Option<[f32; 4]>,
    ) -> Result<Prompt> {
        let what = format!("prompt for object {obj_id} on frame {frame}");
        if points.len() != labels.len() {
            return Err(invalid(format!("{what}: {} points but {} labels", points.len(), labels.len())));
        }
        if let Some(l) = labels.iter().find(|l| !(**l == 0 || **l == 1)) {
            return Err(invalid(format!("{what}: label {l} (use 1 for a positive click, 0 for a negative one)")));
        }
        if points.is_empty() && bbox.is_none() {
            return Err(invalid(format!("{what}: no points, box or mask")));
        }
        let mut coords = Vec::new();
        let mut labs = Vec::new();
        if let Some([x0, y0, x1, y1]) = bbox {
            if x1 < x0 || y1 < y0 {
                return Err(invalid(format!("{what}: box [{x0}, {y0}, {x1}, {y1}] has x1 < x0 or y1 < y0")));
            }
            coords.push([x0, y0]);
            coords.push([x1, y1]);
            labs.extend([2, 3]);
        }
        if coords.iter().chain(points).any(|p| !p[0].is_finite() || !p[1].is_finite()) {
            return Err(invalid(format!("{what}: coordinates must be finite numbers")));
        }
        coords.extend_from_slice(points);
        labs.extend_from_slice(labels);
        Ok(Prompt { frame, obj_id, kind: PromptKind::Points { coords, labels: labs } })
    }

    /// A mask prompt (nonzero = object).
    pub fn mask(frame: usize, obj_id: u32, width: usize, height: usize, mask: Vec<bool>) -> Result<Prompt> {
        if mask.len() != width * height {
            return Err(invalid(format!(
                "mask prompt for object {obj_id} on frame {frame}: {} values for {width}x{height}",
                mask.len()
            )));
        }
        Ok(Prompt { frame, obj_id, kind: PromptKind::Mask { width, height, mask } })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptFile {
    prompts: Vec<PromptEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromptEntry {
    frame: usize,
    obj_id: u32,
    #[serde(default)]
    points: Option<Vec<[f32; 2]>>,
    #[serde(default)]
    labels: Option<Vec<i32>>,
    #[serde(default, rename = "box")]
    bbox: Option<[f32; 4]>,
    #[serde(default)]
    mask: Option<String>,
}

/// Read and validate a prompts file for a video of `num_frames` frames of `width` ×
/// `height`. Every error names the file, the entry and what is wrong.
pub fn read_prompt_file(path: &Path, num_frames: usize, width: usize, height: usize) -> Result<Vec<Prompt>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, "cannot read prompts file", e))?;
    let file: PromptFile = serde_json::from_str(&text).map_err(|e| {
        invalid(format!(
            "prompts file '{}' is not valid: {e} (expected {{\"prompts\": [{{\"frame\": 0, \"obj_id\": 1, \"points\": [[x, y]], \"labels\": [1]}}, ...]}})",
            path.display()
        ))
    })?;
    if file.prompts.is_empty() {
        return Err(invalid(format!("prompts file '{}' has no prompts", path.display())));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::with_capacity(file.prompts.len());
    for (i, e) in file.prompts.into_iter().enumerate() {
        let ctx = |m: String| invalid(format!("prompts file '{}', entry {i}: {m}", path.display()));
        if e.frame >= num_frames {
            return Err(ctx(format!(
                "frame {} is beyond the video ({num_frames} frames, indices 0..{})",
                e.frame,
                num_frames - 1
            )));
        }
        if let Some(m) = e.mask {
            if e.points.is_some() || e.labels.is_some() || e.bbox.is_some() {
                return Err(ctx(format!("object {}: a mask prompt cannot have points or a box too", e.obj_id)));
            }
            let mp = base.join(&m);
            let (w, h, mask) =
                read_mask_png(&mp).map_err(|err| ctx(format!("object {}: {}", e.obj_id, err.message())))?;
            if (w, h) != (width, height) {
                return Err(ctx(format!(
                    "object {}: mask '{}' is {w}x{h}, the frames are {width}x{height}",
                    e.obj_id,
                    mp.display()
                )));
            }
            out.push(Prompt::mask(e.frame, e.obj_id, w, h, mask)?);
        } else {
            if e.points.is_some() != e.labels.is_some() {
                return Err(ctx(format!("object {}: points and labels must be given together", e.obj_id)));
            }
            let p = Prompt::points_or_box(
                e.frame,
                e.obj_id,
                e.points.as_deref().unwrap_or(&[]),
                e.labels.as_deref().unwrap_or(&[]),
                e.bbox,
            )
            .map_err(|err| ctx(err.message().to_string()))?;
            out.push(p);
        }
    }
    Ok(out)
}

/// A mask image: nonzero in any channel = object. Returns (width, height, mask).
pub fn read_mask_png(path: &Path) -> Result<(usize, usize, Vec<bool>)> {
    let img = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, "cannot open mask", e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, "cannot read mask", e))?
        .decode()
        .map_err(|e| invalid(format!("mask '{}' cannot be decoded: {e}", path.display())))?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    // palette images are expanded to colours by the decoder; index 0 is usually black
    let rgba = img.to_rgba16();
    let mask = rgba.pixels().map(|p| p.0[0] != 0 || p.0[1] != 0 || p.0[2] != 0).collect();
    Ok((w, h, mask))
}
