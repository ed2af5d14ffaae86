//! Where tracking results go: the [`TrackSink`] trait and [`MaskWriter`], which writes
//! the SA-V evaluator layout `OUT/<obj_id:03>/<frame_stem>.png` (8-bit palette PNG,
//! index 0 background, 1 object) and optionally `OUT/logits/<obj_id:03>/<frame_stem>.npy`
//! (float32 `[H, W]`, `.npy` v1.0). Every file is written to a temporary name and
//! renamed, so an interrupted run leaves only complete files.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// One object's result on one frame.
#[derive(Debug, Clone)]
pub struct ObjectLogits {
    pub obj_id: u32,
    pub width: usize,
    pub height: usize,
    /// The mask at video resolution, row-major `[height, width]`, 0/1 (`logits > 0`).
    pub mask: Vec<u8>,
    /// Mask logits at video resolution, row-major `[height, width]`; empty when the sink
    /// does not want them ([`TrackSink::wants_logits`]).
    pub logits: Vec<f32>,
}

/// Receives every processed frame, in processing order.
pub trait TrackSink {
    /// Called once before the first frame with the number of frames to come.
    fn begin(&mut self, _frames: usize) {}
    /// Whether [`ObjectLogits::logits`] are needed (else only masks are made, and on a
    /// GPU only the masks come back from the device).
    fn wants_logits(&self) -> bool {
        true
    }
    fn frame(&mut self, frame: usize, name: &str, objects: &[ObjectLogits]) -> Result<()>;
}

/// Keeps everything in memory (tests, small clips): `(frame, objects)` in order.
#[derive(Debug, Default)]
pub struct CollectSink {
    pub frames: Vec<(usize, Vec<ObjectLogits>)>,
}

impl TrackSink for CollectSink {
    fn frame(&mut self, frame: usize, _name: &str, objects: &[ObjectLogits]) -> Result<()> {
        self.frames.push((frame, objects.to_vec()));
        Ok(())
    }
}

/// Writes PNG masks (and optionally `.npy` logits) per object per frame.
#[derive(Debug, Clone)]
pub struct MaskWriter {
    out: PathBuf,
    save_logits: bool,
    /// Files written so far.
    pub written: usize,
}

/// Directory name of an object: at least three digits (`001`).
pub fn object_dir_name(obj_id: u32) -> String {
    format!("{obj_id:03}")
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|f| f.to_str()).unwrap_or("out");
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    let res = (|| {
        let mut f = std::fs::File::create(&tmp).map_err(|e| Error::io(&tmp, "cannot create", e))?;
        f.write_all(bytes).map_err(|e| Error::io(&tmp, "cannot write", e))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, "cannot move into place", e))
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Encode a 0/1 mask as an 8-bit palette PNG (0 black, 1 white).
pub fn encode_mask_png(mask: &[u8], width: usize, height: usize) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut buf, width as u32, height as u32);
        enc.set_color(png::ColorType::Indexed);
        enc.set_depth(png::BitDepth::Eight);
        enc.set_palette(vec![0u8, 0, 0, 255, 255, 255]);
        let err = |e: png::EncodingError| Error::new(ErrorKind::Io, format!("PNG encoding failed: {e}"));
        let mut w = enc.write_header().map_err(err)?;
        w.write_image_data(mask).map_err(err)?;
        w.finish().map_err(err)?;
    }
    Ok(buf)
}

/// A `.npy` v1.0 file of a float32 `[h, w]` array (little endian, C order).
pub fn encode_npy_f32(data: &[f32], h: usize, w: usize) -> Vec<u8> {
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({h}, {w}), }}");
    // magic (6) + version (2) + header length (2) + header, padded with spaces and a
    // newline to a multiple of 64
    let total = 10 + header.len() + 1;
    let pad = total.div_ceil(64) * 64 - total;
    header.push_str(&" ".repeat(pad));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + data.len() * 4);
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    for v in data {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

impl MaskWriter {
    /// Masks go under `out` (created on the first frame).
    pub fn new(out: &Path, save_logits: bool) -> MaskWriter {
        MaskWriter { out: out.to_path_buf(), save_logits, written: 0 }
    }

    pub fn out_dir(&self) -> &Path {
        &self.out
    }
}

impl TrackSink for MaskWriter {
    fn wants_logits(&self) -> bool {
        self.save_logits
    }

    fn frame(&mut self, _frame: usize, name: &str, objects: &[ObjectLogits]) -> Result<()> {
        for o in objects {
            let dir = self.out.join(object_dir_name(o.obj_id));
            std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, "cannot create output folder", e))?;
            let png = encode_mask_png(&o.mask, o.width, o.height)?;
            write_atomic(&dir.join(format!("{name}.png")), &png)?;
            self.written += 1;
            if self.save_logits {
                let ldir = self.out.join("logits").join(object_dir_name(o.obj_id));
                std::fs::create_dir_all(&ldir).map_err(|e| Error::io(&ldir, "cannot create output folder", e))?;
                write_atomic(&ldir.join(format!("{name}.npy")), &encode_npy_f32(&o.logits, o.height, o.width))?;
                self.written += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_header_is_aligned() {
        let b = encode_npy_f32(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 2, 3);
        let hl = u16::from_le_bytes([b[8], b[9]]) as usize;
        assert_eq!((10 + hl) % 64, 0);
        assert_eq!(b[10 + hl - 1], b'\n');
        assert_eq!(b.len(), 10 + hl + 24);
        let h = std::str::from_utf8(&b[10..10 + hl]).unwrap();
        assert!(h.starts_with("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }"));
    }

    #[test]
    fn mask_png_roundtrip() {
        let m = vec![0u8, 1, 1, 0, 0, 1];
        let png = encode_mask_png(&m, 3, 2).unwrap();
        let dec = png::Decoder::new(std::io::Cursor::new(png));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0u8; r.output_buffer_size().unwrap()];
        let info = r.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, png::ColorType::Indexed);
        assert_eq!(&buf[..6], &m[..]);
    }
}
