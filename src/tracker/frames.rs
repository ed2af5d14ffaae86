//! Video frames: a folder of JPEG/PNG files, probed up front (names, one common size)
//! and decoded on demand; preprocessing exactly as sam2 1.1.0's
//! `sam2.utils.misc._load_img_as_tensor` + `load_video_frames` (PIL `convert("RGB")`,
//! `resize((S, S))`, `/ 255`, ImageNet mean/std); and a bounded prefetch thread so that
//! at most `max_frames_in_mem` decoded frames are held at once.

use std::path::{Path, PathBuf};
use std::sync::mpsc;

use crate::error::{Error, ErrorKind, Result};

use super::resize::pil_resize_rgb8;

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, msg)
}

/// A decoded frame: 8-bit RGB, row-major `[h][w][3]`.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbFrame {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

/// Where frames come from. The tracker only needs random access by index.
pub trait FrameSource: Sync {
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Common frame size (width, height).
    fn size(&self) -> (usize, usize);
    /// Name used for output files (the file stem for folders).
    fn name(&self, index: usize) -> &str;
    /// Decode frame `index`. Errors name the frame.
    fn load(&self, index: usize) -> Result<RgbFrame>;
}

/// Frames in a folder: `*.jpg|*.jpeg|*.png` (any case). Sorted numerically when every
/// stem is an integer (what sam2 1.1.0 does: `sort(key=int(stem))`), by name otherwise.
#[derive(Debug, Clone)]
pub struct FrameDir {
    dir: PathBuf,
    files: Vec<PathBuf>,
    stems: Vec<String>,
    width: usize,
    height: usize,
}

/// Frame file extensions read.
pub const FRAME_EXTENSIONS: &[&str] = &["jpg", "jpeg", "png"];

impl FrameDir {
    /// List the folder and read every frame's header: errors (missing or empty folder,
    /// unreadable image, frames of different sizes) come before any work is done.
    pub fn open(dir: &Path) -> Result<FrameDir> {
        let rd = std::fs::read_dir(dir).map_err(|e| {
            Error::with_source(
                ErrorKind::InvalidInput,
                format!("frames folder '{}' cannot be read: {e}", dir.display()),
                e,
            )
        })?;
        let mut files = Vec::new();
        for ent in rd {
            let p = ent.map_err(|e| Error::io(dir, "cannot list frames folder", e))?.path();
            let ext = p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
            if p.is_file() && ext.is_some_and(|e| FRAME_EXTENSIONS.contains(&e.as_str())) {
                files.push(p);
            }
        }
        if files.is_empty() {
            return Err(invalid(format!("frames folder '{}' has no frames (*.jpg, *.jpeg or *.png)", dir.display())));
        }
        let stem = |p: &PathBuf| p.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if files.iter().all(|p| stem(p).parse::<u64>().is_ok()) {
            files.sort_by_key(|p| (stem(p).parse::<u64>().unwrap_or(0), p.clone()));
        } else {
            files.sort();
        }
        let stems: Vec<String> = files.iter().map(stem).collect();
        for w in stems.windows(2) {
            if w[0] == w[1] {
                return Err(invalid(format!(
                    "frames folder '{}' has two frames named '{}' (outputs are named by stem)",
                    dir.display(),
                    w[0]
                )));
            }
        }
        let mut size = None;
        for (i, f) in files.iter().enumerate() {
            let (w, h) = image::image_dimensions(f)
                .map_err(|e| invalid(format!("frame {i} '{}' is not a readable image: {e}", f.display())))?;
            let (w, h) = (w as usize, h as usize);
            match size {
                None => size = Some((w, h, i)),
                Some((w0, h0, i0)) if (w0, h0) != (w, h) => {
                    return Err(invalid(format!(
                        "frames differ in size: frame {i} '{}' is {w}x{h}, frame {i0} '{}' is {w0}x{h0}",
                        f.display(),
                        files[i0].display()
                    )))
                }
                _ => {}
            }
        }
        let (width, height, _) = size.expect("non-empty");
        Ok(FrameDir { dir: dir.to_path_buf(), files, stems, width, height })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, index: usize) -> &Path {
        &self.files[index]
    }
}

impl FrameSource for FrameDir {
    fn len(&self) -> usize {
        self.files.len()
    }
    fn size(&self) -> (usize, usize) {
        (self.width, self.height)
    }
    fn name(&self, index: usize) -> &str {
        &self.stems[index]
    }
    fn load(&self, index: usize) -> Result<RgbFrame> {
        let f = &self.files[index];
        let img = decode_rgb8(f).map_err(|e| e.context(format!("frame {index}")))?;
        if (img.width, img.height) != (self.width, self.height) {
            return Err(invalid(format!(
                "frame {index} '{}' decodes to {}x{}, the video is {}x{}",
                f.display(),
                img.width,
                img.height,
                self.width,
                self.height
            )));
        }
        Ok(img)
    }
}

