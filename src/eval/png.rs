//! Single-channel PNG masks: a reader that yields one byte per pixel with the values
//! `numpy.array(PIL.Image.open(path))` gives, and a small writer.
//!
//! Read: palette images of any bit depth (indices, as PIL), 8-bit grayscale, 1-bit
//! grayscale (0/1: PIL's mode "1"), 2/4-bit grayscale (scaled to 0..255 as PIL does),
//! 16-bit grayscale with values ≤ 255. Colour or alpha images and interlaced files are
//! rejected with an error naming the file's kind: PIL would give a 3-D array, which
//! neither official evaluator can score.

use std::path::Path;

use super::deflate::zlib_rle;
use super::inflate::Inflater;
use crate::error::{Error, ErrorKind, Result};

const SIGNATURE: [u8; 8] = [137, 80, 78, 71, 13, 10, 26, 10];

fn bad(msg: impl Into<String>) -> Error {
    Error::new(ErrorKind::InvalidInput, msg)
}

/// Width and height from the IHDR chunk, without decoding.
pub fn dimensions(bytes: &[u8]) -> Result<(usize, usize)> {
    let h = header(bytes)?;
    Ok((h.width, h.height))
}

#[derive(Clone, Copy)]
struct Header {
    width: usize,
    height: usize,
    depth: u8,
    color: u8,
}

fn header(bytes: &[u8]) -> Result<Header> {
    if bytes.len() < 33 || bytes[..8] != SIGNATURE {
        return Err(bad("not a PNG file"));
    }
    if &bytes[12..16] != b"IHDR" {
        return Err(bad("PNG without IHDR"));
    }
    let d = &bytes[16..29];
    let width = u32::from_be_bytes([d[0], d[1], d[2], d[3]]) as usize;
    let height = u32::from_be_bytes([d[4], d[5], d[6], d[7]]) as usize;
    let (depth, color, interlace) = (d[8], d[9], d[12]);
    if width == 0 || height == 0 || width > 1 << 16 || height > 1 << 16 {
        return Err(bad(format!("unsupported PNG size {width}x{height}")));
    }
    let kind = match color {
        0 if matches!(depth, 1 | 2 | 4 | 8 | 16) => None,
        3 if matches!(depth, 1 | 2 | 4 | 8) => None,
        0 | 3 => Some(format!("invalid bit depth {depth}")),
        2 => Some("an RGB image".to_string()),
        4 => Some("a grayscale+alpha image".to_string()),
        6 => Some("an RGBA image".to_string()),
        _ => Some(format!("colour type {color}")),
    };
    if let Some(k) = kind {
        return Err(bad(format!("PNG is {k}; masks must be single-channel (palette indices or grayscale)")));
    }
    if interlace != 0 {
        return Err(bad("interlaced PNGs are not supported"));
    }
    if d[10] != 0 || d[11] != 0 {
        return Err(bad("unknown PNG compression or filter method"));
    }
    Ok(Header { width, height, depth, color })
}

/// Receives the decoded rows of a PNG, one byte per pixel, top to bottom.
pub trait RowSink {
    /// Called once before the first row.
    fn begin(&mut self, width: usize, height: usize);
    fn row(&mut self, y: usize, pixels: &[u8]);
    /// A row known to be all zeros (`zeros` is such a row); sinks may skip looking at it.
    fn zero_row(&mut self, y: usize, zeros: &[u8]) {
        self.row(y, zeros);
    }
    /// A row whose pixels outside `lo..hi` are known to be zero.
    fn row_span(&mut self, y: usize, pixels: &[u8], lo: usize, hi: usize) {
        let _ = (lo, hi);
        self.row(y, pixels);
    }
}

/// A decoded mask held in memory (row-major, one byte per pixel).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Raster {
    pub width: usize,
    pub height: usize,
    pub data: Vec<u8>,
}

impl Raster {
    #[inline]
    pub fn row(&self, y: usize) -> &[u8] {
        &self.data[y * self.width..(y + 1) * self.width]
    }
}

impl RowSink for Raster {
    fn begin(&mut self, width: usize, height: usize) {
        self.width = width;
        self.height = height;
        self.data.clear();
        self.data.reserve(width * height);
    }

    fn row(&mut self, _y: usize, pixels: &[u8]) {
        self.data.extend_from_slice(pixels);
    }
}

/// Output is handed to the sink every this many inflated bytes (stays in L1/L2 cache).
const CHUNK: usize = 16 << 10;

