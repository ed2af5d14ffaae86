//! A zlib (RFC 1950/1951) inflater specialised for PNG mask data.
//!
//! Mask PNGs written by zlib/PIL are mostly long runs of one byte, which deflate encodes
//! as distance-1 (or short-distance) matches of up to 258 bytes. General-purpose inflaters
//! copy those overlapping matches byte by byte (≈0.5 ms for a 1080p mask); here they are a
//! `fill` or a doubling `copy_within`, which makes decoding a mask about as fast as writing it.
//!
//! The whole output size is known up front (PNG rows × stride), so the output is a plain
//! slice; the Adler-32 trailer is not verified (nor are PNG chunk CRCs), malformed streams are
//! reported as errors, never panics.

use crate::error::{Error, ErrorKind, Result};

const FAST_BITS: u32 = 10;
const FAST_SIZE: usize = 1 << FAST_BITS;
const MAX_BITS: usize = 15;

pub(super) const LEN_BASE: [u16; 29] =
    [3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131, 163, 195, 227, 258];
pub(super) const LEN_EXTRA: [u8; 29] =
    [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0];
pub(super) const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537, 2049, 3073, 4097, 6145,
    8193, 12289, 16385, 24577,
];
pub(super) const DIST_EXTRA: [u8; 30] =
    [0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13, 13];
const CLEN_ORDER: [usize; 19] = [16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15];

fn corrupt(msg: &str) -> Error {
    Error::new(ErrorKind::InvalidInput, format!("corrupt PNG image data: {msg}"))
}

/// A canonical Huffman code: a `FAST_BITS` lookup table for short codes plus the
/// count/symbol arrays for the (rare) longer ones.
struct Huffman {
    /// `symbol << 4 | length`, 0 where the code is longer than `FAST_BITS` (or unused).
    fast: [u16; FAST_SIZE],
    counts: [u16; MAX_BITS + 1],
    symbols: Vec<u16>,
}

impl Huffman {
    fn new() -> Self {
        Huffman { fast: [0; FAST_SIZE], counts: [0; MAX_BITS + 1], symbols: Vec::with_capacity(320) }
    }

    fn build(&mut self, lengths: &[u8]) -> Result<()> {
        self.counts = [0; MAX_BITS + 1];
        for &l in lengths {
            self.counts[l as usize] += 1;
        }
        self.counts[0] = 0;
        // Over-subscribed codes are invalid; incomplete ones are tolerated (an unused
        // code then fails in `decode_slow`).
        let mut left: i32 = 1;
        for len in 1..=MAX_BITS {
            left = (left << 1) - self.counts[len] as i32;
            if left < 0 {
                return Err(corrupt("over-subscribed Huffman code"));
            }
        }
        let mut offs = [0u16; MAX_BITS + 2];
        for len in 1..=MAX_BITS {
            offs[len + 1] = offs[len] + self.counts[len];
        }
        self.symbols.clear();
        self.symbols.resize(offs[MAX_BITS + 1] as usize, 0);
        let mut next_code = [0u32; MAX_BITS + 2];
        let mut code = 0u32;
        for (len, next) in next_code.iter_mut().enumerate().take(MAX_BITS + 1).skip(1) {
            code = (code + self.counts[len - 1] as u32) << 1;
            *next = code;
        }
        self.fast.iter_mut().for_each(|e| *e = 0);
        for (sym, &l) in lengths.iter().enumerate() {
            if l == 0 {
                continue;
            }
            let l = l as usize;
            self.symbols[offs[l] as usize] = sym as u16;
            offs[l] += 1;
            let c = next_code[l];
            next_code[l] += 1;
            if l as u32 <= FAST_BITS {
                let rev = (c.reverse_bits() >> (32 - l)) as usize;
                let entry = ((sym as u16) << 4) | l as u16;
                let mut i = rev;
                while i < FAST_SIZE {
                    self.fast[i] = entry;
                    i += 1 << l;
                }
            }
        }
        Ok(())
    }
}

