//! PyTorch zip checkpoints (what `torch.save` writes): a zip archive with one top folder
//! holding `data.pkl` (the pickled object), `data/<key>` (one raw little-endian storage
//! per key), `byteorder` and `version`.
//!
//! Opening parses only `data.pkl` and builds an index (tensor → storage entry, dtype,
//! shape, strides, offset), checking that every view fits its storage. `read_f32` then
//! seeks to the bytes one tensor spans inside its entry and reads just those.

use std::collections::HashMap;
use std::fmt::Display;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Mutex;

use zip::{CompressionMethod, ZipArchive};

use super::pickle::{self, Obj, Pickle, PickleError, TensorRef, Value};
use super::safetensors_file::bytes_to_f32;
use super::{CheckpointFormat, StoredDtype, TensorInfo};
use crate::error::{Error, ErrorKind, Result};
use crate::weights::{missing_error, TensorF32};

/// Largest `data.pkl` read (a full SAM 2 checkpoint's is ~100 KB).
const MAX_PICKLE_BYTES: u64 = 1 << 30;
/// Views with more elements than their storage region (stride 0) are refused above this.
const MAX_BROADCAST_NUMEL: u64 = 1 << 26;
/// Longest tensor name accepted.
const MAX_NAME_LEN: usize = 4096;

/// An opened PyTorch zip checkpoint over any seekable reader (a file, or bytes).
pub struct TorchZipCheckpoint<R> {
    path: PathBuf,
    archive: Mutex<ZipArchive<R>>,
    entries: Vec<Entry>,
    tensors: Vec<TensorInfo>,
    layouts: HashMap<String, Layout>,
}

/// A storage entry of the archive.
struct Entry {
    index: usize,
    name: String,
    /// Bytes of (uncompressed) data.
    size: u64,
    /// Stored uncompressed (seekable), else deflated.
    stored: bool,
}

/// Where one tensor's data lies.
struct Layout {
    entry: usize,
    dtype: StoredDtype,
    shape: Vec<usize>,
    /// Strides in elements, 0 for dimensions of size 1.
    stride: Vec<usize>,
    /// Byte range of the entry the view spans.
    start: u64,
    len: u64,
    contiguous: bool,
}

fn bad(path: &Path, msg: impl Display) -> Error {
    Error::new(ErrorKind::Checkpoint, format!("'{}': {msg}", path.display()))
}

fn bad_src<E: std::error::Error + Send + Sync + 'static>(path: &Path, what: impl Display, e: E) -> Error {
    Error::with_source(ErrorKind::Checkpoint, format!("'{}': {what}: {e}", path.display()), e)
}

fn elem_size(d: StoredDtype) -> u64 {
    match d {
        StoredDtype::F64 | StoredDtype::I64 => 8,
        StoredDtype::F32 | StoredDtype::I32 => 4,
        StoredDtype::F16 | StoredDtype::BF16 => 2,
        StoredDtype::U8 | StoredDtype::Bool => 1,
    }
}

impl TorchZipCheckpoint<File> {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::io(path, "cannot open checkpoint", e))?;
        let len = file.metadata().map_err(|e| Error::io(path, "cannot read checkpoint", e))?.len();
        Self::from_reader(path, file, len)
    }
}

impl<R: Read + Seek> TorchZipCheckpoint<R> {
    /// Index the checkpoint in `reader` (`len` bytes long); `path` names it in messages.
    pub fn from_reader(path: &Path, reader: R, len: u64) -> Result<Self> {
        let mut zip = ZipArchive::new(reader).map_err(|e| bad_src(path, "not a readable zip archive", e))?;
        let Some(pkl_name) = find_data_pkl(&zip) else {
            return Err(bad(path, "the zip archive has no data.pkl entry, so it is not a PyTorch checkpoint"));
        };
        let prefix = pkl_name.strip_suffix("data.pkl").unwrap_or_default().to_string();
        check_byteorder(path, &mut zip, &format!("{prefix}byteorder"), len)?;

        let pkl =
            entry(path, &mut zip, &pkl_name, len)?.ok_or_else(|| bad(path, format!("entry '{pkl_name}' vanished")))?;
        if pkl.size > MAX_PICKLE_BYTES {
            return Err(bad(path, format!("'{pkl_name}' is {} bytes, more than a checkpoint needs", pkl.size)));
        }
        let data = read_range(path, &mut zip, &pkl, 0, pkl.size)?;
        let pickle_err = |e: PickleError| match e {
            PickleError::Malformed(m) => bad(path, format!("{pkl_name}: {m}")),
            PickleError::Unsupported(m) => {
                Error::new(ErrorKind::UnsupportedPickle, format!("'{}': {pkl_name}: {m}", path.display()))
            }
        };
        let found = pickle::parse(&data).and_then(|p| state_dict(&p)).map_err(pickle_err)?;

        let mut entries = Vec::new();
        let mut by_key: HashMap<Rc<str>, usize> = HashMap::new();
        let mut tensors = Vec::with_capacity(found.len());
        let mut layouts = HashMap::with_capacity(found.len());
        for (name, t) in found {
            let idx = match by_key.get(&t.storage.key) {
                Some(&i) => i,
                None => {
                    let entry_name = format!("{prefix}data/{}", t.storage.key);
                    let Some(e) = entry(path, &mut zip, &entry_name, len)? else {
                        return Err(bad(path, format!("tensor '{name}': storage entry '{entry_name}' is missing")));
                    };
                    entries.push(e);
                    by_key.insert(t.storage.key.clone(), entries.len() - 1);
                    entries.len() - 1
                }
            };
            let layout = layout(&t, idx, &entries[idx]).map_err(|m| bad(path, format!("tensor '{name}': {m}")))?;
            tensors.push(TensorInfo { name: name.clone(), dtype: layout.dtype, shape: layout.shape.clone() });
            layouts.insert(name, layout);
        }
        Ok(TorchZipCheckpoint { path: path.to_path_buf(), archive: Mutex::new(zip), entries, tensors, layouts })
    }
}

