//! A small zlib compressor for mask PNGs (fixed Huffman codes, runs and previous-row
//! matches): enough to write synthetic masks for tests and benchmarks, and tracker output.

use super::inflate::{DIST_BASE, DIST_EXTRA, LEN_BASE, LEN_EXTRA};

/// Compress `data` as a zlib stream for PNG: one fixed-Huffman block of literals,
/// distance-1 runs and previous-row (`stride`) matches. Small and simple, not optimal;
/// used to write synthetic masks (tests, benchmarks, tracker output).
pub(crate) fn zlib_rle(data: &[u8], stride: usize) -> Vec<u8> {
    let mut w = BitWriter { out: vec![0x78, 0x01], buf: 0, n: 0 };
    w.put(1, 1); // final block
    w.put(1, 2); // fixed Huffman
    let mut i = 0;
    while i < data.len() {
        // Longest match among distance 1 and distance `stride`.
        let mut best = (0usize, 0usize);
        for dist in [1, stride] {
            if dist == 0 || dist > i {
                continue;
            }
            let max = (data.len() - i).min(258);
            let l = common_prefix(&data[i..i + max], &data[i - dist..i - dist + max]);
            if l > best.0 {
                best = (l, dist);
            }
        }
        if best.0 >= 3 {
            w.length(best.0);
            w.distance(best.1);
            i += best.0;
        } else {
            w.literal(data[i] as u16);
            i += 1;
        }
    }
    w.literal(256);
    w.flush();
    let a = adler32(data);
    w.out.extend_from_slice(&a.to_be_bytes());
    w.out
}

/// Length of the common prefix of two equally long slices (may overlap in the source).
fn common_prefix(a: &[u8], b: &[u8]) -> usize {
    let mut l = 0;
    for (ca, cb) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        let x =
            u64::from_le_bytes(ca.try_into().unwrap_or([0; 8])) ^ u64::from_le_bytes(cb.try_into().unwrap_or([0; 8]));
        if x != 0 {
            return l + (x.trailing_zeros() / 8) as usize;
        }
        l += 8;
    }
    l + a[l..].iter().zip(&b[l..]).take_while(|(x, y)| x == y).count()
}

pub(super) fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for chunk in data.chunks(5552) {
        for &x in chunk {
            a += x as u32;
            b += a;
        }
        a %= 65521;
        b %= 65521;
    }
    (b << 16) | a
}

struct BitWriter {
    out: Vec<u8>,
    buf: u64,
    n: u32,
}

impl BitWriter {
    fn put(&mut self, v: u32, k: u32) {
        self.buf |= (v as u64) << self.n;
        self.n += k;
        while self.n >= 8 {
            self.out.push(self.buf as u8);
            self.buf >>= 8;
            self.n -= 8;
        }
    }

    /// A Huffman code, sent MSB first.
    fn code(&mut self, code: u32, len: u32) {
        self.put(code.reverse_bits() >> (32 - len), len);
    }

    fn literal(&mut self, sym: u16) {
        match sym {
            0..=143 => self.code(0x30 + sym as u32, 8),
            144..=255 => self.code(0x190 + (sym as u32 - 144), 9),
            256..=279 => self.code(sym as u32 - 256, 7),
            _ => self.code(0xc0 + (sym as u32 - 280), 8),
        }
    }

    fn length(&mut self, len: usize) {
        let i = LEN_BASE.iter().rposition(|&b| b as usize <= len).unwrap_or(0);
        self.literal(257 + i as u16);
        self.put((len - LEN_BASE[i] as usize) as u32, LEN_EXTRA[i] as u32);
    }

    fn distance(&mut self, dist: usize) {
        let i = DIST_BASE.iter().rposition(|&b| b as usize <= dist).unwrap_or(0);
        self.code(i as u32, 5);
        self.put((dist - DIST_BASE[i] as usize) as u32, DIST_EXTRA[i] as u32);
    }

    fn flush(&mut self) {
        if self.n > 0 {
            self.out.push(self.buf as u8);
            self.buf = 0;
            self.n = 0;
        }
    }
}
