//! Fuzz the PyTorch checkpoint reader: open arbitrary bytes as a checkpoint and read every
//! tensor. It must return errors, never panic, hang or allocate without bound.
//!
//! Two modes, chosen by the first byte:
//! * `0x01`: the rest is `data.pkl`, wrapped in a fixed archive with storage entries
//!   `data/0` (64 bytes) and `data/1` (16 bytes), so mutations reach the pickle VM
//!   without having to keep a zip archive intact;
//! * anything else: the whole input is the archive (fixture `.pt` files start with `PK`).

#![no_main]

use std::io::{Cursor, Write};
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tamrt::checkpoint::Checkpoint;

/// Tensors with more elements are indexed but not read, to keep each run fast.
const MAX_READ_NUMEL: usize = 1 << 20;

fn wrap_pickle(pkl: &[u8]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    let storage0: Vec<u8> = (0u8..64).collect();
    let entries: [(&str, &[u8]); 4] = [
        ("archive/data.pkl", pkl),
        ("archive/byteorder", b"little"),
        ("archive/data/0", &storage0),
        ("archive/data/1", &[0x3c; 16]),
    ];
    for (name, data) in entries {
        z.start_file(name, opts).expect("in-memory zip");
        z.write_all(data).expect("in-memory zip");
    }
    z.finish().expect("in-memory zip").into_inner()
}

fn exercise(bytes: Vec<u8>) {
    let Ok(ck) = Checkpoint::from_torch_zip_bytes(Path::new("fuzz.pt"), bytes) else { return };
    for t in ck.tensors().to_vec() {
        let numel = t.shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d));
        if numel.is_some_and(|n| n <= MAX_READ_NUMEL) {
            if let Ok(v) = ck.read_f32(&t.name) {
                assert_eq!(v.data.len(), numel.unwrap_or(0), "{}", t.name);
                assert_eq!(v.shape, t.shape, "{}", t.name);
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((&1, pkl)) => exercise(wrap_pickle(pkl)),
        _ => exercise(data.to_vec()),
    }
});