/// LSB-first bit reader over a byte slice; reads past the end yield zeros and are
/// detected by [`Bits::overrun`]. `Copy`, so that hot loops work on a local copy that
/// lives in registers.
#[derive(Clone, Copy)]
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    buf: u64,
    n: u32,
}

impl<'a> Bits<'a> {
    #[inline(always)]
    fn refill(&mut self) {
        if self.pos + 8 <= self.data.len() {
            let mut w = [0u8; 8];
            w.copy_from_slice(&self.data[self.pos..self.pos + 8]);
            self.buf |= u64::from_le_bytes(w) << self.n;
            self.pos += ((63 - self.n) >> 3) as usize;
            self.n |= 56;
        } else {
            while self.n <= 56 {
                let b = self.data.get(self.pos).copied().unwrap_or(0);
                self.buf |= (b as u64) << self.n;
                self.pos += 1;
                self.n += 8;
            }
        }
    }

    #[inline(always)]
    fn take(&mut self, k: u32) -> u32 {
        // Callers ask for at most 16 bits after a refill (n ≥ 57).
        let v = (self.buf & ((1u64 << k) - 1)) as u32;
        self.buf >>= k;
        self.n -= k;
        v
    }

    fn bits(&mut self, k: u32) -> u32 {
        if self.n < k {
            self.refill();
        }
        self.take(k)
    }

    /// True when more bits were consumed than the input holds.
    fn overrun(&self) -> bool {
        (self.pos as u64) * 8 - self.n as u64 > self.data.len() as u64 * 8
    }

    /// Byte offset of the next unread whole byte, after dropping the partial byte.
    fn align_to_byte(&mut self) -> usize {
        let drop = self.n % 8;
        self.take(drop);
        let p = self.pos - (self.n / 8) as usize;
        self.buf = 0;
        self.n = 0;
        self.pos = p;
        p
    }

    #[inline(always)]
    fn decode(&mut self, h: &Huffman) -> Result<usize> {
        if self.n < MAX_BITS as u32 {
            self.refill();
        }
        let e = h.fast[(self.buf as usize) & (FAST_SIZE - 1)];
        let (sym, len) = if e != 0 { ((e >> 4) as usize, (e & 15) as u32) } else { decode_slow(self.buf, h)? };
        self.take(len);
        Ok(sym)
    }
}

/// Canonical decoding bit by bit (codes longer than `FAST_BITS`): (symbol, length).
#[cold]
fn decode_slow(buf: u64, h: &Huffman) -> Result<(usize, u32)> {
    let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
    for len in 1..=MAX_BITS {
        code |= ((buf >> (len - 1)) & 1) as i32;
        let count = h.counts[len] as i32;
        if code - first < count {
            return Ok((h.symbols[(index + code - first) as usize] as usize, len as u32));
        }
        index += count;
        first = (first + count) << 1;
        code <<= 1;
    }
    Err(corrupt("invalid Huffman code"))
}

/// Reusable inflater state (Huffman tables); one per worker thread.
pub(crate) struct Inflater {
    lit: Huffman,
    dist: Huffman,
    clen: Huffman,
    lengths: Vec<u8>,
    /// Stream intervals `[start, end)` known to be zero because a run of zeros (distance-1
    /// copy of a 0 byte, at least `ZERO_RUN_MIN` long) wrote them, in order, merged.
    zero_runs: Vec<(usize, usize)>,
}

const ZERO_RUN_MIN: usize = 64;

impl Default for Inflater {
    fn default() -> Self {
        Inflater {
            lit: Huffman::new(),
            dist: Huffman::new(),
            clen: Huffman::new(),
            lengths: vec![0; 320],
            zero_runs: Vec::new(),
        }
    }
}