/// Reusable decoder (buffers and Huffman tables); one per worker thread.
#[derive(Default)]
pub struct Decoder {
    inflater: Inflater,
    idat: Vec<u8>,
    /// Sliding window of inflated (filtered) image data.
    raw: Vec<u8>,
    /// Unfiltered rows (previous and current) and the expanded pixel row.
    rows: [Vec<u8>; 2],
    px: Vec<u8>,
    zeros: Vec<u8>,
}

/// Where the previous unfiltered row lives.
#[derive(Clone, Copy)]
enum Prev {
    None,
    /// `raw[off..off + row_bytes]` (rows with filter 0 are used in place).
    Raw(usize),
    Buf(usize),
}

impl Decoder {
    /// Decode a PNG held in memory into a [`Raster`].
    pub fn decode(&mut self, bytes: &[u8]) -> Result<Raster> {
        let mut r = Raster::default();
        self.decode_into(bytes, &mut r)?;
        Ok(r)
    }

    /// Decode a PNG held in memory, streaming its rows into `sink`; returns (width, height).
    pub fn decode_into(&mut self, bytes: &[u8], sink: &mut impl RowSink) -> Result<(usize, usize)> {
        let h = header(bytes)?;
        self.idat.clear();
        let mut p = 8;
        let mut seen_idat = false;
        loop {
            let head = bytes.get(p..p + 8).ok_or_else(|| bad("truncated PNG (no IEND chunk)"))?;
            let n = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
            let kind = &head[4..8];
            let body = bytes.get(p + 8..p + 8 + n).ok_or_else(|| bad("truncated PNG chunk"))?;
            match kind {
                b"IDAT" => {
                    self.idat.extend_from_slice(body);
                    seen_idat = true;
                }
                b"IEND" => break,
                _ => {}
            }
            p += 12 + n;
        }
        if !seen_idat {
            return Err(bad("PNG without image data"));
        }
        let row_bytes = (h.width * h.depth as usize).div_ceil(8);
        let pitch = row_bytes + 1;
        let bpp = if h.depth == 16 { 2 } else { 1 };
        // Deflate expands at most ~1032:1: refuse sizes the data cannot hold before
        // allocating for them (a damaged header must not ask for gigabytes).
        if pitch * h.height > self.idat.len() * 1032 + 4096 {
            return Err(bad(format!("truncated PNG: too little image data for {}x{} pixels", h.width, h.height)));
        }
        for r in &mut self.rows {
            r.resize(row_bytes, 0);
        }
        self.px.resize(h.width, 0);
        sink.begin(h.width, h.height);
        self.zeros.clear();
        self.zeros.resize(h.width, 0);
        let (mut done, mut prev, mut cur_buf) = (0usize, Prev::None, 0usize);
        let Decoder { inflater, idat, raw, rows, px, zeros } = self;
        // The sink needs at most the previous row (for unfiltering) and the current one.
        inflater.zlib(idat, pitch * h.height, raw, 2 * pitch, CHUNK, |win, base, runs| {
            let avail = base + win.len();
            let mut ri = runs.partition_point(|r| r.1 <= done * pitch);
            while done < h.height && (done + 1) * pitch <= avail {
                let at = done * pitch - base;
                let (filter, data) = (win[at], &win[at + 1..at + pitch]);
                // Rows inside a long run of zeros (filter byte included) are zero pixels
                // whatever the bit depth: no need to look at them.
                while ri < runs.len() && runs[ri].1 <= done * pitch {
                    ri += 1;
                }
                if ri < runs.len() && runs[ri].0 <= done * pitch && runs[ri].1 >= (done + 1) * pitch {
                    sink.zero_row(done, zeros);
                    prev = Prev::Raw(done * pitch + 1);
                    done += 1;
                    continue;
                }
                let here = if filter == 0 {
                    Prev::Raw(done * pitch + 1)
                } else {
                    let [r0, r1] = rows;
                    let (cur, other) = if cur_buf == 0 { (r0, r1) } else { (r1, r0) };
                    let prev_row: Option<&[u8]> = match prev {
                        Prev::None => None,
                        Prev::Raw(off) => Some(&win[off - base..off - base + row_bytes]),
                        Prev::Buf(_) => Some(&other[..]),
                    };
                    unfilter_row(filter, data, prev_row, bpp, cur)?;
                    Prev::Buf(cur_buf)
                };
                let unf: &[u8] = match here {
                    Prev::Raw(off) => &win[off - base..off - base + row_bytes],
                    _ => &rows[cur_buf][..],
                };
                if h.depth == 8 && filter == 0 {
                    // Zero runs over the row's ends bound where nonzero pixels can be.
                    let (rs, re) = (done * pitch + 1, (done + 1) * pitch);
                    let lo = match runs.get(ri) {
                        Some(&(a, b)) if a <= rs => b.min(re) - rs,
                        _ => 0,
                    };
                    let mut j = ri;
                    while j + 1 < runs.len() && runs[j + 1].0 < re {
                        j += 1;
                    }
                    let hi = match runs.get(j) {
                        Some(&(a, b)) if a < re && b >= re => a.max(rs) - rs,
                        _ => row_bytes,
                    };
                    sink.row_span(done, unf, lo, hi.max(lo));
                } else if h.depth == 8 {
                    sink.row(done, unf);
                } else {
                    expand(h.color, h.depth, unf, px)?;
                    sink.row(done, px);
                }
                if let Prev::Buf(b) = here {
                    cur_buf = 1 - b;
                }
                prev = here;
                done += 1;
            }
            // Still needed: the previous row when it is used in place, and the partial row.
            Ok(match prev {
                Prev::Raw(off) => off - 1,
                _ => done * pitch,
            })
        })?;
        Ok((h.width, h.height))
    }

