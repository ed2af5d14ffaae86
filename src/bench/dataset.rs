//! Benchmark datasets on disk: SA-V val/test and DAVIS 2017 layouts.
//!
//! * SA-V (`sav_dataset/README.md`): `ROOT/JPEGImages_24fps/{video}/{frame:05}.jpg` and
//!   `ROOT/Annotations_6fps/{video}/{obj:03}/{frame:05}.png` (one binary PNG per object
//!   and annotated frame; every 4th frame is annotated).
//! * DAVIS: `ROOT/JPEGImages/480p/{video}/{frame}.jpg` and
//!   `ROOT/Annotations/480p/{video}/{frame}.png` (palette indices = object ids, 255 void).
//!
//! Every selected video is checked before any inference: frames present, annotations
//! present, annotation size = frame size, every annotated frame has a video frame.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::eval::png::{dimensions, Decoder, Raster};
use crate::eval::Format;
use crate::tracker::frames::FRAME_EXTENSIONS;

fn invalid(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, msg)
}

/// (frames folder, annotations folder) relative to the dataset root.
pub fn layout_dirs(format: Format) -> (&'static str, &'static str) {
    match format {
        Format::Sav => ("JPEGImages_24fps", "Annotations_6fps"),
        Format::Davis => ("JPEGImages/480p", "Annotations/480p"),
    }
}

/// A dataset root in one of the two layouts.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub root: PathBuf,
    pub format: Format,
    pub frames_root: PathBuf,
    pub ann_root: PathBuf,
    /// Every video folder under the frames or the annotations root, sorted.
    pub videos: Vec<String>,
}

/// One object of a video's ground truth.
#[derive(Debug, Clone)]
pub struct GtObject {
    pub id: u32,
    /// SA-V: the object folder name (`"000"`); DAVIS: the label.
    pub name: String,
}

/// A video checked against its annotations.
#[derive(Debug, Clone)]
pub struct Video {
    pub name: String,
    pub frames_dir: PathBuf,
    pub ann_dir: PathBuf,
    /// Frame file stems in numeric (or name) order.
    pub frame_stems: Vec<String>,
    pub width: usize,
    pub height: usize,
    pub objects: Vec<GtObject>,
    /// Stems of the frames that have annotations (sorted, union over objects).
    pub annotated: BTreeSet<String>,
}

