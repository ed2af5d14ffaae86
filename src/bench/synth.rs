//! `tamrt bench make-dataset`: a tiny deterministic dataset of moving shapes in the SA-V
//! or DAVIS layout, so the benchmark runs end to end without downloading anything.
//!
//! Each video has a textured gradient background and `objects` shapes (ellipse,
//! rectangle, triangle, ...) of distinct colours that move in straight lines and bounce
//! off the borders; later objects are drawn over earlier ones and the ground truth is
//! each object's visible part. The same options give byte-identical files (a SplitMix64
//! stream seeded from `seed` and the video index; JPEG encoding is deterministic).
//!
//! SA-V: every `annotate_every`-th frame is annotated (default 4, as SA-V's 6 fps out of
//! 24; lowered for short clips so that at least three frames are annotated: the SA-V rule
//! skips the first and the last). DAVIS: every frame, palette PNGs.

use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::eval::Format;

/// Options of `make-dataset`.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    pub out: PathBuf,
    pub format: Format,
    pub videos: usize,
    pub frames: usize,
    pub width: usize,
    pub height: usize,
    pub objects: usize,
    pub seed: u64,
    /// SA-V only; `None` = 4, or less for short clips.
    pub annotate_every: Option<usize>,
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, msg)
}

/// SplitMix64.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi).
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (self.next() >> 11) as f64 / (1u64 << 53) as f64 * (hi - lo)
    }
}

#[derive(Debug, Clone, Copy)]
enum Shape {
    Ellipse,
    Rect,
    Triangle,
    Diamond,
}

#[derive(Debug, Clone)]
struct Obj {
    shape: Shape,
    color: [f64; 3],
    /// Half extents.
    rx: f64,
    ry: f64,
    x: f64,
    y: f64,
    vx: f64,
    vy: f64,
}

impl Obj {
    fn contains(&self, px: f64, py: f64) -> bool {
        let (dx, dy) = ((px - self.x) / self.rx, (py - self.y) / self.ry);
        match self.shape {
            Shape::Ellipse => dx * dx + dy * dy <= 1.0,
            Shape::Rect => dx.abs() <= 1.0 && dy.abs() <= 1.0,
            Shape::Diamond => dx.abs() + dy.abs() <= 1.0,
            // apex up, base at dy = 1
            Shape::Triangle => (-1.0..=1.0).contains(&dy) && dx.abs() <= (dy + 1.0) / 2.0,
        }
    }

    fn step(&mut self, w: f64, h: f64) {
        self.x += self.vx;
        self.y += self.vy;
        if self.x - self.rx < 0.0 || self.x + self.rx > w {
            self.vx = -self.vx;
            self.x = self.x.clamp(self.rx, w - self.rx);
        }
        if self.y - self.ry < 0.0 || self.y + self.ry > h {
            self.vy = -self.vy;
            self.y = self.y.clamp(self.ry, h - self.ry);
        }
    }
}

const PALETTE: [[f64; 3]; 6] = [
    [230.0, 60.0, 50.0],
    [40.0, 170.0, 70.0],
    [50.0, 90.0, 220.0],
    [240.0, 200.0, 40.0],
    [190.0, 60.0, 200.0],
    [30.0, 200.0, 210.0],
];

/// Video folder name of video `i` (`synth_0000`).
pub fn video_name(i: usize) -> String {
    format!("synth_{i:04}")
}

/// Write the dataset; returns the video names.
pub fn make_dataset(o: &SynthOptions) -> Result<Vec<String>> {
    if o.videos == 0 || o.frames == 0 || o.objects == 0 {
        return Err(invalid("make-dataset: --videos, --frames and --objects must be at least 1"));
    }
    if o.objects > PALETTE.len() {
        return Err(invalid(format!("make-dataset: at most {} objects per video", PALETTE.len())));
    }
    if o.width < 16 || o.height < 16 || o.width > 8192 || o.height > 8192 {
        return Err(invalid("make-dataset: --size must be between 16x16 and 8192x8192"));
    }
    let every = match (o.format, o.annotate_every) {
        (Format::Davis, _) => 1,
        (Format::Sav, Some(0)) => return Err(invalid("make-dataset: --annotate-every must be at least 1")),
        (Format::Sav, Some(k)) => k,
        (Format::Sav, None) => (1..=4).rev().find(|k| (o.frames - 1) / k + 1 >= 3).unwrap_or(1),
    };
    if o.format == Format::Sav && (o.frames - 1) / every + 1 < 3 {
        return Err(invalid(format!(
            "make-dataset: {} frames annotated every {every} give fewer than 3 annotated frames; SA-V scoring skips \
             the first and the last, so nothing would be scored (use more --frames)",
            o.frames
        )));
    }
    let (fr, an) = super::dataset::layout_dirs(o.format);
    let mut names = Vec::new();
    for v in 0..o.videos {
        let name = video_name(v);
        let fdir = o.out.join(fr).join(&name);
        let adir = o.out.join(an).join(&name);
        mkdir(&fdir)?;
        mkdir(&adir)?;
        write_video(o, v, every, &fdir, &adir)?;
        names.push(name);
    }
    let list = names.join("\n") + "\n";
    let list_path = match o.format {
        Format::Sav => o.out.join("sav_val.txt"),
        Format::Davis => {
            mkdir(&o.out.join("ImageSets/2017"))?;
            o.out.join("ImageSets/2017/val.txt")
        }
    };
    std::fs::write(&list_path, list).map_err(|e| Error::io(&list_path, "cannot write", e))?;
    Ok(names)
}