    /// Read and decode a PNG file into `sink`; errors name the file.
    pub fn read_into(
        &mut self,
        path: &Path,
        file_buf: &mut Vec<u8>,
        sink: &mut impl RowSink,
    ) -> Result<(usize, usize)> {
        read_file(path, file_buf)?;
        self.decode_into(file_buf, sink).map_err(|e| e.context(format!("'{}'", path.display())))
    }
}

/// Unpack a row of 1/2/4/16-bit samples to one byte per pixel, as PIL's modes do:
/// palette indices as they are; grayscale 1-bit → 0/1 (mode "1"), 2-bit → ×85,
/// 4-bit → ×17; 16-bit values must fit in a byte.
fn expand(color: u8, depth: u8, src: &[u8], dst: &mut [u8]) -> Result<()> {
    if depth == 16 {
        for (d, s) in dst.iter_mut().zip(src.chunks_exact(2)) {
            if s[0] != 0 {
                return Err(bad("16-bit PNG with values above 255 is not supported"));
            }
            *d = s[1];
        }
        return Ok(());
    }
    let per = 8 / depth as usize;
    let mask = (1u8 << depth) - 1;
    let scale = match (color, depth) {
        (3, _) | (0, 1) => 1,
        (_, 2) => 85,
        _ => 17,
    };
    for (x, d) in dst.iter_mut().enumerate() {
        let b = src[x / per];
        let shift = 8 - depth as usize * (x % per + 1);
        *d = ((b >> shift) & mask) * scale;
    }
    Ok(())
}

/// Read a whole file into a reused buffer.
pub fn read_file(path: &Path, buf: &mut Vec<u8>) -> Result<()> {
    use std::io::Read;
    buf.clear();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_end(buf))
        .map(|_| ())
        .map_err(|e| Error::io(path, "cannot read", e))
}

/// Undo PNG filter `filter` of one row (`data`, previous unfiltered row `prev`) into `out`.
fn unfilter_row(filter: u8, data: &[u8], prev: Option<&[u8]>, bpp: usize, out: &mut [u8]) -> Result<()> {
    let n = data.len();
    match filter {
        0 => out.copy_from_slice(data),
        1 => {
            for i in 0..n {
                let a = if i >= bpp { out[i - bpp] } else { 0 };
                out[i] = data[i].wrapping_add(a);
            }
        }
        2 => match prev {
            Some(p) => (0..n).for_each(|i| out[i] = data[i].wrapping_add(p[i])),
            None => out.copy_from_slice(data),
        },
        3 => {
            for i in 0..n {
                let a = if i >= bpp { out[i - bpp] as u16 } else { 0 };
                let b = prev.map_or(0, |p| p[i] as u16);
                out[i] = data[i].wrapping_add(((a + b) / 2) as u8);
            }
        }
        4 => {
            for i in 0..n {
                let a = if i >= bpp { out[i - bpp] as i16 } else { 0 };
                let b = prev.map_or(0, |p| p[i] as i16);
                let c = if i >= bpp { prev.map_or(0, |p| p[i - bpp] as i16) } else { 0 };
                let est = a + b - c;
                let (pa, pb, pc) = ((est - a).abs(), (est - b).abs(), (est - c).abs());
                let pred = if pa <= pb && pa <= pc {
                    a
                } else if pb <= pc {
                    b
                } else {
                    c
                };
                out[i] = data[i].wrapping_add(pred as u8);
            }
        }
        _ => return Err(bad(format!("invalid PNG filter type {filter}"))),
    }
    Ok(())
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(body);
    let crc = crc32(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = !0u32;
    for &b in data {
        c ^= b as u32;
        for _ in 0..8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
        }
    }
    !c
}