/// The tensors of the state dict: the dict under the top-level key `"model"` if there is
/// one, else the top-level dict itself. Non-tensor values are skipped; a repeated key keeps
/// its last value (as in Python). Sorted by name.
fn state_dict(p: &Pickle) -> std::result::Result<Vec<(String, TensorRef)>, PickleError> {
    let Some(root) = p.dict(&p.root) else {
        return Err(PickleError::Malformed("the pickle does not hold a dict".into()));
    };
    let is_model = |k: &Value| matches!(k, Value::Str(s) if &**s == "model");
    let model = root.iter().rev().find(|(k, _)| is_model(k)).and_then(|(_, v)| p.dict(v));
    let mut out: HashMap<&str, &TensorRef> = HashMap::new();
    for (k, v) in model.unwrap_or(root) {
        let (Value::Str(name), Value::Obj(i)) = (k, v) else { continue };
        let Some(Obj::Tensor(t)) = p.objs.get(*i) else { continue };
        if name.len() > MAX_NAME_LEN {
            return Err(PickleError::Malformed(format!("a tensor name is {} bytes long", name.len())));
        }
        out.insert(name, t);
    }
    let mut list: Vec<(String, TensorRef)> = out.into_iter().map(|(k, t)| (k.to_string(), t.clone())).collect();
    list.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(list)
}

/// `data.pkl` at the root or in one top folder (the shortest such name wins).
fn find_data_pkl<R: Read + Seek>(zip: &ZipArchive<R>) -> Option<String> {
    let in_top = |n: &str| match n.strip_suffix("/data.pkl") {
        Some(dir) => !dir.is_empty() && !dir.contains('/'),
        None => n == "data.pkl",
    };
    zip.file_names().filter(|n| in_top(n)).min_by_key(|n| n.len()).map(str::to_string)
}

/// Look up an entry: `None` if absent, an error if it cannot be read at all.
fn entry<R: Read + Seek>(path: &Path, zip: &mut ZipArchive<R>, name: &str, archive_len: u64) -> Result<Option<Entry>> {
    let Some(index) = zip.index_for_name(name) else { return Ok(None) };
    let f = zip.by_index_raw(index).map_err(|e| bad_src(path, format!("cannot read entry '{name}'"), e))?;
    if f.encrypted() {
        return Err(bad(path, format!("entry '{name}' is encrypted")));
    }
    let (stored, size) = match f.compression() {
        CompressionMethod::Stored => (true, f.compressed_size()),
        CompressionMethod::Deflated => (false, f.size()),
        m => return Err(bad(path, format!("entry '{name}' uses unsupported compression {m:?}"))),
    };
    if stored && size > archive_len {
        return Err(bad(path, format!("entry '{name}' claims {size} bytes but the file has {archive_len}")));
    }
    Ok(Some(Entry { index, name: name.to_string(), size, stored }))
}

/// Read `len` bytes at `start` of entry `e`: a seek for stored entries, a skip through
/// the decompressor for deflated ones. The buffer grows only with data actually read.
fn read_range<R: Read + Seek>(
    path: &Path,
    zip: &mut ZipArchive<R>,
    e: &Entry,
    start: u64,
    len: u64,
) -> Result<Vec<u8>> {
    let io_err = |err: io::Error| bad_src(path, format!("cannot read entry '{}'", e.name), err);
    let zip_err = |err: zip::result::ZipError| bad_src(path, format!("cannot read entry '{}'", e.name), err);
    let mut buf = Vec::new();
    if e.stored {
        // Stored sizes were checked against the file length, so reserving is safe.
        buf.reserve_exact(usize::try_from(len).map_err(|_| bad(path, "entry too large"))?);
        let mut f = zip.by_index_seek(e.index).map_err(zip_err)?;
        f.seek(SeekFrom::Start(start)).map_err(io_err)?;
        f.take(len).read_to_end(&mut buf).map_err(io_err)?;
    } else {
        let mut f = zip.by_index(e.index).map_err(zip_err)?;
        io::copy(&mut (&mut f).take(start), &mut io::sink()).map_err(io_err)?;
        f.take(len).read_to_end(&mut buf).map_err(io_err)?;
    }
    if buf.len() as u64 != len {
        return Err(bad(
            path,
            format!("entry '{}' is truncated: bytes {start}..{} expected, {} read", e.name, start + len, buf.len()),
        ));
    }
    Ok(buf)
}