impl Inflater {
    /// Inflate the zlib stream `src`, which must hold exactly `total` bytes, through the
    /// sliding window `buf`, so that the output stays in cache whatever the image size.
    ///
    /// Every `chunk` bytes or so (and at the end) `progress(window, base, zero_runs)` is
    /// called: `window` holds the stream bytes `base..base + window.len()`, all bytes
    /// produced so far from `base` on; `zero_runs` lists stream intervals known to be all
    /// zero (long zero runs), in order, from at least the start of the window. It returns the stream offset from which it still needs the
    /// bytes (at most `keep` bytes before the end); the 32 KiB deflate history is kept in
    /// any case. `progress` must not change the window (later matches copy from it).
    pub(crate) fn zlib(
        &mut self,
        src: &[u8],
        total: usize,
        buf: &mut Vec<u8>,
        keep: usize,
        chunk: usize,
        mut progress: impl FnMut(&[u8], usize, &[(usize, usize)]) -> Result<usize>,
    ) -> Result<()> {
        if src.len() < 2 {
            return Err(corrupt("zlib stream too short"));
        }
        let (cmf, flg) = (src[0], src[1]);
        if cmf & 15 != 8 || cmf >> 4 > 7 || !(((cmf as u16) << 8) | flg as u16).is_multiple_of(31) {
            return Err(corrupt("bad zlib header"));
        }
        if flg & 0x20 != 0 {
            return Err(corrupt("zlib preset dictionary"));
        }
        const HISTORY: usize = 32 << 10;
        // Room for the kept bytes, a chunk and a match overshooting it, with slack so that
        // slides (memmoves of the kept bytes) are rare.
        let cap = (HISTORY.max(keep) + 24 * chunk + 512).min(total);
        buf.resize(cap, 0);
        let src = &src[2..];
        self.zero_runs.clear();
        let mut bits = Bits { data: src, pos: 0, buf: 0, n: 0 };
        // `base`: stream offset of buf[0]; `pos`: bytes of buf in use.
        let (mut base, mut pos, mut reported) = (0usize, 0usize, 0usize);
        let (mut in_block, mut last) = (false, false);
        let mut stored: Option<(usize, usize)> = None; // (input offset, bytes left)
        loop {
            // Report, and slide the window when the room left is short of a chunk + match.
            if base + pos >= reported + chunk || (base + pos == total && reported < total) {
                let need = progress(&buf[..pos], base, &self.zero_runs)?;
                reported = base + pos;
                // Room for the next chunk and a match overshooting it, or for the rest.
                let room = (chunk + 512).min(total - (base + pos));
                if cap - pos < room {
                    let from = need.min((base + pos).saturating_sub(HISTORY)).max(base);
                    if base + pos - from + room > cap {
                        return Err(corrupt("window too small (internal error)"));
                    }
                    buf.copy_within(from - base..pos, 0);
                    pos -= from - base;
                    base = from;
                    let stale = self.zero_runs.iter().take_while(|r| r.1 <= base).count();
                    self.zero_runs.drain(..stale);
                }
            }
            // Writes stop at the end of the image: anything more is an error.
            let end = cap.min(total - base);
            // Produce at most up to the next report point (so at most a chunk + a match).
            let limit = reported + chunk - base;
            if let Some((at, left)) = stored {
                let n = left.min(limit - pos).min(end - pos);
                if n == 0 {
                    return Err(corrupt("more image data than expected"));
                }
                buf[pos..pos + n].copy_from_slice(&src[at..at + n]);
                pos += n;
                bits.pos = at + n;
                stored = if left > n { Some((at + n, left - n)) } else { None };
                continue;
            }
            if !in_block {
                if last {
                    break;
                }
                last = bits.bits(1) == 1;
                match bits.bits(2) {
                    0 => {
                        let p = bits.align_to_byte();
                        let hdr = src.get(p..p + 4).ok_or_else(|| corrupt("truncated stored block"))?;
                        let len = u16::from_le_bytes([hdr[0], hdr[1]]) as usize;
                        if len != !u16::from_le_bytes([hdr[2], hdr[3]]) as usize {
                            return Err(corrupt("stored block length check"));
                        }
                        if src.len() < p + 4 + len {
                            return Err(corrupt("truncated stored block"));
                        }
                        bits.pos = p + 4;
                        stored = (len > 0).then_some((p + 4, len));
                    }
                    1 => {
                        self.fixed_tables()?;
                        in_block = true;
                    }
                    2 => {
                        self.dynamic_tables(&mut bits)?;
                        in_block = true;
                    }
                    _ => return Err(corrupt("invalid block type")),
                }
            }
            if in_block {
                let (p, ended) = self.block(&mut bits, &mut buf[..end], base, pos, limit)?;
                pos = p;
                in_block = !ended;
            }
            if bits.overrun() {
                return Err(corrupt("truncated deflate stream"));
            }
        }
        if base + pos != total {
            return Err(corrupt(&format!("image data ends after {} of {total} bytes", base + pos)));
        }
        if reported != total {
            progress(&buf[..pos], base, &self.zero_runs)?;
        }
        Ok(())
    }