/// The DAVIS / PASCAL VOC colour map, as SAM 2 and DAVIS write their masks with.
pub fn davis_palette() -> Vec<u8> {
    let mut p = Vec::with_capacity(768);
    for i in 0..256u32 {
        let (mut r, mut g, mut b, mut c) = (0u8, 0u8, 0u8, i);
        for j in 0..8 {
            r |= ((c & 1) as u8) << (7 - j);
            g |= (((c >> 1) & 1) as u8) << (7 - j);
            b |= (((c >> 2) & 1) as u8) << (7 - j);
            c >>= 3;
        }
        p.extend_from_slice(&[r, g, b]);
    }
    p
}

/// Encode an 8-bit palette image (`pixels` row-major, `width * height` indices).
pub fn encode_indexed(width: usize, height: usize, pixels: &[u8], palette: &[u8]) -> Result<Vec<u8>> {
    if pixels.len() != width * height
        || width == 0
        || height == 0
        || !palette.len().is_multiple_of(3)
        || palette.len() > 768
    {
        return Err(bad("encode_indexed: inconsistent image size or palette"));
    }
    let pitch = width + 1;
    let mut raw = vec![0u8; pitch * height];
    for y in 0..height {
        raw[y * pitch + 1..(y + 1) * pitch].copy_from_slice(&pixels[y * width..(y + 1) * width]);
    }
    let mut out = SIGNATURE.to_vec();
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&(width as u32).to_be_bytes());
    ihdr.extend_from_slice(&(height as u32).to_be_bytes());
    ihdr.extend_from_slice(&[8, 3, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"PLTE", palette);
    chunk(&mut out, b"IDAT", &zlib_rle(&raw, pitch));
    chunk(&mut out, b"IEND", &[]);
    Ok(out)
}

