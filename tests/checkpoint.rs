//! PyTorch zip checkpoint reader: fixtures written by
//! tests/fixtures/checkpoint/gen_checkpoint_fixtures.py (values are arange-based, so the
//! expected numbers are recomputed here), plus bad inputs that must fail with the right
//! [`ErrorKind`] and a message naming the file, never a panic.

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use tamrt::checkpoint::{Checkpoint, StoredDtype};
use tamrt::weights::WeightSource;
use tamrt::{Error, ErrorKind};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/checkpoint").join(name)
}

fn open(name: &str) -> Checkpoint {
    Checkpoint::open(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn ar(n: usize) -> impl Iterator<Item = f32> {
    (0..n).map(|i| i as f32)
}

/// Check dtype, shape and values of one tensor.
fn check(ck: &Checkpoint, name: &str, dtype: StoredDtype, shape: &[usize], want: &[f32]) {
    let info = ck.info(name).unwrap_or_else(|| panic!("{name} not listed"));
    assert_eq!((info.dtype, info.shape.as_slice()), (dtype, shape), "{name}");
    let t = ck.read_f32(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert_eq!(t.shape, shape, "{name}");
    assert_eq!(t.data, want, "{name}");
}

/// The tensors of `basic.pt` (mirrors `basic_state_dict` in the generator).
fn check_basic(ck: &Checkpoint) {
    use StoredDtype::*;
    let names: Vec<&str> = ck.tensors().iter().map(|t| t.name.as_str()).collect();
    let mut want_names = vec![
        "a.bias",
        "a.weight",
        "dtype.bf16",
        "dtype.bool",
        "dtype.f16",
        "dtype.f64",
        "dtype.i32",
        "dtype.i64",
        "dtype.u8",
        "empty",
        "scalar",
        "shared.full",
        "shared.part",
        "view.expanded",
        "view.sliced",
        "view.transposed",
    ];
    want_names.sort();
    assert_eq!(names, want_names, "non-tensor values and other top-level keys are skipped");

    check(ck, "a.weight", F32, &[3, 4], &ar(12).collect::<Vec<_>>());
    check(ck, "a.bias", F32, &[4], &ar(4).map(|v| v * 0.5 - 1.0).collect::<Vec<_>>());
    let transposed: Vec<f32> = (0..3).flat_map(|i| (0..2).map(move |j| 100.0 + (j * 3 + i) as f32)).collect();
    check(ck, "view.transposed", F32, &[3, 2], &transposed);
    let sliced: Vec<f32> = (0..3).flat_map(|i| (0..5).map(move |j| 200.0 + ((i + 1) * 8 + j + 2) as f32)).collect();
    check(ck, "view.sliced", F32, &[3, 5], &sliced);
    let expanded: Vec<f32> = (0..3).flat_map(|i| [i as f32; 4]).collect();
    check(ck, "view.expanded", F32, &[3, 4], &expanded);
    check(ck, "shared.full", F32, &[10], &ar(10).map(|v| v * 0.5).collect::<Vec<_>>());
    check(ck, "shared.part", F32, &[4], &[1.5, 2.0, 2.5, 3.0]);
    check(ck, "dtype.f16", F16, &[2, 3], &ar(6).map(|v| v * 0.25).collect::<Vec<_>>());
    check(ck, "dtype.bf16", BF16, &[6], &ar(6).map(|v| (v - 3.0) * 0.5).collect::<Vec<_>>());
    check(ck, "dtype.f64", F64, &[5], &ar(5).map(|v| v / 4.0).collect::<Vec<_>>());
    check(ck, "dtype.i64", I64, &[5], &ar(5).map(|v| v - 2.0).collect::<Vec<_>>());
    check(ck, "dtype.i32", I32, &[4], &ar(4).map(|v| v * 3.0).collect::<Vec<_>>());
    check(ck, "dtype.u8", U8, &[4], &ar(4).map(|v| v + 250.0).collect::<Vec<_>>());
    check(ck, "dtype.bool", Bool, &[3], &[1.0, 0.0, 1.0]);
    check(ck, "scalar", F32, &[], &[3.5]);
    check(ck, "empty", F32, &[0, 3], &[]);
}

#[test]
fn torch_zip_layouts_and_dtypes() {
    check_basic(&open("basic.pt"));
}

#[test]
fn torch_zip_matches_safetensors_sidecar() {
    let pt = open("basic.pt");
    let st = open("basic.safetensors");
    assert_eq!(pt.tensors(), st.tensors());
    for t in st.tensors() {
        assert_eq!(pt.read_f32(&t.name).unwrap(), st.read_f32(&t.name).unwrap(), "{}", t.name);
    }
}

#[test]
fn deflated_entries_read_like_stored_ones() {
    check_basic(&open("deflated.pt"));
}

#[test]
fn in_memory_archive_reads_like_the_file() {
    let bytes = std::fs::read(fixture("basic.pt")).unwrap();
    let ck = Checkpoint::from_torch_zip_bytes(Path::new("mem.pt"), bytes).unwrap();
    assert_eq!(ck.path(), Path::new("mem.pt"));
    check_basic(&ck);
}

#[test]
fn ordered_dict_state_dict_with_parameter() {
    let ck = open("ordered_param.pt");
    let names: Vec<&str> = ck.tensors().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["0.bias", "0.weight", "1.bias", "1.weight", "param.p"]);
    check(&ck, "0.weight", StoredDtype::F32, &[2, 3], &ar(6).map(|v| v - 2.0).collect::<Vec<_>>());
    check(&ck, "0.bias", StoredDtype::F32, &[2], &[0.5, -0.5]);
    check(&ck, "1.weight", StoredDtype::F32, &[2], &[1.0, 1.0]);
    check(&ck, "1.bias", StoredDtype::F32, &[2], &[0.0, 0.0]);
    check(&ck, "param.p", StoredDtype::F32, &[4], &[0.0, 2.0, 4.0, 6.0]);
}

#[test]
fn bare_state_dict_pickle_protocol_4() {
    let ck = open("bare_proto4.pt");
    assert_eq!(ck.tensors().len(), 2);
    check(&ck, "x.weight", StoredDtype::F32, &[2, 3], &ar(6).collect::<Vec<_>>());
    check(&ck, "x.bias", StoredDtype::F32, &[2], &[1.0, 1.0]);
}

#[test]
fn many_views_of_one_storage_use_long_memo_indices() {
    let ck = open("many_views.pt");
    assert_eq!(ck.tensors().len(), 64);
    for i in 0..64 {
        check(&ck, &format!("v.{i}"), StoredDtype::F32, &[2], &[2.0 * i as f32, 2.0 * i as f32 + 1.0]);
    }
}

#[test]
fn weight_source_checks_names_and_shapes() {
    let ck = open("basic.pt");
    assert_eq!(ck.load("a.weight", &[3, 4]).unwrap().data, ar(12).collect::<Vec<_>>());
    assert_eq!(ck.load("a.weight", &[4, 3]).unwrap_err().kind(), ErrorKind::TensorShape);
    assert_eq!(ck.load("nope", &[1]).unwrap_err().kind(), ErrorKind::MissingTensor);
    assert_eq!(ck.read_f32("nope").unwrap_err().kind(), ErrorKind::MissingTensor);
    assert!(ck.contains("view.sliced") && !ck.contains("epoch") && !ck.contains("note"));
}

/// Open a bad fixture: it must fail with `kind`, naming the file and each of `needles`.
fn expect_err(name: &str, kind: ErrorKind, needles: &[&str]) -> Error {
    let err = match Checkpoint::open(&fixture(name)) {
        Ok(_) => panic!("{name} opened"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert_eq!(err.kind(), kind, "{name}: {msg}");
    assert!(msg.contains(name), "{name}: message does not name the file: {msg}");
    for n in needles {
        assert!(msg.contains(n), "{name}: message lacks '{n}': {msg}");
    }
    err
}

#[test]
fn truncated_zip_is_a_checkpoint_error() {
    expect_err("bad_truncated.pt", ErrorKind::Checkpoint, &["zip"]);
}

#[test]
fn text_file_is_a_checkpoint_error() {
    expect_err("bad_not_zip.pt", ErrorKind::Checkpoint, &[]);
}

#[test]
fn garbage_after_zip_magic_is_a_checkpoint_error() {
    expect_err("bad_pk_garbage.pt", ErrorKind::Checkpoint, &["zip"]);
}

#[test]
fn zip_without_data_pkl_is_a_checkpoint_error() {
    expect_err("bad_no_pkl.pt", ErrorKind::Checkpoint, &["data.pkl"]);
}

#[test]
fn truncated_pickle_is_a_checkpoint_error() {
    expect_err("bad_pickle_truncated.pt", ErrorKind::Checkpoint, &["data.pkl", "truncated"]);
}

#[test]
fn unsupported_opcode_is_named() {
    expect_err("bad_opcode.pt", ErrorKind::UnsupportedPickle, &["opcode 0x82 EXT1", "archive/data.pkl"]);
}

#[test]
fn disallowed_global_is_named() {
    expect_err("bad_class.pt", ErrorKind::UnsupportedPickle, &["os.system"]);
}

#[test]
fn disallowed_stack_global_is_named() {
    expect_err("bad_stack_global.pt", ErrorKind::UnsupportedPickle, &["builtins.eval"]);
}

#[test]
fn missing_storage_entry_names_tensor() {
    expect_err("bad_missing_storage.pt", ErrorKind::Checkpoint, &["'x.weight'", "data/0", "missing"]);
}

#[test]
fn storage_too_short_names_tensor() {
    expect_err("bad_short_storage.pt", ErrorKind::Checkpoint, &["'x.bias'", "data/1", "has only 4 bytes"]);
}

#[test]
fn view_beyond_storage_names_tensor() {
    expect_err("bad_view_overrun.pt", ErrorKind::Checkpoint, &["'w'", "bytes 8..24", "has only 8 bytes"]);
}

/// A stored-entry archive holding `pickle` as `archive/data.pkl` plus `extra` entries.
fn archive(pickle: &[u8], extra: &[(&str, &[u8])]) -> Vec<u8> {
    let mut z = zip::ZipWriter::new(Cursor::new(Vec::new()));
    let opts = zip::write::SimpleFileOptions::default().compression_method(zip::CompressionMethod::Stored);
    for (name, data) in [("archive/data.pkl", pickle)].iter().chain(extra) {
        z.start_file(*name, opts).unwrap();
        z.write_all(data).unwrap();
    }
    z.finish().unwrap().into_inner()
}

fn mem_err(bytes: Vec<u8>) -> Error {
    match Checkpoint::from_torch_zip_bytes(Path::new("crafted.pt"), bytes) {
        Ok(_) => panic!("crafted archive opened"),
        Err(e) => {
            assert!(e.to_string().contains("crafted.pt"), "{e}");
            e
        }
    }
}

#[test]
fn crafted_pickles_fail_cleanly() {
    use ErrorKind::{Checkpoint as Ck, UnsupportedPickle as Unsup};
    let storage = b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x02tQ";
    let cases: Vec<(Vec<u8>, ErrorKind, &str)> = vec![
        (b"\x80\x06}.".to_vec(), Unsup, "protocol 6"),
        (b"\x80\x02I1\n.".to_vec(), Unsup, "opcode 0x49 INT"),
        (b"\x80\x02\xff.".to_vec(), Unsup, "opcode 0xff"),
        (b"\x80\x02s.".to_vec(), Ck, "underflow"),
        (b"\x80\x02K\x01.".to_vec(), Ck, "not hold a dict"),
        (b"\x80\x02h\x07.".to_vec(), Ck, "memo"),
        (b"\x80\x02}".to_vec(), Ck, "STOP"),
        (b"\x80\x02X\x02\x00\x00\x00\xff\xfe.".to_vec(), Ck, "UTF-8"),
        (b"\x80\x02ctorch\nFloatStorage\n)R.".to_vec(), Unsup, "torch.FloatStorage"),
        (b"\x80\x02K\x00K\x01K\x02s.".to_vec(), Ck, "non-dict"),
        (
            [b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2\n(".as_slice(), storage, b"K\x00tRs."]
                .concat(),
            Ck,
            "2 arguments",
        ),
        ([b"\x80\x02".as_slice(), storage, b"."].concat(), Ck, "not hold a dict"),
    ];
    for (pkl, kind, needle) in cases {
        let e = mem_err(archive(&pkl, &[]));
        assert_eq!(e.kind(), kind, "{pkl:?}: {e}");
        assert!(e.to_string().contains(needle), "{pkl:?}: {e}");
    }
    let big_endian = archive(b"\x80\x02}.", &[("archive/byteorder", b"big")]);
    assert!(mem_err(big_endian).to_string().contains("big-endian"));
}

/// Every prefix and many single-byte corruptions of a real checkpoint either open (and
/// then read or fail cleanly) or fail with an error: never a panic.
#[test]
fn damaged_copies_never_panic() {
    let good = std::fs::read(fixture("bare_proto4.pt")).unwrap();
    let try_bytes = |bytes: Vec<u8>| {
        if let Ok(ck) = Checkpoint::from_torch_zip_bytes(Path::new("damaged.pt"), bytes) {
            for t in ck.tensors().to_vec() {
                let _ = ck.read_f32(&t.name);
            }
        }
    };
    for len in 0..good.len() {
        try_bytes(good[..len].to_vec());
    }
    for i in 0..good.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut b = good.clone();
            b[i] ^= flip;
            try_bytes(b);
        }
    }
}