    fn fixed_tables(&mut self) -> Result<()> {
        self.lengths[..288].iter_mut().enumerate().for_each(|(i, l)| {
            *l = match i {
                0..=143 => 8,
                144..=255 => 9,
                256..=279 => 7,
                _ => 8,
            }
        });
        self.lit.build(&self.lengths[..288])?;
        self.lengths[..30].iter_mut().for_each(|l| *l = 5);
        self.dist.build(&self.lengths[..30])
    }

    fn dynamic_tables(&mut self, bits: &mut Bits) -> Result<()> {
        let nlen = bits.bits(5) as usize + 257;
        let ndist = bits.bits(5) as usize + 1;
        let ncode = bits.bits(4) as usize + 4;
        if nlen > 286 || ndist > 30 {
            return Err(corrupt("bad code counts"));
        }
        let mut cl = [0u8; 19];
        for &i in &CLEN_ORDER[..ncode] {
            cl[i] = bits.bits(3) as u8;
        }
        self.clen.build(&cl)?;
        let total = nlen + ndist;
        let mut i = 0;
        while i < total {
            let sym = bits.decode(&self.clen)?;
            let (val, rep) = match sym {
                0..=15 => (sym as u8, 1),
                16 => {
                    if i == 0 {
                        return Err(corrupt("repeat with no previous length"));
                    }
                    (self.lengths[i - 1], 3 + bits.bits(2) as usize)
                }
                17 => (0, 3 + bits.bits(3) as usize),
                _ => (0, 11 + bits.bits(7) as usize),
            };
            if i + rep > total {
                return Err(corrupt("too many code lengths"));
            }
            self.lengths[i..i + rep].iter_mut().for_each(|l| *l = val);
            i += rep;
        }
        if self.lengths[256] == 0 {
            return Err(corrupt("no end-of-block code"));
        }
        let (lit, dist) = self.lengths[..total].split_at(nlen);
        self.lit.build(lit)?;
        self.dist.build(dist)
    }

    /// Decode symbols until the end of the block (`true`) or until `pos >= limit`.
    fn block(
        &mut self,
        state: &mut Bits,
        out: &mut [u8],
        base: usize,
        pos: usize,
        limit: usize,
    ) -> Result<(usize, bool)> {
        // Work on a local copy of the bit reader so that it stays in registers.
        let mut local = *state;
        let mut p = pos;
        let mut runs = std::mem::take(&mut self.zero_runs);
        let res = self.symbols(&mut local, out, &mut p, limit, &mut |a, b| {
            let (a, b) = (a + base, b + base);
            match runs.last_mut() {
                Some(last) if last.1 == a => last.1 = b,
                _ => runs.push((a, b)),
            }
        });
        self.zero_runs = runs;
        *state = local;
        res.map(|ended| (p, ended))
    }