/// Write an 8-bit palette PNG with the DAVIS palette, atomically (temp file + rename).
pub fn write_indexed(path: &Path, width: usize, height: usize, pixels: &[u8]) -> Result<()> {
    let bytes = encode_indexed(width, height, pixels, &davis_palette())?;
    super::report::write_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_indexed() {
        let (w, h) = (37, 11);
        let px: Vec<u8> = (0..w * h).map(|i| if (i % w) > 10 && (i / w) % 3 != 0 { 2 } else { 0 }).collect();
        let bytes = encode_indexed(w, h, &px, &davis_palette()).unwrap();
        let r = Decoder::default().decode(&bytes).unwrap();
        assert_eq!((r.width, r.height), (w, h));
        assert_eq!(r.data, px);
        assert_eq!(dimensions(&bytes).unwrap(), (w, h));
        for cut in [0, 10, 40, bytes.len() - 13] {
            assert!(Decoder::default().decode(&bytes[..cut]).is_err());
        }
    }

    /// A PNG from raw samples (`rows` of packed bytes), each row filtered with
    /// `filters[y % len]` (forward filtering as an encoder does).
    fn encode_raw(w: usize, h: usize, depth: u8, color: u8, rows: &[Vec<u8>], filters: &[u8]) -> Vec<u8> {
        let bpp = if depth == 16 { 2 } else { 1 };
        let rb = rows[0].len();
        let mut raw = Vec::new();
        for y in 0..h {
            let f = filters[y % filters.len()];
            let (cur, prev) = (&rows[y], if y > 0 { Some(&rows[y - 1]) } else { None });
            raw.push(f);
            for i in 0..rb {
                let a = if i >= bpp { cur[i - bpp] as i16 } else { 0 };
                let b = prev.map_or(0, |p| p[i] as i16);
                let c = if i >= bpp { prev.map_or(0, |p| p[i - bpp] as i16) } else { 0 };
                let pred = match f {
                    0 => 0,
                    1 => a,
                    2 => b,
                    3 => (a + b) / 2,
                    _ => {
                        let e = a + b - c;
                        let (pa, pb, pc) = ((e - a).abs(), (e - b).abs(), (e - c).abs());
                        if pa <= pb && pa <= pc {
                            a
                        } else if pb <= pc {
                            b
                        } else {
                            c
                        }
                    }
                };
                raw.push(cur[i].wrapping_sub(pred as u8));
            }
        }
        let mut out = SIGNATURE.to_vec();
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&(w as u32).to_be_bytes());
        ihdr.extend_from_slice(&(h as u32).to_be_bytes());
        ihdr.extend_from_slice(&[depth, color, 0, 0, 0]);
        chunk(&mut out, b"IHDR", &ihdr);
        if color == 3 {
            chunk(&mut out, b"PLTE", &davis_palette());
        }
        // Two IDAT chunks, to check they are joined.
        let z = zlib_rle(&raw, rb + 1);
        chunk(&mut out, b"IDAT", &z[..z.len() / 2]);
        chunk(&mut out, b"IDAT", &z[z.len() / 2..]);
        chunk(&mut out, b"IEND", &[]);
        out
    }

    #[test]
    fn all_filters_and_depths() {
        let (w, h) = (29, 13);
        let value = |x: usize, y: usize, max: usize| ((x * 7 + y * 3 + (x * y) % 5) % (max + 1)) as u8;
        // 8-bit palette and grayscale, every filter type.
        for color in [0u8, 3] {
            let rows: Vec<Vec<u8>> = (0..h).map(|y| (0..w).map(|x| value(x, y, 255)).collect()).collect();
            let png = encode_raw(w, h, 8, color, &rows, &[0, 1, 2, 3, 4, 4, 3, 2, 1]);
            assert_eq!(Decoder::default().decode(&png).unwrap().data, rows.concat());
        }
        // 16-bit grayscale (values < 256), every filter type.
        let rows: Vec<Vec<u8>> = (0..h).map(|y| (0..w).flat_map(|x| [0, value(x, y, 255)]).collect()).collect();
        let png = encode_raw(w, h, 16, 0, &rows, &[4, 3, 2, 1, 0]);
        let want: Vec<u8> = (0..h).flat_map(|y| (0..w).map(move |x| value(x, y, 255))).collect();
        assert_eq!(Decoder::default().decode(&png).unwrap().data, want);
        let mut big = rows.clone();
        big[3][1] = 1;
        big[3][0] = 1;
        let err = Decoder::default().decode(&encode_raw(w, h, 16, 0, &big, &[0])).err().unwrap().to_string();
        assert!(err.contains("16-bit"), "{err}");
        // Packed depths: palette indices as they are, grayscale scaled as PIL does.
        for (depth, color, scale) in [(1u8, 3u8, 1u8), (2, 3, 1), (4, 3, 1), (1, 0, 1), (2, 0, 85), (4, 0, 17)] {
            let max = (1usize << depth) - 1;
            let per = 8 / depth as usize;
            let rows: Vec<Vec<u8>> = (0..h)
                .map(|y| {
                    let mut r = vec![0u8; (w * depth as usize).div_ceil(8)];
                    for x in 0..w {
                        r[x / per] |= value(x, y, max) << (8 - depth as usize * (x % per + 1));
                    }
                    r
                })
                .collect();
            let png = encode_raw(w, h, depth, color, &rows, &[0, 2, 1, 4, 3]);
            let want: Vec<u8> = (0..h).flat_map(|y| (0..w).map(move |x| value(x, y, max) * scale)).collect();
            assert_eq!(Decoder::default().decode(&png).unwrap().data, want, "depth {depth} color {color}");
        }
        // Colour types are refused with a clear message.
        for (color, what) in [(2u8, "RGB"), (4, "grayscale+alpha"), (6, "RGBA")] {
            let rows = vec![vec![0u8; w * 4]; h];
            let err = Decoder::default().decode(&encode_raw(w, h, 8, color, &rows, &[0])).err().unwrap().to_string();
            assert!(err.contains(what) && err.contains("single-channel"), "{err}");
        }
    }

    /// Corrupted files (CRCs are not checked, so the damage reaches the inflater and the
    /// unfiltering) give errors or garbage pixels, never a panic.
    #[test]
    fn corrupted_files_do_not_panic() {
        let (w, h) = (70, 9);
        let px: Vec<u8> = (0..w * h).map(|i| if (i % w) > 20 && (i % w) < 50 && i / w > 2 { 1 } else { 0 }).collect();
        let good = encode_indexed(w, h, &px, &davis_palette()).unwrap();
        let rows: Vec<Vec<u8>> = (0..h).map(|y| (0..w).map(|x| (x * y % 7) as u8).collect()).collect();
        let filtered = encode_raw(w, h, 8, 0, &rows, &[1, 2, 3, 4]);
        let mut seed = 0x1234_5678_9abc_def1u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut dec = Decoder::default();
        for base in [&good, &filtered] {
            for cut in 0..base.len() {
                let _ = dec.decode(&base[..cut]);
            }
            for _ in 0..3000 {
                let mut b = base.clone();
                for _ in 0..1 + rnd() % 4 {
                    let i = (rnd() as usize) % b.len();
                    b[i] ^= 1 << (rnd() % 8);
                }
                let _ = dec.decode(&b);
            }
        }
    }

    #[test]
    fn crc_known() {
        assert_eq!(crc32(b"IEND"), 0xae42_6082);
    }
}