fn subdirs(dir: &Path) -> Result<Vec<String>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "cannot list folder", e))?;
    let mut out = Vec::new();
    for ent in rd {
        let p = ent.map_err(|e| Error::io(dir, "cannot list folder", e))?.path();
        if p.is_dir() {
            if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                if !n.starts_with('.') {
                    out.push(n.to_string());
                }
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Files of `dir` whose extension (lowercase) is one of `exts`, as (stem, file name),
/// sorted numerically when every stem is a number, else by name.
pub fn list_files(dir: &Path, exts: &[&str]) -> Result<Vec<(String, String)>> {
    let rd = std::fs::read_dir(dir).map_err(|e| Error::io(dir, "cannot list folder", e))?;
    let mut out = Vec::new();
    for ent in rd {
        let p = ent.map_err(|e| Error::io(dir, "cannot list folder", e))?.path();
        let ext = p.extension().and_then(|e| e.to_str()).map(|e| e.to_ascii_lowercase());
        if p.is_file() && ext.is_some_and(|e| exts.contains(&e.as_str())) {
            let stem = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            let name = p.file_name().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            out.push((stem, name));
        }
    }
    if out.iter().all(|(s, _)| s.parse::<u64>().is_ok()) {
        out.sort_by_key(|(s, n)| (s.parse::<u64>().unwrap_or(0), n.clone()));
    } else {
        out.sort();
    }
    Ok(out)
}

impl Dataset {
    /// Open `root` in `format`, or detect the layout. A folder in neither layout is an
    /// error that says what each layout needs and what is missing.
    pub fn open(root: &Path, format: Option<Format>) -> Result<Dataset> {
        if !root.is_dir() {
            return Err(invalid(format!("dataset folder '{}' not found (or not a folder)", root.display())));
        }
        let missing = |f: Format| -> Vec<String> {
            let (fr, an) = layout_dirs(f);
            [fr, an].iter().filter(|d| !root.join(d).is_dir()).map(|d| format!("{d}/")).collect()
        };
        let format = match format {
            Some(f) => {
                let m = missing(f);
                if !m.is_empty() {
                    let (fr, an) = layout_dirs(f);
                    return Err(invalid(format!(
                        "dataset folder '{}' is not in the {} layout: missing {} (expected {}/{{video}}/ and {}/{{video}}/)",
                        root.display(),
                        f.name(),
                        m.join(" and "),
                        fr,
                        an
                    )));
                }
                f
            }
            None => match (missing(Format::Sav), missing(Format::Davis)) {
                (m, _) if m.is_empty() => Format::Sav,
                (_, m) if m.is_empty() => Format::Davis,
                (ms, md) => {
                    return Err(invalid(format!(
                        "dataset folder '{}' is in neither layout: SA-V needs JPEGImages_24fps/ and Annotations_6fps/ \
                         (missing {}); DAVIS needs JPEGImages/480p/ and Annotations/480p/ (missing {})",
                        root.display(),
                        ms.join(" and "),
                        md.join(" and ")
                    )))
                }
            },
        };
        let (fr, an) = layout_dirs(format);
        let (frames_root, ann_root) = (root.join(fr), root.join(an));
        let mut videos: BTreeSet<String> = subdirs(&frames_root)?.into_iter().collect();
        videos.extend(subdirs(&ann_root)?);
        if videos.is_empty() {
            return Err(invalid(format!(
                "dataset folder '{}' has no videos: no folders in {fr}/ or {an}/",
                root.display()
            )));
        }
        Ok(Dataset { root: root.to_path_buf(), format, frames_root, ann_root, videos: videos.into_iter().collect() })
    }

    /// Check one video: frames, annotations, sizes. Reads every annotation header.
    pub fn video(&self, name: &str) -> Result<Video> {
        let frames_dir = self.frames_root.join(name);
        let ann_dir = self.ann_root.join(name);
        let what = format!("video '{name}'");
        if !frames_dir.is_dir() {
            return Err(invalid(format!("{what} has annotations but no frames folder '{}'", frames_dir.display())));
        }
        let frames = list_files(&frames_dir, FRAME_EXTENSIONS)?;
        if frames.is_empty() {
            return Err(invalid(format!("{what} has no frames (*.jpg, *.png) in '{}'", frames_dir.display())));
        }
        let (w, h) = image::image_dimensions(frames_dir.join(&frames[0].1)).map_err(|e| {
            invalid(format!("{what}: frame '{}' is not a readable image: {e}", frames_dir.join(&frames[0].1).display()))
        })?;
        let (width, height) = (w as usize, h as usize);
        let frame_stems: Vec<String> = frames.into_iter().map(|(s, _)| s).collect();
        let stem_set: BTreeSet<&str> = frame_stems.iter().map(|s| s.as_str()).collect();
        if !ann_dir.is_dir() {
            return Err(invalid(format!("{what} has no annotations: folder '{}' does not exist", ann_dir.display())));
        }
        let mut annotated = BTreeSet::new();
        let mut check = |path: &Path, stem: &str| -> Result<()> {
            if !stem_set.contains(stem) {
                return Err(invalid(format!(
                    "{what}: annotation '{}' has no video frame '{stem}' in '{}'",
                    path.display(),
                    frames_dir.display()
                )));
            }
            let mut head = vec![0u8; 64];
            let n = read_prefix(path, &mut head)?;
            let (aw, ah) = dimensions(&head[..n]).map_err(|e| e.context(format!("annotation '{}'", path.display())))?;
            if (aw, ah) != (width, height) {
                return Err(invalid(format!(
                    "{what}: annotation '{}' is {aw}x{ah} but the frames are {width}x{height}",
                    path.display()
                )));
            }
            annotated.insert(stem.to_string());
            Ok(())
        };
        let mut objects = Vec::new();
        match self.format {
            Format::Sav => {
                let objs = subdirs(&ann_dir)?;
                if objs.is_empty() {
                    return Err(invalid(format!(
                        "{what} has no annotations: no object folders in '{}' (expected {{obj:03}}/{{frame:05}}.png)",
                        ann_dir.display()
                    )));
                }
                for o in objs {
                    let id = o.parse::<u32>().map_err(|_| {
                        invalid(format!("{what}: object folder '{}' is not a number", ann_dir.join(&o).display()))
                    })?;
                    let pngs = list_files(&ann_dir.join(&o), &["png"])?;
                    if pngs.is_empty() {
                        return Err(invalid(format!(
                            "{what} object '{o}' has no annotations: no PNG in '{}'",
                            ann_dir.join(&o).display()
                        )));
                    }
                    for (stem, file) in &pngs {
                        check(&ann_dir.join(&o).join(file), stem)?;
                    }
                    objects.push(GtObject { id, name: o });
                }
            }
            Format::Davis => {
                let pngs = list_files(&ann_dir, &["png"])?;
                if pngs.is_empty() {
                    return Err(invalid(format!("{what} has no annotations: no PNG in '{}'", ann_dir.display())));
                }
                for (stem, file) in &pngs {
                    check(&ann_dir.join(file), stem)?;
                }
                // davis2017-evaluation: objects are 1..=max label of the first annotation
                let first = read_raster(&ann_dir.join(&pngs[0].1))?;
                let max = first.data.iter().copied().filter(|&v| v != 255).max().unwrap_or(0);
                if max == 0 {
                    return Err(invalid(format!(
                        "{what} has no annotated object: the first annotation '{}' is all background",
                        ann_dir.join(&pngs[0].1).display()
                    )));
                }
                objects = (1..=max as u32).map(|id| GtObject { id, name: id.to_string() }).collect();
            }
        }
        Ok(Video { name: name.to_string(), frames_dir, ann_dir, frame_stems, width, height, objects, annotated })
    }
}

fn read_prefix(path: &Path, buf: &mut [u8]) -> Result<usize> {
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| Error::io(path, "cannot open annotation", e))?;
    let mut n = 0;
    while n < buf.len() {
        let k = f.read(&mut buf[n..]).map_err(|e| Error::io(path, "cannot read annotation", e))?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

/// Decode an annotation PNG to one byte per pixel (palette indices kept).
pub fn read_raster(path: &Path) -> Result<Raster> {
    let mut r = Raster::default();
    let mut buf = Vec::new();
    Decoder::default().read_into(path, &mut buf, &mut r)?;
    Ok(r)
}

impl Video {
    /// Index of a frame stem in the video.
    pub fn frame_index(&self, stem: &str) -> Option<usize> {
        self.frame_stems.iter().position(|s| s == stem)
    }

    /// The first annotated frame where `obj` is visible, with its mask (row-major,
    /// frame size). `None` when the object is empty in every annotation.
    pub fn first_mask(&self, obj: &GtObject) -> Result<Option<(usize, Vec<bool>)>> {
        let obj_dir = self.ann_dir.join(&obj.name);
        let (dir, label) = if obj_dir.is_dir() {
            (obj_dir, None)
        } else {
            let l = obj.name.parse::<u8>().map_err(|_| {
                invalid(format!("video '{}': object '{}' is neither a folder nor a label", self.name, obj.name))
            })?;
            (self.ann_dir.clone(), Some(l))
        };
        for (stem, file) in list_files(&dir, &["png"])? {
            let r = read_raster(&dir.join(&file))?;
            if (r.width, r.height) != (self.width, self.height) {
                return Err(invalid(format!(
                    "video '{}': annotation '{}' is {}x{} but the frames are {}x{}",
                    self.name,
                    dir.join(&file).display(),
                    r.width,
                    r.height,
                    self.width,
                    self.height
                )));
            }
            let mask: Vec<bool> = match label {
                None => r.data.iter().map(|&v| v != 0).collect(),
                Some(l) => r.data.iter().map(|&v| v == l).collect(),
            };
            if mask.iter().any(|&m| m) {
                let idx = self.frame_index(&stem).ok_or_else(|| {
                    invalid(format!("video '{}': annotation frame '{stem}' has no video frame", self.name))
                })?;
                return Ok(Some((idx, mask)));
            }
        }
        Ok(None)
    }
}

/// Parse `--shard K/N` (1-based K).
pub fn parse_shard(s: &str) -> Result<(usize, usize)> {
    let bad = || invalid(format!("--shard '{s}': expected K/N with 1 <= K <= N (e.g. 1/4)"));
    let (k, n) = s.split_once('/').ok_or_else(bad)?;
    let (k, n) = (k.trim().parse::<usize>().map_err(|_| bad())?, n.trim().parse::<usize>().map_err(|_| bad())?);
    if n == 0 || k == 0 || k > n {
        return Err(bad());
    }
    Ok((k, n))
}

/// Which videos to run: `wanted` (names, or a file listing names one per line, e.g.
/// `sav_val.txt`), then shard K of N (round robin over the sorted list: video i goes to
/// shard `i % N + 1`), then at most `limit`.
pub fn select_videos(
    all: &[String],
    wanted: Option<&[String]>,
    shard: Option<(usize, usize)>,
    limit: Option<usize>,
) -> Result<Vec<String>> {
    let mut list: Vec<String> = match wanted {
        None => all.to_vec(),
        Some(w) => {
            let mut names = Vec::new();
            for item in w {
                let p = Path::new(item);
                if p.is_file() {
                    let text = std::fs::read_to_string(p).map_err(|e| Error::io(p, "cannot read video list", e))?;
                    names.extend(text.lines().map(str::trim).filter(|l| !l.is_empty()).map(String::from));
                } else {
                    names.push(item.clone());
                }
            }
            let unknown: Vec<&String> = names.iter().filter(|n| all.binary_search(n).is_err()).collect();
            if !unknown.is_empty() {
                let shown: Vec<&str> = unknown.iter().take(10).map(|s| s.as_str()).collect();
                let known: Vec<&str> = all.iter().take(10).map(|s| s.as_str()).collect();
                return Err(invalid(format!(
                    "--videos: {} unknown video(s): {} (the dataset has {} videos: {}{})",
                    unknown.len(),
                    shown.join(", "),
                    all.len(),
                    known.join(", "),
                    if all.len() > 10 { ", ..." } else { "" }
                )));
            }
            let mut seen = BTreeSet::new();
            names.retain(|n| seen.insert(n.clone()));
            names.sort();
            names
        }
    };
    if let Some((k, n)) = shard {
        list = list.into_iter().enumerate().filter(|(i, _)| i % n == k - 1).map(|(_, v)| v).collect();
    }
    if let Some(l) = limit {
        list.truncate(l);
    }
    Ok(list)
}