    /// The symbol loop. Mask data is mostly the same match over and over (258 bytes at
    /// distance 1, or a row's worth at distance `stride`), so two shortcuts: a match whose
    /// bits repeat the previous match's bits is recognised by one compare (the code is
    /// prefix-free, so the same bits decode the same way), and consecutive matches at the
    /// same distance are merged into one copy, written when something else comes.
    #[inline(always)]
    fn symbols(
        &self,
        bits: &mut Bits,
        out: &mut [u8],
        pos_out: &mut usize,
        limit: usize,
        zero_run: &mut impl FnMut(usize, usize),
    ) -> Result<bool> {
        let mut flush = |out: &mut [u8], start: usize, dist: usize, end: usize| {
            copy_match(out, start, dist, end - start);
            if dist == 1 && end - start >= ZERO_RUN_MIN && out[start] == 0 {
                zero_run(start, end);
            }
        };
        let mut pos = *pos_out;
        // Pending copy: out[pend..pos] = repeat of the bytes `pend_dist` back, not yet written.
        let (mut pend, mut pend_dist) = (pos, 0usize);
        // The last match: its bits, their count (0: none), its length and distance; and the
        // same bits repeated `rep` times (as many as fit in 48 bits).
        let (mut pat, mut pat_bits, mut pat_len, mut pat_dist) = (0u64, 0u32, 0usize, 0usize);
        let (mut multi, mut multi_bits, mut rep) = (0u64, 0u32, 0usize);
        let mut ended = false;
        while pos < limit {
            if bits.n < 48 {
                bits.refill();
            }
            // (Repeats only while they end within a match's reach of `limit` and the output.)
            let (len, dist) = if rep > 1
                && pos + pat_len * rep <= out.len().min(limit + 258)
                && bits.buf & ((1u64 << multi_bits) - 1) == multi
            {
                bits.take(multi_bits);
                (pat_len * rep, pat_dist)
            } else if pat_bits != 0 && bits.buf & ((1u64 << pat_bits) - 1) == pat {
                bits.take(pat_bits);
                if rep == 0 {
                    // A repeat: worth preparing the multi-repeat compare.
                    rep = (48 / pat_bits) as usize;
                    multi_bits = rep as u32 * pat_bits;
                    multi = (0..rep).fold(0u64, |m, i| m | pat << (i as u32 * pat_bits));
                }
                (pat_len, pat_dist)
            } else {
                let (snap, snap_n) = (bits.buf, bits.n);
                let sym = bits.decode(&self.lit)?;
                if sym < 256 {
                    if pend < pos {
                        flush(out, pend, pend_dist, pos);
                    }
                    *out.get_mut(pos).ok_or_else(|| corrupt("more image data than expected"))? = sym as u8;
                    pos += 1;
                    pend = pos;
                    continue;
                }
                if sym == 256 {
                    ended = true;
                    break;
                }
                let li = sym - 257;
                if li >= 29 {
                    return Err(corrupt("invalid length symbol"));
                }
                // 48+ bits were loaded: 15 + 5 + 15 + 13 of them are enough for a match
                // (decode refills on its own otherwise, which leaves `snap` valid).
                let len = LEN_BASE[li] as usize + bits.take(LEN_EXTRA[li] as u32) as usize;
                let di = bits.decode(&self.dist)?;
                if di >= 30 {
                    return Err(corrupt("invalid distance symbol"));
                }
                let dist = DIST_BASE[di] as usize + bits.take(DIST_EXTRA[di] as u32) as usize;
                if dist > pos {
                    return Err(corrupt("distance too far back"));
                }
                pat_bits = snap_n - bits.n;
                pat = snap & ((1u64 << pat_bits) - 1);
                (pat_len, pat_dist) = (len, dist);
                rep = 0;
                (len, dist)
            };
            if pos + len > out.len() {
                return Err(corrupt("more image data than expected"));
            }
            if pend < pos && pend_dist != dist {
                flush(out, pend, pend_dist, pos);
                pend = pos;
            }
            pend_dist = dist;
            pos += len;
            // Reads past the input yield zero bits; the caller checks `overrun` after each
            // call, and every iteration writes output, which is bounded.
        }
        if pend < pos {
            flush(out, pend, pend_dist, pos);
        }
        *pos_out = pos;
        Ok(ended)
    }
}