fn mkdir(p: &Path) -> Result<()> {
    std::fs::create_dir_all(p).map_err(|e| Error::io(p, "cannot create folder", e))
}

fn write_video(o: &SynthOptions, v: usize, every: usize, fdir: &Path, adir: &Path) -> Result<()> {
    let (w, h) = (o.width, o.height);
    let (wf, hf) = (w as f64, h as f64);
    let mut rng = Rng(o.seed ^ (v as u64 + 1).wrapping_mul(0xA076_1D64_78BD_642F));
    // background: two-colour gradient + a few soft blobs
    let c0 = [rng.range(20.0, 120.0), rng.range(20.0, 120.0), rng.range(20.0, 120.0)];
    let c1 = [rng.range(100.0, 220.0), rng.range(100.0, 220.0), rng.range(100.0, 220.0)];
    let blobs: Vec<(f64, f64, f64, f64)> = (0..4)
        .map(|_| (rng.range(0.0, wf), rng.range(0.0, hf), rng.range(0.1, 0.3) * wf, rng.range(-40.0, 40.0)))
        .collect();
    let mut bg = vec![0f64; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            let t = (x as f64 / wf + y as f64 / hf) / 2.0;
            let mut add = 0.0;
            for &(bx, by, r, a) in &blobs {
                let d2 = ((x as f64 - bx).powi(2) + (y as f64 - by).powi(2)) / (r * r);
                add += a * (-d2).exp();
            }
            let stripes = 8.0 * ((x as f64 * 0.35).sin() * (y as f64 * 0.27).cos());
            for c in 0..3 {
                bg[(y * w + x) * 3 + c] = c0[c] * (1.0 - t) + c1[c] * t + add + stripes;
            }
        }
    }
    // objects: start spread along the diagonal so that every one is visible on frame 0
    let n = o.objects;
    let shapes = [Shape::Ellipse, Shape::Rect, Shape::Triangle, Shape::Diamond];
    let mut objs: Vec<Obj> = (0..n)
        .map(|i| {
            let rx = (wf * rng.range(0.09, 0.16)).max(3.0);
            let ry = (hf * rng.range(0.10, 0.18)).max(3.0);
            let fx = (i as f64 + 0.5) / n as f64;
            let speed = (wf.min(hf) * 0.03).max(1.0);
            Obj {
                shape: shapes[(i + v) % shapes.len()],
                color: PALETTE[i],
                rx,
                ry,
                x: (fx * wf).clamp(rx, wf - rx),
                y: (hf * (0.3 + 0.4 * fx)).clamp(ry, hf - ry),
                vx: rng.range(-1.0, 1.0) * speed,
                vy: rng.range(-1.0, 1.0) * speed,
            }
        })
        .collect();
    let mut rgb = vec![0u8; w * h * 3];
    let mut label = vec![0u8; w * h];
    for f in 0..o.frames {
        label.iter_mut().for_each(|l| *l = 0);
        for y in 0..h {
            for x in 0..w {
                let (px, py) = (x as f64 + 0.5, y as f64 + 0.5);
                let mut col = [bg[(y * w + x) * 3], bg[(y * w + x) * 3 + 1], bg[(y * w + x) * 3 + 2]];
                for (k, ob) in objs.iter().enumerate() {
                    if ob.contains(px, py) {
                        // a little shading so that objects are not flat
                        let shade = 1.0 + 0.15 * ((px - ob.x) / ob.rx - (py - ob.y) / ob.ry) / 2.0;
                        col = ob.color.map(|c| c * shade);
                        label[y * w + x] = k as u8 + 1;
                    }
                }
                for c in 0..3 {
                    rgb[(y * w + x) * 3 + c] = col[c].round().clamp(0.0, 255.0) as u8;
                }
            }
        }
        let stem = format!("{f:05}");
        let jpg = fdir.join(format!("{stem}.jpg"));
        let file = std::fs::File::create(&jpg).map_err(|e| Error::io(&jpg, "cannot create", e))?;
        let mut enc = image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(file), 92);
        enc.encode(&rgb, w as u32, h as u32, image::ExtendedColorType::Rgb8)
            .map_err(|e| invalid(format!("cannot encode '{}': {e}", jpg.display())))?;
        match o.format {
            Format::Davis => crate::eval::png::write_indexed(&adir.join(format!("{stem}.png")), w, h, &label)?,
            Format::Sav if f % every == 0 => {
                for k in 0..n {
                    let odir = adir.join(format!("{k:03}"));
                    mkdir(&odir)?;
                    let m: Vec<u8> = label.iter().map(|&l| u8::from(l as usize == k + 1)).collect();
                    let png = crate::tracker::output::encode_mask_png(&m, w, h)?;
                    let p = odir.join(format!("{stem}.png"));
                    std::fs::write(&p, png).map_err(|e| Error::io(&p, "cannot write", e))?;
                }
            }
            Format::Sav => {}
        }
        for ob in &mut objs {
            ob.step(wf, hf);
        }
    }
    Ok(())
}