fn check_byteorder<R: Read + Seek>(path: &Path, zip: &mut ZipArchive<R>, name: &str, len: u64) -> Result<()> {
    let Some(e) = entry(path, zip, name, len)? else { return Ok(()) };
    if e.size > 16 {
        return Err(bad(path, format!("entry '{name}' is {} bytes, not a byte order", e.size)));
    }
    let order = read_range(path, zip, &e, 0, e.size)?;
    match order.trim_ascii() {
        b"little" => Ok(()),
        b"big" => Err(bad(path, "big-endian checkpoints are not supported")),
        other => Err(bad(path, format!("unknown byte order {:?}", String::from_utf8_lossy(other)))),
    }
}

/// Check that view `t` fits entry `e` and find the byte range it spans.
fn layout(t: &TensorRef, entry: usize, e: &Entry) -> std::result::Result<Layout, String> {
    let es = elem_size(t.storage.dtype);
    let overflow = || format!("the view {:?} / {:?} overflows", t.shape, t.stride);
    let stride: Vec<usize> = t.shape.iter().zip(&t.stride).map(|(&d, &s)| if d == 1 { 0 } else { s }).collect();
    let numel = t.shape.iter().try_fold(1u64, |a, &d| a.checked_mul(d as u64)).ok_or_else(overflow)?;
    let (start, len) = if numel == 0 {
        (0, 0)
    } else {
        let mut last = t.offset as u64;
        for (&d, &s) in t.shape.iter().zip(&stride) {
            let span = (d as u64 - 1).checked_mul(s as u64).ok_or_else(overflow)?;
            last = last.checked_add(span).ok_or_else(overflow)?;
        }
        let start = (t.offset as u64).checked_mul(es).ok_or_else(overflow)?;
        let end = last.checked_add(1).and_then(|n| n.checked_mul(es)).ok_or_else(overflow)?;
        if end > e.size {
            return Err(format!(
                "shape {:?}, stride {:?}, offset {} needs bytes {start}..{end} of storage entry '{}', which has only {} bytes",
                t.shape, t.stride, t.offset, e.name, e.size
            ));
        }
        (start, end - start)
    };
    if numel > len / es && numel > MAX_BROADCAST_NUMEL {
        return Err(format!("{numel} elements over only {} stored ones (overlapping strides)", len / es));
    }
    let mut expect = 1usize;
    let mut contiguous = true;
    for (&d, &s) in t.shape.iter().zip(&stride).rev() {
        contiguous &= d == 1 || s == expect;
        expect = expect.saturating_mul(d);
    }
    Ok(Layout { entry, dtype: t.storage.dtype, shape: t.shape.clone(), stride, start, len, contiguous })
}

/// Elements of a strided view from the region it spans (which starts at the view's
/// first element; all strides are non-negative).
fn gather(region: &[f32], shape: &[usize], stride: &[usize]) -> Vec<f32> {
    let numel: usize = shape.iter().product();
    let mut out = Vec::with_capacity(numel);
    let mut idx = vec![0usize; shape.len()];
    let mut pos = 0usize;
    for _ in 0..numel {
        out.push(region.get(pos).copied().unwrap_or(f32::NAN));
        for d in (0..shape.len()).rev() {
            idx[d] += 1;
            pos = pos.wrapping_add(stride[d]);
            if idx[d] < shape[d] {
                break;
            }
            pos = pos.wrapping_sub(stride[d].wrapping_mul(shape[d]));
            idx[d] = 0;
        }
    }
    out
}

impl<R: Read + Seek> CheckpointFormat for TorchZipCheckpoint<R> {
    fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    fn read_f32(&self, name: &str) -> Result<TensorF32> {
        let Some(l) = self.layouts.get(name) else {
            return Err(missing_error(&format!("'{}'", self.path.display()), name));
        };
        let Some(e) = self.entries.get(l.entry) else {
            return Err(bad(&self.path, format!("tensor '{name}' has no storage entry")));
        };
        let bytes = {
            let mut zip = self.archive.lock().unwrap_or_else(|p| p.into_inner());
            read_range(&self.path, &mut zip, e, l.start, l.len)?
        };
        let region = bytes_to_f32(l.dtype, &bytes);
        let data = if l.contiguous { region } else { gather(&region, &l.shape, &l.stride) };
        Ok(TensorF32::new(l.shape.clone(), data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_follows_strides() {
        // A 2x3 row-major region read as its 3x2 transpose.
        let region = [0., 1., 2., 3., 4., 5.];
        assert_eq!(gather(&region, &[3, 2], &[1, 3]), vec![0., 3., 1., 4., 2., 5.]);
        assert_eq!(gather(&region, &[2, 2], &[3, 1]), vec![0., 1., 3., 4.]);
        assert_eq!(gather(&region, &[2, 3], &[0, 1]), vec![0., 1., 2., 0., 1., 2.]);
    }
}