/// `out[pos..pos+len] = repeat(out[pos-dist..pos])`, for `dist <= pos`, `pos+len <= out.len()`.
#[inline(always)]
fn copy_match(out: &mut [u8], pos: usize, dist: usize, len: usize) {
    if dist == 1 {
        let b = out[pos - 1];
        out[pos..pos + len].fill(b);
    } else if dist >= len {
        out.copy_within(pos - dist..pos - dist + len, pos);
    } else {
        // Overlapping: the pattern of period `dist` doubles with each copy.
        let start = pos - dist;
        let mut done = 0;
        while done < len {
            let n = (len - done).min(pos + done - start);
            out.copy_within(start..start + n, pos + done);
            done += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::deflate::{adler32, zlib_rle};
    use super::*;

    #[test]
    fn roundtrip_rle() {
        // Large enough for the window to slide (32 KiB history + a few 300-byte chunks).
        let mut data = vec![0u8; 200_000];
        for (i, d) in data.iter_mut().enumerate() {
            *d = if (i / 37) % 3 == 0 && (i / 1000) % 5 != 1 { (i % 7) as u8 } else { 0 };
        }
        let z = zlib_rle(&data, 1000);
        let (mut got, mut buf) = (Vec::new(), Vec::new());
        let (mut calls, mut zero_bytes) = (0, 0);
        Inflater::default()
            .zlib(&z, data.len(), &mut buf, 0, 300, |w, base, runs| {
                calls += 1;
                for &(a, b) in runs.iter().filter(|r| r.0 >= base) {
                    assert!(data[a..b].iter().all(|&x| x == 0));
                    zero_bytes += b - a;
                }
                // Append what is new since the last call.
                let have = got.len();
                got.extend_from_slice(&w[have - base..]);
                Ok(got.len())
            })
            .unwrap();
        assert_eq!(got, data);
        assert!(calls >= 4);
        assert!(zero_bytes > 0);
        // Truncations and garbage are errors, not panics.
        for cut in [0, 1, 2, 5, z.len() / 2] {
            assert!(Inflater::default().zlib(&z[..cut], data.len(), &mut buf, 0, 1 << 20, |_, b, _| Ok(b)).is_err());
        }
        assert!(Inflater::default().zlib(&z, data.len() - 1, &mut buf, 0, 64, |_, b, _| Ok(b)).is_err());
        assert!(Inflater::default().zlib(&z, data.len() + 1, &mut buf, 0, 64, |_, b, _| Ok(b)).is_err());
        let mut bad = z.clone();
        for b in bad.iter_mut().skip(2) {
            *b ^= 0x5a;
        }
        let _ = Inflater::default().zlib(&bad, data.len(), &mut buf, 0, 64, |_, b, _| Ok(b));
    }

    #[test]
    fn stored_blocks() {
        let data: Vec<u8> = (0..70_000u32).map(|i| (i * 31 % 251) as u8).collect();
        let mut z = vec![0x78, 0x01];
        let parts = [&data[..65_535], &data[65_535..]];
        for (k, part) in parts.iter().enumerate() {
            z.push(if k == 1 { 1 } else { 0 }); // BFINAL, BTYPE = 00, padded to a byte
            z.extend_from_slice(&(part.len() as u16).to_le_bytes());
            z.extend_from_slice(&(!(part.len() as u16)).to_le_bytes());
            z.extend_from_slice(part);
        }
        z.extend_from_slice(&adler32(&data).to_be_bytes());
        let (mut got, mut buf) = (Vec::new(), Vec::new());
        Inflater::default()
            .zlib(&z, data.len(), &mut buf, 0, 4096, |w, base, _| {
                let have = got.len();
                got.extend_from_slice(&w[have - base..]);
                Ok(got.len())
            })
            .unwrap();
        assert_eq!(got, data);
    }

    #[test]
    fn copy_match_periods() {
        for dist in 1..9 {
            let mut v: Vec<u8> = (0..dist as u8).collect();
            v.resize(dist + 50, 0);
            copy_match(&mut v, dist, dist, 50);
            for (i, &b) in v.iter().enumerate() {
                assert_eq!(b, (i % dist) as u8);
            }
        }
    }
}