/// Decode an image file to 8-bit RGB as PIL's `convert("RGB")` does for 8-bit images
/// (gray replicated, alpha dropped, palettes expanded). PNG is lossless, so PNG frames
/// equal PIL's pixels; JPEG is decoded by the `image` crate (zune-jpeg), which differs
/// from PIL's libjpeg-turbo by a few levels on some pixels. 16-bit images are scaled to
/// 8 bits by the `image` crate (PIL's conversion of them may differ).
pub fn decode_rgb8(path: &Path) -> Result<RgbFrame> {
    let img = image::ImageReader::open(path)
        .map_err(|e| Error::io(path, "cannot open image", e))?
        .with_guessed_format()
        .map_err(|e| Error::io(path, "cannot read image", e))?
        .decode()
        .map_err(|e| invalid(format!("'{}' cannot be decoded: {e}", path.display())))?;
    let (width, height) = (img.width() as usize, img.height() as usize);
    let data = match img {
        image::DynamicImage::ImageRgb8(b) => b.into_raw(),
        other => other.to_rgb8().into_raw(),
    };
    Ok(RgbFrame { width, height, data })
}

/// A frame as the image encoder takes it: `[1, 3, S, S]` fp32, `(x / 255 - mean) / std`.
pub fn preprocess(frame: &RgbFrame, image_size: usize, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let resized = pil_resize_rgb8(&frame.data, frame.width, frame.height, image_size, image_size);
    normalize_resized(&resized, image_size, mean, std)
}

/// Normalise an already resized RGB8 `[S][S][3]` image into planar `[3, S, S]`.
pub fn normalize_resized(resized: &[u8], image_size: usize, mean: [f32; 3], std: [f32; 3]) -> Vec<f32> {
    let n = image_size * image_size;
    let mut out = vec![0f32; 3 * n];
    for c in 0..3 {
        let plane = &mut out[c * n..(c + 1) * n];
        for (i, v) in plane.iter_mut().enumerate() {
            // numpy: uint8 / 255.0 in float64, then torch float32; then -= mean, /= std in fp32
            let x = (resized[i * 3 + c] as f64 / 255.0) as f32;
            *v = (x - mean[c]) / std[c];
        }
    }
    out
}

/// Frames decoded (and resized to S×S unless the backend preprocesses them itself)
/// ahead of the tracker by one thread, in a given order. At most `depth` frames wait in
/// the queue (plus the one the tracker holds).
pub struct Prefetcher<'s> {
    rx: Option<mpsc::Receiver<(usize, Result<RgbFrame>)>>,
    source: &'s dyn FrameSource,
    resize_to: Option<usize>,
}

/// `f` resized to `size`×`size` (Pillow bicubic), or as it is.
fn prepared(f: RgbFrame, resize_to: Option<usize>) -> RgbFrame {
    match resize_to {
        Some(s) => RgbFrame { width: s, height: s, data: pil_resize_rgb8(&f.data, f.width, f.height, s, s) },
        None => f,
    }
}

impl<'s> Prefetcher<'s> {
    /// Start decoding `order` on a scoped thread (each frame resized to S×S with
    /// `resize_to = Some(S)`); `depth` = 0 decodes synchronously.
    pub fn start<'scope>(
        scope: &'scope std::thread::Scope<'scope, '_>,
        source: &'s dyn FrameSource,
        order: Vec<usize>,
        resize_to: Option<usize>,
        depth: usize,
    ) -> Prefetcher<'s>
    where
        's: 'scope,
    {
        if depth == 0 {
            return Prefetcher { rx: None, source, resize_to };
        }
        let (tx, rx) = mpsc::sync_channel(depth);
        scope.spawn(move || {
            for i in order {
                let r = source.load(i).map(|f| prepared(f, resize_to));
                let failed = r.is_err();
                if tx.send((i, r)).is_err() || failed {
                    break;
                }
            }
        });
        Prefetcher { rx: Some(rx), source, resize_to }
    }

    /// The next frame in the order (must be asked in order).
    pub fn next(&mut self, expected: usize) -> Result<RgbFrame> {
        match &self.rx {
            None => Ok(prepared(self.source.load(expected)?, self.resize_to)),
            Some(rx) => match rx.recv() {
                Ok((i, r)) if i == expected => r,
                Ok((i, _)) => Err(Error::new(
                    ErrorKind::InvalidInput,
                    format!("frame prefetch out of order: got {i}, expected {expected}"),
                )),
                Err(_) => Err(Error::new(ErrorKind::InvalidInput, format!("frame {expected}: frame reader stopped"))),
            },
        }
    }
}
